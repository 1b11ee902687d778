"""Legacy v1 packet codec: the PHP prototype's format, byte for byte (PROTOCOL.md section 9).

Contract:

- **Insecure, interop only.** Fixed-IV AES-256-CBC applied twice per layer with a one-byte
  rotation in between, HMAC-SHA1/MD5 over the inner ciphertext only, no replay protection.
  Constructing a :class:`LegacyV1Codec` logs one WARNING per process saying so.
- **Byte-exact.** :meth:`LegacyV1Codec.seal` reproduces the prototype's packets exactly when
  given the same random bytes; random bytes are drawn in the prototype's order (inner random
  byte, inner padding if any, outer random byte, outer filler), so the known-answer vectors
  in ``tests/data/seed-vectors.json`` can be replayed.
- **Fixed, not bug-compatible.** The largest fragment is ``P - 32 - 6 - bits(channel) -
  bits(pnum)`` (the prototype's ``- 5`` produced 481-byte inner plaintexts and 528-byte
  packets); such packets are refused on send (:class:`~resip.core.errors.LocalProtocolError`) and
  on receive (:class:`~resip.core.errors.WireError`).
- **Sans-IO.** No sockets, no clock; randomness is injected as ``Callable[[int], bytes]``.
- **Untrusted input.** Functions named ``*_untrusted`` raise only
  :class:`~resip.core.errors.WireError` (malformed) or :class:`~resip.core.errors.DecryptError`
  (HMAC mismatch), whatever the bytes.

What this module does not do: channel state (existence, compression setting, ordering,
duplicates, reassembly). That belongs to the session layer, which sees the
:class:`~resip.core.wire.Record` values this codec returns. Records and command messages are
encoded by :mod:`resip.compat.legacy_v1_wire`.
"""

from __future__ import annotations

import hmac
import logging
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from resip.compat.legacy_v1_wire import encode_record_v1, parse_record_v1_untrusted
from resip.core.errors import ConfigError, DecryptError, LocalProtocolError, WireError
from resip.core.wire import Record, int_bits

__all__ = [
    "DEFAULT_PACKET_SIZE",
    "MAX_FRAGMENTS",
    "MAX_INFLATED_SIZE",
    "HashAlg",
    "LegacyKeys",
    "LegacyV1Codec",
    "deflate",
    "fragment_message",
    "inflate_untrusted",
    "peek_session_id_untrusted",
]

logger = logging.getLogger(__name__)

DEFAULT_PACKET_SIZE = 512
"""The prototype's packet size ``P``; every v1 datagram has exactly this many bytes."""

MAX_FRAGMENTS = 128
"""Fragments per chunk in the prototype's sender (it splits writes into ``max * 128`` chunks)."""

MAX_INFLATED_SIZE = 1 << 20
"""Upper bound on one inflated v1 message, so a small packet cannot become a memory bomb."""

_OUTER_OVERHEAD = 32  # outer wrapper bytes around the inner ciphertext: P - (P - 32)
_OUTER_HEADER = 6  # random(1) || type(1) || session_id(4)
_INNER_FIXED = 6  # random(1) || flags(1) || len(2) + one byte each for channel and pnum
_KEY_SIZE = 32
_IV_SIZE = 16
_MAX_CHANNEL = (1 << 32) - 1  # the flags byte has a 2-bit channel size field: 1..4 bytes
_MAX_PNUM = (1 << 64) - 1

_warned_insecure = False


class HashAlg(StrEnum):
    """The HMAC the session was started with (``{"hash": ...}`` in the session API)."""

    SHA1 = "sha1"
    MD5 = "md5"

    @property
    def digest_size(self) -> int:
        """Tag length ``H`` in bytes: 20 for SHA-1, 16 for MD5."""
        return 20 if self is HashAlg.SHA1 else 16


@dataclass(frozen=True, slots=True)
class LegacyKeys:
    """Key material of one v1 session, as issued by the prototype's ``session/start``.

    The ``master_*`` values are server-wide (every client of the server holds them); the
    ``session_*`` values and ``sign`` (the HMAC key, ``H`` bytes) belong to one session.
    """

    master_key1: bytes
    master_iv1: bytes
    master_key2: bytes
    master_iv2: bytes
    session_key1: bytes
    session_iv1: bytes
    session_key2: bytes
    session_iv2: bytes
    sign: bytes
    hash: HashAlg

    def __post_init__(self) -> None:
        for name in ("master_key1", "master_key2", "session_key1", "session_key2"):
            if len(getattr(self, name)) != _KEY_SIZE:
                raise ConfigError(f"{name} must be {_KEY_SIZE} bytes (AES-256)")
        for name in ("master_iv1", "master_iv2", "session_iv1", "session_iv2"):
            if len(getattr(self, name)) != _IV_SIZE:
                raise ConfigError(f"{name} must be {_IV_SIZE} bytes")
        if not isinstance(self.hash, HashAlg):
            raise ConfigError(f"hash must be a HashAlg, not {self.hash!r}")
        if len(self.sign) != self.hash.digest_size:
            raise ConfigError(f"sign must be {self.hash.digest_size} bytes for {self.hash}")


class _FixedIvCbc:
    """AES-256-CBC without padding that restarts from the same IV on every call.

    This is what phpseclib does with ``continuousBuffer`` off, and the reason v1 is
    deterministic apart from its random bytes.
    """

    __slots__ = ("_cipher",)

    def __init__(self, key: bytes, iv: bytes) -> None:
        self._cipher = Cipher(algorithms.AES(key), modes.CBC(iv))

    def encrypt(self, data: bytes) -> bytes:
        enc = self._cipher.encryptor()
        return enc.update(data) + enc.finalize()

    def decrypt(self, data: bytes) -> bytes:
        dec = self._cipher.decryptor()
        return dec.update(data) + dec.finalize()


class _Layer:
    """One v1 encryption layer: ``CBC(c2, rotR(CBC(c1, x)))`` and its inverse.

    The rotation carries the last byte of the first pass (which depends on every input
    byte) into the first block of the second pass, so every output byte depends on the
    leading random byte and the trailing random padding.
    """

    __slots__ = ("_c1", "_c2")

    def __init__(self, key1: bytes, iv1: bytes, key2: bytes, iv2: bytes) -> None:
        self._c1 = _FixedIvCbc(key1, iv1)
        self._c2 = _FixedIvCbc(key2, iv2)

    def wrap(self, plain: bytes) -> bytes:
        first = self._c1.encrypt(plain)
        return self._c2.encrypt(first[-1:] + first[:-1])

    def unwrap(self, data: bytes) -> bytes:
        first = self._c2.decrypt(data)
        return self._c1.decrypt(first[1:] + first[:1])


def _check_packet_size(packet_size: int) -> None:
    # Same acceptance rule as the prototype's client: CBC without padding needs whole
    # blocks, and below 64 bytes the inner plaintext could not hold a header.
    if packet_size % 16 != 0 or packet_size < 64:
        raise ConfigError(f"v1 packet size must be a multiple of 16 and >= 64, not {packet_size}")


def _master_layer(keys: LegacyKeys) -> _Layer:
    return _Layer(keys.master_key1, keys.master_iv1, keys.master_key2, keys.master_iv2)


def peek_session_id_untrusted(
    packet: bytes,
    *,
    master_key1: bytes,
    master_iv1: bytes,
    master_key2: bytes,
    master_iv2: bytes,
    packet_size: int = DEFAULT_PACKET_SIZE,
) -> int:
    """Return the session id of a v1 packet, using only the server-wide master keys.

    A server calls this to find the session (and so the codec) a datagram belongs to. The
    id is *not* authenticated (the HMAC covers only the inner ciphertext); the session's
    :meth:`LegacyV1Codec.open_untrusted` does the real checks. Raises
    :class:`~resip.core.errors.WireError` for a packet of the wrong size or type, and
    :class:`~resip.core.errors.ConfigError` for keys or IVs of the wrong length.
    """
    _check_packet_size(packet_size)
    for name, value, size in (
        ("master_key1", master_key1, _KEY_SIZE),
        ("master_iv1", master_iv1, _IV_SIZE),
        ("master_key2", master_key2, _KEY_SIZE),
        ("master_iv2", master_iv2, _IV_SIZE),
    ):
        if len(value) != size:
            raise ConfigError(f"{name} must be {size} bytes")
    master = _Layer(master_key1, master_iv1, master_key2, master_iv2)
    outer = _open_outer_untrusted(master, packet, packet_size)
    return int.from_bytes(outer[2:_OUTER_HEADER], "big")


def _open_outer_untrusted(master: _Layer, packet: bytes, packet_size: int) -> bytes:
    if len(packet) != packet_size:
        raise WireError(f"v1 packet must be exactly {packet_size} bytes, got {len(packet)}")
    outer = master.unwrap(bytes(packet))
    # Only the low nibble is the packet type; the prototype ignores the high nibble.
    if outer[1] & 0x0F != 0:
        raise WireError(f"unknown v1 packet type {outer[1] & 0x0F}")
    return outer


def _log_insecure_once() -> None:
    global _warned_insecure
    if not _warned_insecure:
        _warned_insecure = True
        logger.warning(
            "legacy v1 protocol in use: fixed-IV CBC, HMAC over part of the packet, no replay "
            "protection and master keys shared by all clients; use it only to talk to old peers"
        )


class LegacyV1Codec:
    """Seal and open the fixed-size packets of one v1 session, for one side (client or server).

    The codec is stateless apart from its keys: the prototype has no per-packet nonce or
    counter, so sealing the same record with the same random bytes gives the same packet.
    """

    PACKET_SIZE = DEFAULT_PACKET_SIZE

    def __init__(
        self,
        keys: LegacyKeys,
        session_id: int,
        *,
        is_server: bool,
        random_bytes: Callable[[int], bytes] = os.urandom,
        packet_size: int = DEFAULT_PACKET_SIZE,
    ) -> None:
        """Create the codec. ``session_id`` is the prototype's 32-bit id; ``is_server``
        decides the direction bit sealed into records and required of received ones."""
        if not 0 <= session_id <= 0xFFFFFFFF:
            raise ConfigError(f"v1 session ids are 32-bit, not {session_id}")
        _check_packet_size(packet_size)
        _log_insecure_once()
        self.keys = keys
        self.session_id = session_id
        self.is_server = is_server
        self.packet_size = packet_size
        self._random_bytes = random_bytes
        self._hash_name = keys.hash.value
        self._hash_len = keys.hash.digest_size
        self._inner_size = packet_size - _OUTER_OVERHEAD
        self._sid_bytes = session_id.to_bytes(4, "big")
        self._master = _master_layer(keys)
        self._session = _Layer(
            keys.session_key1, keys.session_iv1, keys.session_key2, keys.session_iv2
        )

    def max_fragment(self, channel: int, pnum: int) -> int:
        """Largest record data length that fits one packet for this channel and pnum.

        ``P - 32 - 6 - bits(channel) - bits(pnum)``: the inner plaintext holds a random
        byte, flags, the packed channel and pnum and a 2-byte length before the data.
        """
        return self._inner_size - _INNER_FIXED - int_bits(channel) - int_bits(pnum)

    def _rand(self, n: int) -> bytes:
        out = self._random_bytes(n)
        if len(out) != n:
            raise LocalProtocolError(f"random_bytes({n}) returned {len(out)} bytes")
        return out

    def _mac(self, data: bytes) -> bytes:
        return hmac.digest(self.keys.sign, data, self._hash_name)

    def seal(self, record: Record) -> bytes:
        """Encrypt one record into a ``P``-byte packet.

        Raises :class:`~resip.core.errors.LocalProtocolError` if the record could not be accepted
        by a peer: wrong direction bit for this side, channel or pnum out of range, fragment
        bit on channel 0, pnum 0 outside unfragmented channel 0, or data longer than
        :meth:`max_fragment`.
        """
        if record.from_server != self.is_server:
            raise LocalProtocolError("record direction does not match this side of the session")
        _check_record_fields(record, LocalProtocolError)
        limit = self.max_fragment(record.channel, record.pnum)
        if len(record.data) > limit:
            raise LocalProtocolError(
                f"{len(record.data)} data bytes exceed the v1 fragment limit of {limit}"
            )
        body = encode_record_v1(record)
        # Draw random bytes in the prototype's order so known-answer vectors replay.
        inner = self._rand(1) + body
        pad = self._inner_size - len(inner)
        if pad > 0:
            inner += self._rand(pad)
        ciphertext = self._session.wrap(inner)
        outer = (
            self._rand(1)
            + b"\x00"
            + self._sid_bytes
            + ciphertext
            + self._rand(_OUTER_OVERHEAD - _OUTER_HEADER - self._hash_len)
            + self._mac(ciphertext)
        )
        return self._master.wrap(outer)

    def open_untrusted(self, packet: bytes) -> Record:
        """Decrypt and check one received packet; return its record.

        Raises :class:`~resip.core.errors.WireError` if the packet is malformed (size, type,
        session id, record layout, the peer's direction bit, channel/pnum/fragment rules) and
        :class:`~resip.core.errors.DecryptError` if the HMAC does not match. Channel existence,
        compression and ordering are left to the caller.
        """
        outer = _open_outer_untrusted(self._master, packet, self.packet_size)
        if outer[2:_OUTER_HEADER] != self._sid_bytes:
            raise WireError("v1 packet for another session")
        ciphertext = outer[_OUTER_HEADER : _OUTER_HEADER + self._inner_size]
        if not hmac.compare_digest(self._mac(ciphertext), outer[-self._hash_len :]):
            raise DecryptError("v1 HMAC mismatch")
        inner = self._session.unwrap(ciphertext)
        # inner[0] is the random byte; the rest after the record is random padding.
        record, _end = parse_record_v1_untrusted(inner, 1)
        if record.from_server == self.is_server:
            raise WireError("v1 record carries our own direction bit")
        _check_record_fields(record, WireError)
        return record


def _check_record_fields(record: Record, error: type[Exception]) -> None:
    """The prototype receiver's record rules that do not need channel state."""
    if not 0 <= record.channel <= _MAX_CHANNEL:
        raise error(f"channel {record.channel} does not fit the v1 2-bit size field")
    if not 0 <= record.pnum <= _MAX_PNUM:
        raise error(f"packet number {record.pnum} out of range")
    if record.channel == 0 and record.fragment:
        raise error("channel 0 messages cannot be fragmented")
    if record.pnum == 0 and (record.channel != 0 or record.fragment):
        raise error("packet number 0 (unordered) is only allowed unfragmented on channel 0")


def deflate(data: bytes) -> bytes:
    """Raw DEFLATE (RFC 1951, zlib default level, no header), as the prototype compresses."""
    comp = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    return comp.compress(data) + comp.flush()


def inflate_untrusted(data: bytes, *, max_size: int = MAX_INFLATED_SIZE) -> bytes:
    """Inflate one raw DEFLATE stream received from a v1 peer, to at most ``max_size`` bytes.

    Raises :class:`~resip.core.errors.WireError` if the stream is corrupt, truncated, followed by
    trailing bytes, or would inflate beyond ``max_size``.
    """
    decomp = zlib.decompressobj(-15)
    try:
        out = decomp.decompress(data, max_size + 1)
    except zlib.error as exc:
        raise WireError(f"corrupt DEFLATE stream: {exc}") from None
    # Asking for one byte more than allowed tells "exactly max_size" from "too big".
    if len(out) > max_size:
        raise WireError(f"DEFLATE stream inflates beyond {max_size} bytes")
    if not decomp.eof:
        raise WireError("truncated DEFLATE stream")
    if decomp.unused_data:
        raise WireError("trailing bytes after DEFLATE stream")
    return out


def fragment_message(
    channel: int,
    first_pnum: int,
    data: bytes,
    *,
    from_server: bool,
    max_fragment: Callable[[int, int], int],
    compress: bool,
) -> list[Record]:
    """Cut one application write into v1 records, numbered from ``first_pnum``.

    The prototype's rules, with the fixed fragment size: the data is split into chunks of
    ``max_fragment(channel, pnum) * MAX_FRAGMENTS`` bytes (``pnum`` = the chunk's first
    number); each chunk is one message, raw-DEFLATEd when ``compress``, then cut into
    fragments; every record but a message's last has the fragment bit, and every record of a
    compressed message has the compressed bit. Each fragment's size is taken from its own
    pnum, so a pnum that grows a byte mid-chunk cannot overflow the packet (the prototype
    used the chunk's first pnum for all of them).

    ``first_pnum`` 0 sends one unordered command on channel 0. Empty ``data`` gives no
    records. Raises :class:`~resip.core.errors.LocalProtocolError` for a channel-0 message that
    needs more than one record, compression on channel 0, or pnum 0 elsewhere.
    """
    if channel == 0 and compress:
        raise LocalProtocolError("channel 0 is never compressed in v1")
    if first_pnum == 0 and channel != 0:
        raise LocalProtocolError("packet number 0 (unordered) is only allowed on channel 0")
    records: list[Record] = []
    pnum = first_pnum
    pos = 0
    while pos < len(data):
        chunk_size = max_fragment(channel, pnum) * MAX_FRAGMENTS
        if chunk_size <= 0:
            raise LocalProtocolError("packet too small for any data")
        chunk = data[pos : pos + chunk_size]
        pos += len(chunk)
        message = deflate(chunk) if compress else chunk
        pnum = _cut_message(records, message, channel, pnum, from_server, max_fragment, compress)
        if channel == 0 and len(records) > 1:
            raise LocalProtocolError("channel 0 messages must fit in one v1 packet")
    return records


def _cut_message(
    records: list[Record],
    message: bytes,
    channel: int,
    pnum: int,
    from_server: bool,
    max_fragment: Callable[[int, int], int],
    compress: bool,
) -> int:
    """Append the fragments of one message to ``records``; returns the next free pnum."""
    mpos = 0
    while True:
        size = max_fragment(channel, pnum)
        piece = message[mpos : mpos + size]
        mpos += len(piece)
        last = mpos >= len(message)
        records.append(
            Record(
                channel=channel,
                pnum=pnum,
                data=piece,
                from_server=from_server,
                compressed=compress,
                fragment=not last,
            )
        )
        pnum += 1
        if last:
            return pnum
