"""The status document's documented schema (docs/STATUS.md) and its validator."""

from __future__ import annotations

import copy

from .conftest import documented_schema, sample_snapshot, validate


def test_the_docs_schema_block_covers_every_section() -> None:
    schema = documented_schema()
    assert set(schema) == {"version", "resip_version", "uptime_s", "session", "channels", "events"}
    assert {"state", "rtt_ms", "loss", "bytes", "key_epoch", "address_history"} <= set(
        schema["session"]
    )
    assert set(schema["events"][0]) == {"t", "kind", "text"}


def test_sample_snapshot_conforms() -> None:
    assert validate(sample_snapshot(), documented_schema()) == []


def test_validator_reports_missing_keys_and_wrong_types() -> None:
    doc = copy.deepcopy(sample_snapshot())
    del doc["session"]["rtt_ms"]["min"]
    doc["channels"][0]["bytes_sent"] = "12"
    doc["events"][0]["t"] = None
    problems = validate(doc, documented_schema())
    assert "$.session.rtt_ms.min: missing" in problems
    assert "$.channels[0].bytes_sent: '12' is not int" in problems
    assert "$.events[0].t: None is not float" in problems
    assert len(problems) == 3


def test_session_may_be_null_before_the_first_session() -> None:
    doc = sample_snapshot()
    doc["session"] = None
    assert validate(doc, documented_schema()) == []
