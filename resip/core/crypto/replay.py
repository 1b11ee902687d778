"""Sliding anti-replay window over 48-bit packet counters (PROTOCOL.md section 3.2, RFC 6479).

Invariants: a counter is accepted at most once; a counter ``SIZE`` or more below the
largest accepted one, or outside 0..2^48-1, is never accepted; and
:meth:`ReplayWindow.accept` changes state only when it returns True. The caller
(:class:`~resip.core.crypto.PacketProtector`) asks only after the AEAD verified, so a
forgery can never move the window.
"""

from __future__ import annotations

from resip.core.crypto.header import MAX_COUNTER


class ReplayWindow:
    """Sliding anti-replay window over 48-bit counters (section 3.2, after RFC 6479).

    Keeps the largest counter accepted and one bit for each of the ``SIZE`` counters ending
    at it. A counter ``SIZE - 1`` below the largest is still inside; ``SIZE`` below is too
    old. Counters outside 0..MAX_COUNTER are always "seen".

    The bits live in a ring of 64-bit words indexed by ``counter >> 6`` (RFC 6479): moving the
    window forward clears the words it passes instead of shifting a 4096-bit integer, which
    made the common in-order case several times cheaper.
    """

    SIZE = 4096
    _WORDS = 128  # a power of two >= SIZE / 64 + 1, so the window never wraps onto itself
    _WORD_MASK = _WORDS - 1

    __slots__ = ("_largest", "_ring")

    def __init__(self) -> None:
        self._largest = -1
        self._ring = [0] * self._WORDS

    @property
    def largest(self) -> int:
        """Largest counter accepted so far, -1 before the first."""
        return self._largest

    @property
    def bitmap(self) -> int:
        """Bit ``i`` set means counter ``largest - i`` was accepted (diagnostics; not fast)."""
        ring, largest, bitmap = self._ring, self._largest, 0
        for i in range(min(self.SIZE, largest + 1)):
            counter = largest - i
            if (ring[(counter >> 6) & self._WORD_MASK] >> (counter & 63)) & 1:
                bitmap |= 1 << i
        return bitmap

    def seen(self, counter: int) -> bool:
        """True if ``counter`` must be refused: already accepted, or left of the window."""
        diff = self._largest - counter
        if diff < 0:
            return counter > MAX_COUNTER
        if diff >= self.SIZE:
            return True
        return bool((self._ring[(counter >> 6) & self._WORD_MASK] >> (counter & 63)) & 1)

    def mark(self, counter: int) -> None:
        """Record ``counter`` as received; counters left of the window are ignored."""
        if not 0 <= counter <= MAX_COUNTER:
            raise ValueError(f"counter {counter} is outside 0..2^48-1")
        self.accept(counter)

    def accept(self, counter: int) -> bool:
        """``not seen(counter)``, and if so ``mark(counter)``, in one step (the hot path)."""
        largest = self._largest
        ring = self._ring
        if counter > largest:
            if counter > MAX_COUNTER:
                return False
            word = counter >> 6
            current = largest >> 6
            if word != current:
                if word - current >= self._WORDS:
                    ring[:] = [0] * self._WORDS
                else:
                    for index in range(current + 1, word + 1):
                        ring[index & self._WORD_MASK] = 0
            ring[word & self._WORD_MASK] |= 1 << (counter & 63)
            self._largest = counter
            return True
        if largest - counter >= self.SIZE or counter < 0:
            return False
        index = (counter >> 6) & self._WORD_MASK
        bit = 1 << (counter & 63)
        bits = ring[index]
        if bits & bit:
            return False
        ring[index] = bits | bit
        return True
