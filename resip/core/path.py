"""Where the server sends: roaming, multihoming and anti-amplification (server side).

Rules (PROTOCOL.md §5.9, §6; mosh ``network.cc``, RFC 9000 §8-9):

- Only an authenticated, non-replayed packet that is the *newest* so far (its
  counter is above every counter received) may move the reply address. An old
  packet replayed or copied from elsewhere arrives with a counter we have seen,
  or a smaller one, and moves nothing.
- The session's first address is trusted (it arrived authenticated, right after the
  API call that created the session); every later one must be validated.
- An address that has not answered a PATH_CHALLENGE is *unvalidated*: we send it
  at most three times the bytes it sent us, so a forged source cannot turn the
  server into an amplifier.
- If a new address does not validate within a few probe timeouts, we go back to
  the last validated one.
- Validated addresses are remembered (a few), so a client that bounces between
  several addresses does not pay a round trip on each bounce.

The client side needs none of this: it always sends to the server address its
owner gives it (UDP or the TCP fallback).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

#: Amplification factor for unvalidated addresses (RFC 9000 §8).
AMPLIFICATION_FACTOR = 3
#: How many validated addresses we remember.
MAX_VALIDATED = 8


@dataclass(slots=True)
class PathInfo:
    """Byte counters of one peer address."""

    address: Hashable
    validated: bool = False
    bytes_received: int = 0
    bytes_sent: int = 0


class PathManager:
    """Tracks the server's reply address and which addresses are validated."""

    def __init__(self, random_bytes: Callable[[int], bytes]) -> None:
        self._random_bytes = random_bytes
        self._paths: OrderedDict[Hashable, PathInfo] = OrderedDict()
        self.current: PathInfo | None = None
        self._fallback: PathInfo | None = None
        #: Outstanding challenge: (data, address, deadline), None when nothing to prove.
        self._challenge: tuple[bytes, Hashable, float] | None = None
        self._challenge_due = False
        self.changes = 0
        self.history: list[Hashable] = []

    def _info(self, address: Hashable) -> PathInfo:
        info = self._paths.get(address)
        if info is None:
            info = PathInfo(address)
            self._paths[address] = info
            while len(self._paths) > MAX_VALIDATED * 2:
                old, old_info = next(iter(self._paths.items()))
                if old_info is self.current or old_info is self._fallback:
                    self._paths.move_to_end(old)
                    break
                del self._paths[old]
        return info

    def on_packet(
        self, address: Hashable, size: int, *, newest: bool, now: float, timeout: float
    ) -> tuple[Hashable, Hashable] | None:
        """Account an authenticated packet; returns ``(old, new)`` when the reply address moved."""
        info = self._info(address)
        info.bytes_received += size
        current = self.current
        if current is None:
            # The very first packet of a fresh session, authenticated and within seconds
            # of the API call that made it: trust its address, as QUIC trusts the address
            # its handshake validated. Limiting it would stall session start on a lossy
            # link, where a challenge round trip can take minutes.
            info.validated = True
            self.current = info
            self.history.append(address)
            return None
        if not newest or info is current:
            return None
        if current.validated:
            self._fallback = current
        self.current = info
        self.changes += 1
        self.history.append(address)
        if len(self.history) > 32:
            del self.history[:-32]
        if not info.validated:
            self._start_challenge(info, now=now, timeout=timeout)
        return current.address, address

    def _start_challenge(self, info: PathInfo, *, now: float, timeout: float) -> None:
        self._challenge = (self._random_bytes(8), info.address, now + timeout)
        self._challenge_due = True

    @property
    def challenge_pending(self) -> bool:
        """A challenge waits to be sent."""
        return self._challenge is not None and self._challenge_due

    def challenge_to_send(self) -> tuple[bytes, Hashable, bool] | None:
        """The PATH_CHALLENGE for the next packet: ``(data, address, first copy)``.

        The first copy goes out at once; after that the challenge is repeated in every
        packet to the unvalidated address, but only in packets sent for other reasons:
        on a lossy link one copy is not enough, and ten bytes are cheap next to a
        stalled path, while packets holding nothing but the challenge would be sent
        back to back until the amplification limit stops them.
        """
        if self._challenge is None:
            return None
        data, address, _ = self._challenge
        current = self.current
        if self._challenge_due:
            self._challenge_due = False
            return data, address, True
        if current is not None and current.address == address:
            return data, address, False
        return None

    def on_response(self, data: bytes) -> bool:
        """A PATH_RESPONSE arrived; True if it validated the challenged address."""
        if self._challenge is None or data != self._challenge[0]:
            return False
        info = self._paths.get(self._challenge[1])
        self._challenge = None
        if info is None:
            return False
        info.validated = True
        return True

    def next_timer(self) -> float | None:
        """When the outstanding challenge gives up."""
        return self._challenge[2] if self._challenge is not None else None

    def handle_timer(self, *, now: float, timeout: float) -> tuple[Hashable, Hashable] | None:
        """An unanswered challenge: go back to the last validated address, or ask again."""
        if self._challenge is None or now < self._challenge[2]:
            return None
        challenged = self._challenge[1]
        self._challenge = None
        current = self.current
        fallback = self._fallback
        if current is not None and current.address == challenged and fallback is not None:
            self.current = fallback
            self.changes += 1
            self.history.append(fallback.address)
            return challenged, fallback.address
        if current is not None and not current.validated:
            # Lossy link: the challenge or its answer was lost. Keep asking.
            self._start_challenge(current, now=now, timeout=timeout)
        return None

    def allowance(self) -> int:
        """Bytes we may still send to the current address (unbounded once validated)."""
        current = self.current
        if current is None:
            return 0
        if current.validated:
            return 1 << 62
        return max(0, AMPLIFICATION_FACTOR * current.bytes_received - current.bytes_sent)

    def on_sent(self, size: int) -> None:
        """Count bytes sent to the current address."""
        if self.current is not None:
            self.current.bytes_sent += size
