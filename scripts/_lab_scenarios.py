"""``scripts/bench_lab.py``'s scenarios: a blackhole and an address change mid-download.

Per system, on a 20 Mbit/s, 5 % loss, 100 ms RTT link, each with a fresh client side; once
data flows and 5 s have passed (see bench_lab's docstring for what is reported):

- ``blackhole``: every packet is dropped for ``hole`` seconds; when does the first new
  byte reach curl after the link returns, and how fast is the 5 s after that;
- ``address_change``: ``lab.move_client(drop_old=True)``; do 256 KiB more arrive within
  the limit, and when.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

from _lab_systems import FIRST_BYTE_TIMEOUT, Bench, System, cell

from resip.lab import labstack

if TYPE_CHECKING:
    from _lab_report import Report

SCENARIO_RATE = 20.0
SCENARIO_LOSS = 0.05
SCENARIO_RTT = 100
#: Seconds of steady transfer before a scenario's event.
SCENARIO_LEAD = 5.0
#: New bytes after an address change that count as "the transfer goes on".
ADDRESS_CHANGE_BYTES = 256 << 10


def scenario_link(bench: Bench) -> None:
    bench.link(rate_bps=SCENARIO_RATE * 1e6, rtt_ms=SCENARIO_RTT, loss=SCENARIO_LOSS)


def blackhole_outcome(
    bench: Bench, dl: labstack.CurlDownload, hole: float, limit: float
) -> dict[str, Any]:
    """Black out the link for ``hole`` s; when (and how fast) data came back after it."""
    bench.lab.set(blackhole=True)
    began = time.monotonic()
    time.sleep(hole)
    bench.lab.set(blackhole=False)
    ended = time.monotonic()
    at_end = dl.total
    # Packets already past the relay's decision still arrive in the first moments.
    leaked = at_end - dl.bytes_at(began + min(1.0, hole / 2))
    back = dl.wait_bytes(at_end + 1, limit)
    if back is None:
        return {"resumed": False, "resumed_after_s": None, "leaked_bytes": leaked}
    # How fast it goes once back: the 5 s after the first new byte.
    time.sleep(max(0.0, back + 5 - time.monotonic()))
    after = (dl.bytes_at(back + 5) - dl.bytes_at(back)) * 8 / 5 / 1e6
    return {
        "resumed": True,
        "resumed_after_s": round(back - ended, 2),
        "goodput_after_mbit": round(after, 2),
        "leaked_bytes": leaked,
    }


def scenario_blackhole(bench: Bench, system: System, hole: float, limit: float) -> dict[str, Any]:
    result: dict[str, Any] = {
        "system": system.name,
        "scenario": "blackhole",
        "blackhole_s": hole,
        "loss": SCENARIO_LOSS,
        "rtt_ms": SCENARIO_RTT,
        "limit_s": limit,
    }
    scenario_link(bench)
    with cell(bench, system, SCENARIO_RTT):
        dl = labstack.CurlDownload(
            bench.lab, system.curl_args(bench), 60 + SCENARIO_LEAD + hole + limit
        )
        try:
            if dl.wait_bytes(1, FIRST_BYTE_TIMEOUT) is None:
                return {
                    **result,
                    "resumed": False,
                    "resumed_after_s": None,
                    "note": f"no data before the blackhole ({dl.outcome()})",
                }
            time.sleep(SCENARIO_LEAD)
            outcome = blackhole_outcome(bench, dl, hole, limit)
            return {**result, **outcome, "note": dl.outcome()}
        finally:
            dl.stop()


def scenario_address_change(bench: Bench, system: System, limit: float) -> dict[str, Any]:
    result: dict[str, Any] = {
        "system": system.name,
        "scenario": "address_change",
        "loss": SCENARIO_LOSS,
        "rtt_ms": SCENARIO_RTT,
        "limit_s": limit,
    }
    lab = bench.lab
    home = lab.client_addrs[0]
    scenario_link(bench)
    with cell(bench, system, SCENARIO_RTT):
        dl = labstack.CurlDownload(lab, system.curl_args(bench), 60 + SCENARIO_LEAD + limit)
        try:
            if dl.wait_bytes(1, FIRST_BYTE_TIMEOUT) is None:
                return {
                    **result,
                    "survived": False,
                    "resumed_after_s": None,
                    "note": f"no data before the move ({dl.outcome()})",
                }
            time.sleep(SCENARIO_LEAD)
            at = dl.total
            moved = time.monotonic()
            lab.move_client(drop_old=True)  # to netlab's second client address
            back = dl.wait_bytes(at + ADDRESS_CHANGE_BYTES, limit)
            if back is None:
                return {**result, "survived": False, "resumed_after_s": None, "note": dl.outcome()}
            return {
                **result,
                "survived": True,
                "resumed_after_s": round(back - moved, 2),
                "note": dl.outcome(),
            }
        finally:
            dl.stop()
            if lab.client_addrs[0] != home:
                lab.move_client(home, drop_old=True)


def run_scenarios(
    bench: Bench, systems: list[System], args: argparse.Namespace, report: Report
) -> None:
    for system in systems:
        for name in ("blackhole", "address_change"):
            started = time.monotonic()
            try:
                if name == "blackhole":
                    row = scenario_blackhole(bench, system, args.blackhole, args.recovery_limit)
                else:
                    row = scenario_address_change(bench, system, args.move_limit)
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                report.problems.append(f"{system.name} {name}: {exc}")
                row = {"system": system.name, "scenario": name, "error": str(exc)}
            report.scenarios.append(row)
            print(
                f"[scenario] {system.name:<9} {name}: {scenario_summary(row)}  "
                f"({time.monotonic() - started:.0f} s)",
                file=sys.stderr,
                flush=True,
            )


def scenario_summary(row: dict[str, Any]) -> str:
    if "error" in row:
        return f"error: {row['error']}"
    if row["scenario"] == "blackhole":
        if row["resumed"]:
            return f"data again {row['resumed_after_s']:.1f} s after the link returned"
        return f"never (within {row['limit_s']:.0f} s): {row.get('note', '')}"
    if row["survived"]:
        return f"yes, data again after {row['resumed_after_s']:.1f} s"
    return f"no (nothing within {row['limit_s']:.0f} s): {row.get('note', '')}"
