"""Bulk transfers through impaired simulated links: every byte, in order, exactly once."""

from __future__ import annotations

import pytest

from resip.testing.netsim import LinkSpec
from resip.testing.pair import SessionPair
from tests.sim.conftest import MIB, Transfer

#: 20 Mbit/s bottleneck, 50 ms round trip, a 100 ms queue: the issue's reference link.
RATE = 20e6
QUEUE = int(RATE / 8 * 0.1)


def link(loss: float = 0.0, **kw: float) -> LinkSpec:
    """The reference link with ``loss`` and any other impairment."""
    params: dict[str, float] = {"delay": 0.025, "rate_bps": RATE, "queue_bytes": QUEUE}
    params.update(kw)
    return LinkSpec(loss=loss, **params)  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.parametrize("loss", [0.0, 0.01, 0.10, 0.30, 0.50])
def test_ten_mib_each_way_at_once(loss: float) -> None:
    seed = 100 + int(loss * 100)
    pair = SessionPair.create(seed=seed, link=link(loss))
    transfer = Transfer.start(pair, up=10 * MIB, down=10 * MIB, seed=seed)
    transfer.run(limit=900.0)
    transfer.assert_exact(seed)


@pytest.mark.slow
def test_one_mib_at_ninety_percent_loss() -> None:
    seed = 190
    pair = SessionPair.create(seed=seed, link=link(0.90))
    transfer = Transfer.start(pair, up=MIB, down=MIB, seed=seed)
    transfer.run(limit=3600.0)
    transfer.assert_exact(seed)


def test_64_kib_at_ninety_nine_percent_loss() -> None:
    seed = 199
    pair = SessionPair.create(seed=seed, link=link(0.99))
    transfer = Transfer.start(pair, up=64 * 1024, down=64 * 1024, seed=seed)
    transfer.run(limit=6 * 3600.0)
    transfer.assert_exact(seed)


@pytest.mark.parametrize(
    ("name", "spec"),
    [
        ("reorder", link(reorder=0.25, reorder_delay=0.02)),
        ("duplicate", link(duplicate=0.10)),
        ("jitter", link(jitter=0.030)),
        ("rtt-600ms", link(delay=0.300)),
        ("rtt-1500ms", link(delay=0.750)),
    ],
)
def test_impairments(name: str, spec: LinkSpec) -> None:
    seed = sum(map(ord, name))
    pair = SessionPair.create(seed=seed, link=spec)
    transfer = Transfer.start(pair, up=2 * MIB, down=2 * MIB, seed=seed)
    transfer.run(limit=600.0)
    transfer.assert_exact(seed)


def test_asymmetric_loss_of_acks() -> None:
    """90 % of the receiver's packets (its ACKs) lost: the sender must not stall."""
    seed = 77
    pair = SessionPair.create(seed=seed, link=link(0.0), reverse=link(0.90))
    transfer = Transfer.start(pair, up=2 * MIB, down=0, seed=seed)
    transfer.run(limit=600.0)
    transfer.assert_exact(seed)
