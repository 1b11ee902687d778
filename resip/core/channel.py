"""Per-channel byte accounting: what waits to be sent, what is in flight, what was received.

A channel has two independent halves:

- :class:`SendSide` turns application bytes (stream) or datagrams into ordered
  *records* (``pnum`` 1, 2, 3, ...), keeps every record until the peer
  acknowledges it, re-queues the ones the session declares lost, and respects
  the peer's credit (the highest pnum it will accept).
- :class:`RecvSide` accepts records within our credit, drops duplicates,
  reassembles messages in pnum order, inflates compressed ones and hands out
  each message exactly once.

Invariants:

- a pnum is assigned once; a retransmission reuses the record unchanged;
- ``SendSide`` never holds more than ``buffer_limit`` unsent bytes plus what is
  in flight, and in flight is bounded by the peer's credit;
- ``RecvSide`` buffers at most ``window`` records beyond what it delivered, and
  advertises credit only as the application consumes delivered bytes, so a slow
  reader pushes back all the way to the remote sender: no byte is ever dropped.

Timing (when to send, what is lost) is not decided here: that is the session's
and the recovery code's job. This module only does byte bookkeeping.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass

import zstandard

from resip.core.codes import CloseCode
from resip.core.errors import ProtocolViolation
from resip.core.rangeset import RangeSet
from resip.core.wire import Proto, record_overhead

#: Credit every channel starts with in each direction (PROTOCOL.md §5.7).
INITIAL_CREDIT = 256
#: Largest message a compressed record run may inflate to (PROTOCOL.md §4).
MAX_INFLATED = 1 << 20
#: Largest message (datagram or compressed run) a receiver reassembles.
MAX_MESSAGE = MAX_INFLATED
#: After this many messages in a row that did not shrink, stop trying for a while:
#: proxied traffic is mostly TLS, and compressing ciphertext only burns CPU.
_INCOMPRESSIBLE_STREAK = 4
_SKIP_AFTER_STREAK = 64

_COMPRESSOR = zstandard.ZstdCompressor(level=1, write_content_size=True)


@dataclass(slots=True)
class OutRecord:
    """One ordered record of a channel, kept until acknowledged."""

    pnum: int
    data: bytes
    compressed: bool
    fragment: bool
    #: Packet counter of the latest transmission, so a loss of an older copy is ignored.
    counter: int = -1
    #: When a datagram record was queued (datagram channels drop stale ones).
    queued_at: float = 0.0


class SendSide:
    """Sending half of a channel (stream or datagram)."""

    __slots__ = (
        "_compress",
        "_datagram_bytes",
        "_datagrams",
        "_incompressible",
        "_message",
        "_pending",
        "_skip_compress",
        "atomic",
        "buffer_limit",
        "datagram_max_age",
        "datagram_queue",
        "datagrams_dropped",
        "fin_pnum",
        "fin_requested",
        "kind",
        "lost",
        "message_size",
        "next_pnum",
        "peer_credit",
        "unacked",
    )

    def __init__(
        self,
        kind: Proto,
        *,
        buffer_limit: int,
        message_size: int,
        compress: bool,
        datagram_max_age: float,
        datagram_queue: int,
        atomic: bool = False,
    ) -> None:
        self.kind = kind
        #: Never split a message across records (the command channel: PROTOCOL.md §4).
        self.atomic = atomic
        self.buffer_limit = buffer_limit
        self.message_size = message_size
        self._compress = compress and kind is Proto.TCP
        self.datagram_max_age = datagram_max_age
        self.datagram_queue = datagram_queue
        self._pending = bytearray()
        self._datagrams: deque[tuple[float, bytes]] = deque()
        self._datagram_bytes = 0  # sum of the queued datagrams' sizes: buffered in O(1)
        # Fragments of the message being cut into records: (data, offset, compressed).
        self._message: tuple[bytes, int, bool] | None = None
        self._incompressible = 0
        self._skip_compress = 0
        self.next_pnum = 1
        self.peer_credit = INITIAL_CREDIT
        self.unacked: dict[int, OutRecord] = {}
        # A heap: the lowest lost pnum goes first, because it is the one holding up
        # in-order delivery at the receiver (at 90 % loss a FIFO let the head record
        # wait behind hundreds of newer ones, again after each of its losses).
        self.lost: list[int] = []
        self.fin_requested = False
        #: pnum of the last record once the send side is finished (STOP may be sent).
        self.fin_pnum: int | None = None
        self.datagrams_dropped = 0

    # -- application side ------------------------------------------------------

    @property
    def buffered(self) -> int:
        """Bytes accepted from the application but not yet cut into records."""
        message = self._message
        rest = len(message[0]) - message[1] if message is not None else 0
        return len(self._pending) + rest + self._datagram_bytes

    def capacity(self) -> int:
        """How many more stream bytes ``write`` would accept now."""
        return max(0, self.buffer_limit - len(self._pending))

    def write(self, data: bytes) -> int:
        """Queue stream bytes; returns how many were accepted (the rest must wait)."""
        n = min(len(data), self.capacity())
        if n:
            self._pending += data[:n]
        return n

    def write_datagram(self, data: bytes, *, now: float) -> bool:
        """Queue one datagram; False (and counted) when the queue is full or it is too big."""
        if len(data) > MAX_MESSAGE or len(self._datagrams) >= self.datagram_queue:
            self.datagrams_dropped += 1
            return False
        self._datagrams.append((now, bytes(data)))
        self._datagram_bytes += len(data)
        return True

    def finish(self) -> None:
        """The application will write no more (half-close once everything is sent)."""
        self.fin_requested = True
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        if (
            self.fin_requested
            and self.fin_pnum is None
            and not self._pending
            and not self._datagrams
            and self._message is None
        ):
            self.fin_pnum = self.next_pnum - 1

    # -- packetisation -----------------------------------------------------------

    def has_new(self) -> bool:
        """Whether new records could be cut now (data waiting and credit left)."""
        if self.next_pnum > self.peer_credit:
            return False
        return bool(self._pending or self._datagrams or self._message is not None)

    def credit_blocked(self) -> bool:
        """Data is waiting but the peer's credit is used up."""
        has_data = bool(self._pending or self._datagrams or self._message is not None)
        return has_data and self.next_pnum > self.peer_credit

    def next_new_record(self, channel: int, room: int, *, now: float) -> OutRecord | None:
        """Cut the next new record whose encoding (header included) fits ``room`` bytes."""
        if self.next_pnum > self.peer_credit:
            return None
        pnum = self.next_pnum
        space = room - record_overhead(channel, pnum)
        if space <= 0:
            return None
        if self._message is None and not self._start_message(space, now=now):
            return None
        assert self._message is not None
        data, offset, compressed = self._message
        if self.atomic and len(data) - offset > space:
            return None
        chunk = data[offset : offset + space]
        end = offset + len(chunk)
        more = end < len(data)
        self._message = (data, end, compressed) if more else None
        record = OutRecord(pnum, chunk, compressed, more, queued_at=now)
        self.next_pnum = pnum + 1
        self.unacked[pnum] = record
        self._maybe_finish()
        return record

    def _start_message(self, space: int, *, now: float) -> bool:
        if self.kind is Proto.UDP:
            while self._datagrams:
                queued_at, datagram = self._datagrams.popleft()
                self._datagram_bytes -= len(datagram)
                if now - queued_at <= self.datagram_max_age:
                    self._message = (datagram, 0, False)
                    return True
                self.datagrams_dropped += 1
            return False
        if not self._pending:
            return False
        if self._compress and self._skip_compress == 0:
            take = min(len(self._pending), self.message_size)
            raw = bytes(self._pending[:take])
            del self._pending[:take]
            packed = _COMPRESSOR.compress(raw)
            if len(packed) < len(raw) - 16:
                self._incompressible = 0
                self._message = (packed, 0, True)
            else:
                self._incompressible += 1
                if self._incompressible >= _INCOMPRESSIBLE_STREAK:
                    self._skip_compress = _SKIP_AFTER_STREAK
                    self._incompressible = 0
                # Uncompressed stream bytes need no message framing: one record each.
                self._message = (raw, 0, False)
            return True
        if self._skip_compress:
            self._skip_compress -= 1
        # Plain stream data: every record is a whole message, so cut exactly what fits.
        take = min(len(self._pending), space)
        raw = bytes(self._pending[:take])
        del self._pending[:take]
        self._message = (raw, 0, False)
        return True

    def on_acked(self, pnum: int) -> OutRecord | None:
        """Forget an acknowledged record; returns it if it was still outstanding."""
        return self.unacked.pop(pnum, None)

    def on_lost(self, pnum: int, counter: int) -> None:
        """Queue a record for retransmission if ``counter`` was its latest transmission."""
        record = self.unacked.get(pnum)
        if record is not None and record.counter == counter:
            record.counter = -1
            heapq.heappush(self.lost, pnum)

    def lost_record(self) -> OutRecord | None:
        """The next record to retransmit (the lowest lost pnum still unacknowledged).

        It stays queued; entries made stale by an ACK or a newer transmission are dropped.
        """
        lost = self.lost
        unacked = self.unacked
        while lost:
            record = unacked.get(lost[0])
            if record is not None and record.counter == -1:
                return record
            heapq.heappop(lost)
        return None

    def next_retransmission(self, channel: int, room: int) -> OutRecord | None:
        """Dequeue :meth:`lost_record` if its encoding (header included) fits ``room`` bytes.

        None when nothing is lost or it does not fit; then it stays queued, so a full
        packet never takes a record it must give back.
        """
        record = self.lost_record()
        if record is None or record_overhead(channel, record.pnum) + len(record.data) > room:
            return None
        heapq.heappop(self.lost)
        return record

    @property
    def done(self) -> bool:
        """Finished and every record acknowledged."""
        return self.fin_pnum is not None and not self.unacked

    @property
    def bytes_in_flight(self) -> int:
        """Payload bytes of records sent and not yet acknowledged."""
        return sum(len(r.data) for r in self.unacked.values())


class RecvSide:
    """Receiving half of a channel: dedup, reassembly, credit."""

    __slots__ = (
        "_buffered",
        "_decompressor",
        "_parts",
        "_parts_size",
        "advertised",
        "delivered_pnum",
        "duplicates",
        "fin_last",
        "kind",
        "received",
        "unconsumed",
        "window",
    )

    def __init__(self, kind: Proto, *, window: int) -> None:
        self.kind = kind
        self.window = window
        self.received = RangeSet()
        self._buffered: dict[int, tuple[bytes, bool, bool]] = {}
        self._parts: list[bytes] = []
        self._parts_size = 0
        self._decompressor = zstandard.ZstdDecompressor()
        #: Highest pnum whose message has been handed out.
        self.delivered_pnum = 0
        #: Bytes handed out that the application has not consumed yet.
        self.unconsumed = 0
        #: Highest credit we told the peer about.
        self.advertised = INITIAL_CREDIT
        #: Last pnum announced by the peer's STOP, once received.
        self.fin_last: int | None = None
        self.duplicates = 0

    def credit(self) -> int:
        """Highest pnum we accept: delivered plus the window left after unconsumed bytes."""
        used = self.unconsumed // 1024
        return max(self.advertised, self.delivered_pnum + max(0, self.window - used))

    def on_record(self, pnum: int, data: bytes, compressed: bool, fragment: bool) -> list[bytes]:
        """Take one ordered record; returns the messages that became deliverable.

        Returns ``[]`` for duplicates and records above our credit (dropped
        without acknowledgement). Raises :class:`ProtocolViolation` for records
        past the peer's announced end or for a message that does not inflate.
        """
        if pnum > self.advertised:
            return []
        if self.fin_last is not None and pnum > self.fin_last:
            raise ProtocolViolation(CloseCode.PROTOCOL_ERROR, "record after the channel's STOP")
        if not self.received.add(pnum):
            self.duplicates += 1
            return []
        self._buffered[pnum] = (data, compressed, fragment)
        if pnum != self.delivered_pnum + 1 + len(self._parts):
            return []
        return self._reassemble()

    def _reassemble(self) -> list[bytes]:
        out: list[bytes] = []
        buffered = self._buffered
        nxt = self.delivered_pnum + 1 + len(self._parts)
        while nxt in buffered:
            data, compressed, fragment = buffered.pop(nxt)
            if fragment or self._parts:
                self._parts.append(data)
                self._parts_size += len(data)
                if self._parts_size > MAX_MESSAGE:
                    raise ProtocolViolation(CloseCode.PROTOCOL_ERROR, "message larger than 1 MiB")
                if fragment:
                    nxt += 1
                    continue
                data = b"".join(self._parts)
                self._parts.clear()
                self._parts_size = 0
            if compressed:
                data = self._inflate(data)
            self.delivered_pnum = nxt
            nxt += 1
            if data or self.kind is Proto.UDP:
                self.unconsumed += len(data)
                out.append(data)
        return out

    def _inflate(self, data: bytes) -> bytes:
        try:
            params = zstandard.get_frame_parameters(data)
            size = params.content_size
            if size <= 0 or size > MAX_INFLATED:
                raise ProtocolViolation(
                    CloseCode.PROTOCOL_ERROR, "compressed message without a valid size"
                )
            return self._decompressor.decompress(data, max_output_size=size)
        except zstandard.ZstdError as exc:
            raise ProtocolViolation(
                CloseCode.PROTOCOL_ERROR, "compressed message does not inflate"
            ) from exc

    def consume(self, n: int) -> None:
        """The application passed ``n`` delivered bytes on; their window space frees up."""
        self.unconsumed = max(0, self.unconsumed - n)

    def on_stop(self, last: int) -> None:
        """The peer announced its last pnum."""
        if self.fin_last is None:
            if last < self.delivered_pnum or (self.received and (self.received.last or 0) > last):
                raise ProtocolViolation(
                    CloseCode.PROTOCOL_ERROR, "STOP below records already received"
                )
            self.fin_last = last

    @property
    def finished(self) -> bool:
        """Peer half-closed and everything up to its last record was delivered."""
        return self.fin_last is not None and self.delivered_pnum >= self.fin_last
