"""UDP socket buffer sizing, shared by the server and the client proxy."""

from __future__ import annotations

import asyncio
import contextlib
import socket

#: Socket buffer size asked for. Python drains a UDP socket in bursts (between event-loop
#: turns), so the kernel's default ~200 KB receive buffer overflows at a few MB/s and
#: turns CPU hiccups into packet loss. QUIC stacks raise it for the same reason.
BUFFER_BYTES = 4 << 20


def enlarge_buffers(transport: asyncio.BaseTransport, size: int = BUFFER_BYTES) -> None:
    """Raise SO_RCVBUF/SO_SNDBUF of a datagram transport (best effort, capped by the kernel)."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, size)
