"""stdin and stdout as asyncio streams, whatever they are: pipes, sockets, TTYs or files.

Contract
--------
:func:`open_stdio` returns a :class:`Stdio`: an :class:`asyncio.StreamReader` on stdin
and an :class:`asyncio.StreamWriter` on stdout, with backpressure both ways, for
``resip-proxy connect`` (an ssh ProxyCommand, a shell pipeline, a redirect). Each end
is chosen by what the file descriptor is (``os.fstat``):

- a stream socket (inetd style, ``socat EXEC:``, a socketpair): a socket transport on
  a duplicate of the descriptor; ``write_eof`` is ``shutdown(SHUT_WR)``. When stdin
  and stdout are the same socket one transport serves both. (asyncio's write pipe
  transport takes any readable event on a socket for the peer hanging up, so on a
  two-way socket the first byte in would close stdout.)
- a FIFO, a TTY or another character device that epoll accepts: asyncio's pipe
  transports. stdout's is given the process's only descriptor on it (fd 1 becomes
  /dev/null), so that the end of the stream (``write_eof``, ``close``) reaches the
  reader as EOF while stdin may still be open: ssh learns that the remote closed.
- a regular file, ``/dev/null`` or anything else epoll refuses (it has no readiness
  to wait for): stdin is read by a daemon thread, one chunk in hand at a time and
  paused while the stream reader is full; stdout is written synchronously, because
  such files never make a writer wait for a reader (the page cache takes the bytes).
- a closed descriptor: stdin reads as empty; writes to stdout fail.

:meth:`Stdio.close` puts back the file status flags asyncio changed (``O_NONBLOCK``),
which live on the open file description and so are shared with every other process
holding it: a shell would otherwise find its terminal non-blocking after ``connect``
exits. It is safe to call more than once and after the streams were closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import io
import logging
import os
import selectors
import socket
import stat
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Stdio", "open_stdio"]

log = logging.getLogger(__name__)

#: Largest single read from stdin, and the stream reader's buffer limit.
CHUNK = 64 * 1024

Kind = Literal["socket", "pipe", "file", "closed"]


def _kind(fd: int) -> Kind:
    """How to drive ``fd``: see the module docstring."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return "closed"
    if stat.S_ISSOCK(mode) and _stream_socket(fd):
        return "socket"
    if stat.S_ISSOCK(mode):
        return "pipe"  # a datagram socket: the pipe transports read and write it as is
    if (stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)) and _pollable(fd):
        return "pipe"
    return "file"


def _pollable(fd: int) -> bool:
    """Whether the event loop's selector accepts ``fd`` (epoll refuses /dev/null)."""
    with selectors.DefaultSelector() as selector:
        try:
            selector.register(fd, selectors.EVENT_READ)
        except (OSError, ValueError):
            return False
    return True


def _stream_socket(fd: int) -> bool:
    with socket.socket(fileno=os.dup(fd)) as sock:
        return sock.type == socket.SOCK_STREAM


def _same_file(a: int, b: int) -> bool:
    try:
        sa, sb = os.fstat(a), os.fstat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


class _Flags:
    """The status flags of fds 0 and 1 as found, put back before a descriptor is closed."""

    def __init__(self, fds: tuple[int, ...]) -> None:
        self._saved: dict[int, tuple[int, int, int]] = {}
        for fd in fds:
            with contextlib.suppress(OSError):
                st = os.fstat(fd)
                self._saved[fd] = (fcntl.fcntl(fd, fcntl.F_GETFL), st.st_dev, st.st_ino)

    def restore(self, fd: int) -> None:
        """Put back ``fd``'s flags if it still refers to the file it did at the start.

        Not while the other descriptor is the same file and still in use: a terminal
        on both is usually one open file description, and making it blocking under the
        stdin transport would block the event loop in ``read``.
        """
        saved = self._saved.pop(fd, None)
        if saved is None:
            return
        flags, dev, ino = saved
        if any(other[1:] == (dev, ino) for other in self._saved.values()):
            return
        with contextlib.suppress(OSError):
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) == (dev, ino):
                fcntl.fcntl(fd, fcntl.F_SETFL, flags)

    def moved(self, old: int, new: int) -> None:
        """``old`` was duplicated to ``new``, which is what is used (and restored) now."""
        if old in self._saved:
            self._saved[new] = self._saved.pop(old)

    def restore_all(self) -> None:
        """Restore every descriptor not restored yet."""
        for fd in list(self._saved):
            self.restore(fd)


class _StdinProtocol(asyncio.StreamReaderProtocol):
    """A stream reader protocol that restores stdin's flags before the transport closes it."""

    def __init__(self, reader: asyncio.StreamReader, on_lost: Callable[[], None]) -> None:
        super().__init__(reader)
        self._on_lost = on_lost

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_lost()
        super().connection_lost(exc)


class _StdoutProtocol(asyncio.streams.FlowControlMixin):
    """Flow control for stdout, plus the close waiter ``StreamWriter.wait_closed`` needs."""

    def __init__(self, on_lost: Callable[[], None] = lambda: None) -> None:
        super().__init__()
        self._on_lost = on_lost
        self._closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        # Before the pipe transport closes the descriptor: afterwards it cannot be reached.
        self._on_lost()
        super().connection_lost(exc)
        if not self._closed.done():
            self._closed.set_result(None)

    def _get_close_waiter(self, stream: object) -> asyncio.Future[None]:
        return self._closed


class _ThreadReadTransport(asyncio.ReadTransport):
    """Blocking reads of ``fd`` in a daemon thread, fed to a stream reader on the loop.

    The thread holds at most one chunk: it reads the next only after the loop has fed
    the last one and the reader is not paused, so memory stays bounded by the reader's
    limit plus one chunk however large the file. A daemon thread, because a read that
    blocks (an odd device) must not keep the process alive after ``connect`` is done.
    """

    def __init__(self, fd: int, reader: asyncio.StreamReader) -> None:
        super().__init__()
        self._fd = fd
        self._reader = reader
        self._loop = asyncio.get_running_loop()
        self._want = threading.Event()
        self._want.set()
        self._paused = False
        self._closing = False
        reader.set_transport(self)
        threading.Thread(target=self._run, name=f"resip-stdin-{fd}", daemon=True).start()

    def _run(self) -> None:
        while True:
            self._want.wait()
            self._want.clear()
            if self._closing:
                return
            try:
                chunk = os.read(self._fd, CHUNK)
            except OSError as exc:
                self._post(self._reader.set_exception, exc)
                return
            if not chunk:
                self._post(self._reader.feed_eof)
                return
            self._post(self._deliver, chunk)

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening
            self._loop.call_soon_threadsafe(callback, *args)

    def _deliver(self, chunk: bytes) -> None:
        if self._closing:
            return
        self._reader.feed_data(chunk)  # may call pause_reading()
        if not self._paused:
            self._want.set()

    def pause_reading(self) -> None:
        """Stop reading until :meth:`resume_reading` (the stream reader is full)."""
        self._paused = True

    def resume_reading(self) -> None:
        """Read again."""
        self._paused = False
        self._want.set()

    def is_reading(self) -> bool:
        """Whether the thread may read more."""
        return not self._paused and not self._closing

    def is_closing(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closing

    def close(self) -> None:
        """Stop the thread after its current read; the descriptor stays open."""
        self._closing = True
        self._want.set()


class _FdWriteTransport(asyncio.WriteTransport):
    """Synchronous writes to a descriptor that never waits for a reader (a file, /dev/null).

    ``write`` returns once every byte is written, so nothing is buffered and flow
    control never pauses; a write error (disk full, EBADF) is raised to the caller.
    """

    def __init__(self, fd: int, protocol: _StdoutProtocol) -> None:
        super().__init__()
        self._fd = fd
        self._protocol = protocol
        self._closing = False
        self._loop = asyncio.get_running_loop()
        protocol.connection_made(self)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Write all of ``data`` now."""
        if self._closing:
            raise BrokenPipeError("stdout is closed")
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def can_write_eof(self) -> bool:
        """False: a file has no end-of-stream to signal besides closing."""
        return False

    def get_write_buffer_size(self) -> int:
        """Always 0: nothing is buffered."""
        return 0

    def is_closing(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closing

    def close(self) -> None:
        """Stop writing; the descriptor stays open until the process exits."""
        if not self._closing:
            self._closing = True
            self._loop.call_soon(self._protocol.connection_lost, None)

    def abort(self) -> None:
        """The same as :meth:`close`: there is nothing buffered to drop."""
        self.close()


@dataclass
class Stdio:
    """The streams on stdin and stdout; :meth:`close` when done (see the module docstring)."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    _flags: _Flags
    _extra: list[asyncio.BaseTransport] = field(default_factory=list)

    def close(self) -> None:
        """Close the transports (stdout after its buffer) and restore the flags; idempotent."""
        # Only open ones: a pipe transport that closed itself (the reader went away)
        # fails on a second close.
        for transport in [self.writer.transport, *self._extra]:
            if not transport.is_closing():
                transport.close()
        self._extra.clear()
        self._flags.restore_all()

    def abort(self) -> None:
        """:meth:`close`, dropping output not written yet: nobody is going to read it."""
        transport = self.writer.transport
        if not transport.is_closing():
            transport.abort()
        self.close()


async def open_stdio() -> Stdio:
    """Streams on fds 0 and 1 (``sys.stdin``, ``sys.stdout``), whatever they are."""
    flags = _Flags((0, 1))
    try:
        return await _open(flags)
    except BaseException:
        flags.restore_all()
        raise


async def _open(flags: _Flags) -> Stdio:
    loop = asyncio.get_running_loop()
    in_kind, out_kind = _kind(0), _kind(1)
    extra: list[asyncio.BaseTransport] = []
    if in_kind == "socket" and out_kind == "socket" and _same_file(0, 1):
        reader, writer = await _socket_streams(0)
        return Stdio(reader, writer, flags, [writer.transport])
    reader = asyncio.StreamReader(limit=CHUNK)
    if in_kind == "socket":
        sock_reader, sock_writer = await _socket_streams(0)
        reader = sock_reader
        extra.append(sock_writer.transport)
    elif in_kind == "pipe":
        transport, _ = await loop.connect_read_pipe(
            lambda: _StdinProtocol(reader, lambda: flags.restore(0)), sys.stdin
        )
        extra.append(transport)
    elif in_kind == "file":
        extra.append(_ThreadReadTransport(0, reader))
    else:
        reader.feed_eof()
    writer = await _open_writer(out_kind, flags)
    return Stdio(reader, writer, flags, extra)


async def _open_writer(kind: Kind, flags: _Flags) -> asyncio.StreamWriter:
    loop = asyncio.get_running_loop()
    if kind == "socket":
        _, writer = await _socket_streams(1)
        return writer
    if kind == "pipe":
        pipe = _take_stdout()
        fd = pipe.fileno()
        flags.moved(1, fd)
        transport, protocol = await loop.connect_write_pipe(
            lambda: _StdoutProtocol(lambda: flags.restore(fd)), pipe
        )
        return asyncio.StreamWriter(transport, protocol, None, loop)
    file_protocol = _StdoutProtocol()
    return asyncio.StreamWriter(_FdWriteTransport(1, file_protocol), file_protocol, None, loop)


def _take_stdout() -> io.FileIO:
    """The process's only descriptor on stdout's pipe, as a file; fd 1 is /dev/null now.

    ``sys.stdout`` never closes fd 1, so closing the transport would not give the reader
    its EOF (ssh would not notice that the remote closed). With the pipe held only by
    the returned descriptor, closing it does; /dev/null keeps fd 1 taken, so nothing
    opened later lands on it and receives what a stray write to stdout would send.
    """
    fd = os.dup(1)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
    finally:
        os.close(null)
    return io.FileIO(fd, "wb")  # closes fd when the transport closes it


async def _socket_streams(fd: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Streams on a duplicate of the socket ``fd``; the original stays open for its flags."""
    sock = socket.socket(fileno=os.dup(fd))
    try:
        return await asyncio.open_connection(sock=sock, limit=CHUNK)
    except BaseException:
        sock.close()
        raise
