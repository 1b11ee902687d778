"""The simulator's packet traces match the recorded ones (tests/data/trace-hashes.json).

A refactor that only moves code must leave them byte-identical. A change of behaviour
re-records them (``python -m resip.testing.traces --write tests/data/trace-hashes.json``)
and says in its commit which scenarios changed and why.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from resip.testing.traces import SCENARIOS, trace_hash

RECORDED = json.loads((Path(__file__).parents[1] / "data" / "trace-hashes.json").read_text())


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_trace_is_unchanged(name: str) -> None:
    assert trace_hash(name) == RECORDED[name], (
        f"scenario {name!r} behaves differently: if intended, re-record and say why"
    )
