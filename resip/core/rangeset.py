"""A set of non-negative integers stored as sorted, disjoint, non-touching inclusive ranges.

Used for ACK ranges and received-packet sets.

Invariants (checked by the property tests against a reference ``set``):

- ranges are stored as two parallel lists ``_starts`` and ``_ends``;
- ``0 <= _starts[i] <= _ends[i]`` for every ``i``;
- ``_ends[i] + 1 < _starts[i + 1]``: ranges neither overlap nor touch, so the
  representation of a given set of numbers is unique and ``==`` can compare lists.

The common case is a received set that grows at the top (packet numbers mostly
arrive in order), so :meth:`RangeSet.add` checks the last range first and extends
or appends in O(1); only out-of-order inserts pay for a bisect and a list splice.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator


class RangeSet:
    """Sorted, disjoint, non-touching inclusive ranges of non-negative ints."""

    __slots__ = ("_ends", "_starts")

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        """Build the set from inclusive ``(start, end)`` pairs in any order; overlaps merge."""
        self._starts: list[int] = []
        self._ends: list[int] = []
        for start, end in ranges:
            self.add(start, end)

    def add(self, start: int, end: int | None = None) -> int:
        """Add ``start..end`` inclusive (just ``start`` if ``end`` is None).

        Returns how many numbers were not present before. Raises ``ValueError``
        for negative numbers or ``end < start``.
        """
        if end is None:
            end = start
        if start < 0 or end < start:
            raise ValueError(f"invalid range {start}..{end}")
        starts = self._starts
        ends = self._ends
        # Fast path: at or beyond the top range (in-order arrival).
        if not ends or start > ends[-1] + 1:
            starts.append(start)
            ends.append(end)
            return end - start + 1
        if start >= starts[-1]:
            if end <= ends[-1]:
                return 0
            added = end - ends[-1]
            ends[-1] = end
            return added
        # General case: find every range that overlaps or touches start..end.
        # lo: first range whose end >= start - 1; hi: first range whose start > end + 1.
        lo = bisect_left(ends, start - 1)
        hi = bisect_right(starts, end + 1)
        if lo == hi:
            starts.insert(lo, start)
            ends.insert(lo, end)
            return end - start + 1
        new_start = min(start, starts[lo])
        new_end = max(end, ends[hi - 1])
        covered = 0
        for i in range(lo, hi):
            covered += ends[i] - starts[i] + 1
        starts[lo:hi] = [new_start]
        ends[lo:hi] = [new_end]
        return (new_end - new_start + 1) - covered

    def __contains__(self, value: object) -> bool:
        """Whether ``value`` (an int) is in the set; O(log n)."""
        if not isinstance(value, int) or isinstance(value, bool):
            return False
        i = bisect_right(self._starts, value) - 1
        return i >= 0 and value <= self._ends[i]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        """Iterate over the ranges in ascending order."""
        return zip(self._starts, self._ends, strict=True)

    def __len__(self) -> int:
        """Number of ranges (not numbers; see :meth:`count`)."""
        return len(self._starts)

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RangeSet):
            return NotImplemented
        # The representation is canonical (non-touching), so list equality is set equality.
        return self._starts == other._starts and self._ends == other._ends

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"RangeSet({self.ranges()!r})"

    def ranges(self) -> list[tuple[int, int]]:
        """The ranges as a new list of inclusive ``(start, end)`` pairs, ascending."""
        return list(zip(self._starts, self._ends, strict=True))

    def count(self) -> int:
        """Total number of integers covered."""
        return sum(e - s + 1 for s, e in zip(self._starts, self._ends, strict=True))

    def count_from(self, value: int) -> int:
        """How many numbers ``>= value`` the set holds."""
        i = bisect_left(self._ends, value)
        return sum(
            e - max(s, value) + 1 for s, e in zip(self._starts[i:], self._ends[i:], strict=True)
        )

    @property
    def first(self) -> int | None:
        """Smallest number in the set, or None if empty."""
        return self._starts[0] if self._starts else None

    @property
    def last(self) -> int | None:
        """Largest number in the set, or None if empty."""
        return self._ends[-1] if self._ends else None

    def remove_below(self, value: int) -> None:
        """Forget every number ``< value`` (bounds memory once old numbers no longer matter)."""
        starts = self._starts
        ends = self._ends
        i = bisect_left(ends, value)  # first range with end >= value survives
        if i:
            del starts[:i]
            del ends[:i]
        if starts and starts[0] < value:
            starts[0] = value

    def newest(self, n: int) -> list[tuple[int, int]]:
        """The ``n`` highest ranges, in ascending order (what an ACK repeats)."""
        if n <= 0:
            return []
        return list(zip(self._starts[-n:], self._ends[-n:], strict=True))

    def contiguous_from(self, start: int) -> int:
        """Largest ``k`` such that every number in ``start..k`` is present; ``start - 1`` if none.

        Because ranges never touch, the answer is the end of the range containing ``start``.
        """
        i = bisect_right(self._starts, start) - 1
        if i >= 0 and start <= self._ends[i]:
            return self._ends[i]
        return start - 1
