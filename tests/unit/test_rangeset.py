"""RangeSet: unit examples plus a stateful comparison against a reference ``set``."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from resip.core.rangeset import RangeSet


def test_add_merges_and_counts_new_numbers() -> None:
    rs = RangeSet()
    assert rs.add(5) == 1
    assert rs.add(7, 9) == 3
    assert rs.ranges() == [(5, 5), (7, 9)]
    assert rs.add(6) == 1  # fills the gap: ranges must merge, not touch
    assert rs.ranges() == [(5, 9)]
    assert rs.add(4, 10) == 2
    assert rs.add(5, 9) == 0
    assert rs.ranges() == [(4, 10)]
    assert rs.count() == 7
    assert len(rs) == 1


def test_add_spanning_several_ranges() -> None:
    rs = RangeSet([(1, 2), (5, 6), (9, 9), (20, 30)])
    assert rs.add(0, 10) == 11 - 5
    assert rs.ranges() == [(0, 10), (20, 30)]


def test_append_at_top_is_in_order_fast_path() -> None:
    rs = RangeSet()
    for n in range(1000):
        assert rs.add(n) == 1
    assert rs.ranges() == [(0, 999)]
    rs.add(1001)
    assert rs.ranges() == [(0, 999), (1001, 1001)]


def test_invalid_ranges_rejected() -> None:
    rs = RangeSet()
    with pytest.raises(ValueError):
        rs.add(-1)
    with pytest.raises(ValueError):
        rs.add(5, 4)


def test_contains_first_last_bool_eq_repr() -> None:
    rs = RangeSet([(3, 4), (8, 8)])
    assert 3 in rs
    assert 4 in rs
    assert 5 not in rs
    assert 8 in rs
    assert 2 not in rs
    assert "3" not in rs
    assert rs.first == 3
    assert rs.last == 8
    assert rs
    assert not RangeSet()
    assert RangeSet().first is None
    assert RangeSet().last is None
    assert rs == RangeSet([(8, 8), (4, 4), (3, 3)])
    assert rs != RangeSet([(3, 8)])
    assert list(rs) == [(3, 4), (8, 8)]
    assert repr(rs) == "RangeSet([(3, 4), (8, 8)])"


def test_remove_below() -> None:
    rs = RangeSet([(1, 3), (6, 10), (12, 12)])
    rs.remove_below(2)
    assert rs.ranges() == [(2, 3), (6, 10), (12, 12)]
    rs.remove_below(7)
    assert rs.ranges() == [(7, 10), (12, 12)]
    rs.remove_below(11)
    assert rs.ranges() == [(12, 12)]
    rs.remove_below(13)
    assert not rs


def test_newest_and_contiguous_from() -> None:
    rs = RangeSet([(1, 3), (5, 5), (7, 9)])
    assert rs.newest(2) == [(5, 5), (7, 9)]
    assert rs.newest(10) == [(1, 3), (5, 5), (7, 9)]
    assert rs.newest(0) == []
    assert rs.contiguous_from(1) == 3
    assert rs.contiguous_from(2) == 3
    assert rs.contiguous_from(4) == 3  # absent: start - 1
    assert rs.contiguous_from(0) == -1
    assert rs.contiguous_from(8) == 9


_numbers = st.integers(min_value=0, max_value=300)


class RangeSetMachine(RuleBasedStateMachine):
    """Every operation agrees with a plain set of ints, and the representation stays canonical."""

    def __init__(self) -> None:
        super().__init__()
        self.rs = RangeSet()
        self.ref: set[int] = set()

    @rule(start=_numbers, length=st.integers(min_value=0, max_value=20))
    def add(self, start: int, length: int) -> None:
        new = set(range(start, start + length + 1))
        assert self.rs.add(start, start + length) == len(new - self.ref)
        self.ref |= new

    @rule(step=st.integers(min_value=1, max_value=3))
    def append_top(self, step: int) -> None:
        n = (max(self.ref) if self.ref else 0) + step
        assert self.rs.add(n) == (0 if n in self.ref else 1)
        self.ref.add(n)

    @rule(value=_numbers)
    def remove_below(self, value: int) -> None:
        self.rs.remove_below(value)
        self.ref = {x for x in self.ref if x >= value}

    @rule(value=st.integers(min_value=-2, max_value=330))
    def contains_and_contiguous(self, value: int) -> None:
        assert (value in self.rs) == (value in self.ref)
        k = value - 1
        while k + 1 in self.ref:
            k += 1
        if value >= 0:
            assert self.rs.contiguous_from(value) == k

    @rule(n=st.integers(min_value=0, max_value=5))
    def newest(self, n: int) -> None:
        ranges = self.rs.ranges()
        assert self.rs.newest(n) == (ranges[-n:] if n else [])

    @invariant()
    def canonical(self) -> None:
        ranges = self.rs.ranges()
        covered: set[int] = set()
        for s, e in ranges:
            assert 0 <= s <= e
            covered.update(range(s, e + 1))
        for (_, end), (start, _) in itertools.pairwise(ranges):
            assert end + 1 < start  # disjoint and not touching
        assert covered == self.ref
        assert self.rs.count() == len(self.ref)
        for probe in (-1, 0, 7, 50, 10_000):
            assert self.rs.count_from(probe) == sum(1 for v in self.ref if v >= probe)
        assert len(self.rs) == len(ranges)
        assert self.rs.first == (min(self.ref) if self.ref else None)
        assert self.rs.last == (max(self.ref) if self.ref else None)
        assert self.rs == RangeSet(ranges)


RangeSetMachine.TestCase.settings = settings(max_examples=150, deadline=None)
TestRangeSetMachine = RangeSetMachine.TestCase
