#!/usr/bin/env python3
"""Run the impaired-link lab scenarios (tests/lab, needs root) and print a Markdown table.

The numbers come from the lab tests themselves (``RESIP_LAB_RESULTS``), so the benchmark
and CI measure the same thing: real resip-server and resip-proxy processes, curl through
SOCKS5, a userspace relay imposing loss, delay, a 20 Mbit/s bottleneck and the events.
Usage: ``sudo scripts/bench_lab.py [--blackhole 90]``. Exit status is pytest's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blackhole", type=float, default=30.0, help="outage seconds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="resip-bench-lab-") as tmp:
        results = Path(tmp) / "results.jsonl"
        env = {
            **os.environ,
            "RESIP_LAB_RESULTS": str(results),
            "RESIP_LAB_BLACKHOLE": str(args.blackhole),
        }
        rc = subprocess.call(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "lab",
             str(ROOT / "tests" / "lab")],
            cwd=ROOT, env=env,
        )  # fmt: skip
        rows = (
            [json.loads(line) for line in results.read_text().splitlines()]
            if (results.exists())
            else []
        )
    print("\n| scenario | result |\n|---|---|")
    for row in rows:
        name = row.pop("test").removeprefix("test_").replace("_", " ")
        print(f"| {name} | {', '.join(f'{k}={v}' for k, v in row.items())} |")
    return rc


if __name__ == "__main__":
    sys.exit(main())
