#!/usr/bin/env python3
"""Packets per second of ResIP v2 packet protection against bare AES-256-GCM, in one run.

For each datagram size (512, 1200, 1400 bytes) it times seal + open of full packets through
``resip.core.crypto.PacketProtector`` (a client seals, the server's protector opens), and the bare
``cryptography`` ``AESGCM.encrypt`` + ``decrypt`` of the same payload size with the same
16-byte associated data. Every opened packet is a fresh one (the replay window would refuse a
repeat), so each iteration is one seal followed by one open. Each measurement runs about
``--seconds`` and the best of ``--repeat`` runs is kept. ``ratio = bare_pps / ours_pps``;
the target is <= 2.0.

Usage: ``scripts/bench_codec.py [--json] [--seconds S] [--repeat N] [--suite aes|chacha]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from resip.core.crypto import OVERHEAD, HeaderProtection, PacketProtector, Suite

SIZES = (512, 1200, 1400)


def _run(step: Callable[[int], None], seconds: float) -> float:
    """Iterations per second of ``step(batch)`` over one run of about ``seconds``."""
    batch = 500
    done = 0
    start = time.perf_counter()
    elapsed = 0.0
    while elapsed < seconds:
        step(batch)
        done += batch
        elapsed = time.perf_counter() - start
    return done / elapsed


def ours_step(size: int, suite: Suite) -> Callable[[int], None]:
    """``step(n)``: n seal+open pairs through a client and a server PacketProtector."""
    hp = HeaderProtection({1: os.urandom(32)}, 1)
    session_id, secret = os.urandom(8), os.urandom(32)
    client = PacketProtector(
        suite=suite, session_id=session_id, session_secret=secret, is_server=False, hp=hp
    )
    server = PacketProtector(
        suite=suite, session_id=session_id, session_secret=secret, is_server=True, hp=hp
    )
    inner = os.urandom(size - OVERHEAD)
    seal, open_ = client.seal, server.open_untrusted

    def step(n: int) -> None:
        for _ in range(n):
            open_(seal(inner, now=0.0), now=0.0)

    return step


def bare_step(size: int, suite: Suite) -> Callable[[int], None]:
    """``step(n)``: n encrypt+decrypt pairs of the bare AEAD on the same payload size."""
    aead = (AESGCM if suite == Suite.AES_256_GCM else ChaCha20Poly1305)(os.urandom(32))
    inner = os.urandom(size - OVERHEAD)
    aad = os.urandom(16)
    nonce = os.urandom(12)
    encrypt, decrypt = aead.encrypt, aead.decrypt

    def step(n: int) -> None:
        for _ in range(n):
            decrypt(nonce, encrypt(nonce, inner, aad), aad)

    return step


def measure(size: int, suite: Suite, seconds: float, repeat: int) -> dict[str, float]:
    """One table row. Runs of ours and bare alternate, so a load change on a shared machine
    hits both sides alike; the best run of each is kept."""
    ours_best = bare_best = 0.0
    ours, bare = ours_step(size, suite), bare_step(size, suite)
    for _ in range(repeat):
        ours_best = max(ours_best, _run(ours, seconds))
        bare_best = max(bare_best, _run(bare, seconds))
    return {
        "size": size,
        "ours_pps": round(ours_best),
        "bare_pps": round(bare_best),
        "ratio": round(bare_best / ours_best, 2),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a markdown table or JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (best kept)")
    parser.add_argument("--suite", choices=("aes", "chacha"), default="aes")
    args = parser.parse_args(argv)
    suite = Suite.AES_256_GCM if args.suite == "aes" else Suite.CHACHA20_POLY1305

    rows = [measure(size, suite, args.seconds, args.repeat) for size in SIZES]

    if args.json:
        print(json.dumps({"rows": rows}))
        return 0
    print(
        f"seal+open pairs per second, suite {suite.name}, best of {args.repeat} x {args.seconds} s"
    )
    print()
    print("| size | ours_pps | bare_pps | ratio |")
    print("|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['size']} | {row['ours_pps']} | {row['bare_pps']} | {row['ratio']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
