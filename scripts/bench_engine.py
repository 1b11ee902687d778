#!/usr/bin/env python3
"""The session engine alone: packets per second and microseconds per packet, no sockets.

Two :class:`~resip.core.session.Session` objects (client and server) are wired through a
minimal pipe per direction: a bottleneck rate, a fixed one-way delay, a drop-tail
queue and a seeded loss decision; virtual time jumps from event to event. One channel
streams random (incompressible) bytes client -> server. The bottleneck (100 Mbit/s)
and the RTT set the packets in flight: about 100, 1,000 and 10,000.

Reported per row, over a measuring window after a warm-up: data packets the client
sent per real second (``pps``) and real microseconds of engine work per such packet
(``us_per_packet``: both sessions and the pipe together, everything the packet
costs), plus the packets actually in flight at the end.

Usage: scripts/bench_engine.py [--json] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections import deque
from collections.abc import Hashable

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from resip.core.config import SessionConfig
from resip.core.crypto import HeaderProtection
from resip.core.session import Role, Session

RATE_BPS = 100e6
PACKET = 1200
LOSSES = (0.0, 0.10, 0.30)
INFLIGHT = (100, 1000, 10000)
CHUNK = 1 << 20
CLIENT, SERVER = ("10.0.0.2", 40000), ("192.0.2.1", 31266)


class Pipe:
    """One direction: serialisation at RATE_BPS, a delay, drop-tail queue, random loss."""

    def __init__(self, delay: float, loss: float, rng: random.Random) -> None:
        self.delay, self.loss, self.rng = delay, loss, rng
        self.busy_until = 0.0
        # A queue of one RTT (at least 20 ms): deep enough that the controller sees the
        # queueing delay it reacts to, as on a real bottleneck.
        self.queue_limit = RATE_BPS / 8 * max(2 * delay, 0.02)
        self.line: deque[tuple[float, bytes]] = deque()

    def send(self, now: float, data: bytes) -> None:
        start = max(now, self.busy_until)
        if (start - now) * RATE_BPS / 8 + len(data) > self.queue_limit:
            return
        self.busy_until = start + len(data) * 8 / RATE_BPS
        if self.rng.random() >= self.loss:
            self.line.append((self.busy_until + self.delay, data))


def _sessions(seed: int) -> tuple[Session, Session]:
    rng = random.Random(seed)
    sid, secret, hpk = rng.randbytes(8), rng.randbytes(32), rng.randbytes(32)
    common = {"session_id": sid, "session_secret": secret, "now": 0.0}
    config = SessionConfig()
    server = Session(
        config, role=Role.SERVER, hp=HeaderProtection({0: hpk}, 0), **common,  # type: ignore[arg-type]
    )  # fmt: skip
    client = Session(
        config, role=Role.CLIENT, hp=HeaderProtection({0: hpk}, 0), peer=SERVER, **common,  # type: ignore[arg-type]
    )  # fmt: skip
    return client, server


class Bench:
    """Both sessions, both pipes, the application on each end and the event loop."""

    def __init__(self, loss: float, inflight: int, seed: int = 1) -> None:
        rtt = inflight * PACKET * 8 / RATE_BPS
        rng = random.Random(seed)
        self.client, self.server = _sessions(seed)
        self.up = Pipe(rtt / 2, loss, rng)
        self.down = Pipe(rtt / 2, loss, rng)
        self.now = 0.0
        self.chunk = os.urandom(CHUNK)
        self.channel = self.client.open_channel("example.com", 443, now=0.0)
        self.sent_packets = 0

    def _app(self, session: Session, peer: Hashable) -> None:
        while (event := session.next_event()) is not None:
            name = type(event).__name__
            if name == "ChannelRequested":
                session.accept_channel(event.channel_id, now=self.now)  # type: ignore[attr-defined]
            elif name == "ChannelData":
                session.consume(event.channel_id, len(event.data))  # type: ignore[attr-defined]

    def _top_up(self) -> None:
        client = self.client
        while client.send_capacity(self.channel) >= CHUNK:
            client.send(self.channel, self.chunk, now=self.now)

    def _flush(self) -> None:
        for data, _ in self.client.datagrams_to_send(now=self.now):
            self.sent_packets += 1
            self.up.send(self.now, data)
        for data, _ in self.server.datagrams_to_send(now=self.now):
            self.down.send(self.now, data)

    def _next_time(self) -> float:
        times = [t for t in (self.client.next_timer(), self.server.next_timer()) if t is not None]
        times.extend(pipe.line[0][0] for pipe in (self.up, self.down) if pipe.line)
        return max(min(times), self.now)

    def run_until(self, t_end: float) -> None:
        """Advance virtual time to ``t_end``, doing everything due on the way."""
        while self.now < t_end:
            self._top_up()
            self._flush()
            self.now = min(self._next_time(), t_end)
            for pipe, dst, src in (
                (self.up, self.server, CLIENT),
                (self.down, self.client, SERVER),
            ):
                while pipe.line and pipe.line[0][0] <= self.now:
                    dst.receive_datagram(pipe.line.popleft()[1], src, now=self.now)
            for session in (self.client, self.server):
                t = session.next_timer()
                if t is not None and t <= self.now:
                    session.handle_timer(now=self.now)
            self._app(self.client, SERVER)
            self._app(self.server, CLIENT)


def measure(loss: float, inflight: int, *, quick: bool) -> dict[str, float]:
    """One row: warm up, then time a window of virtual seconds."""
    bench = Bench(loss, inflight)
    rtt = inflight * PACKET * 8 / RATE_BPS
    # Startup needs ~10 round trips to fill the pipe; then measure a few more.
    warmup = max(1.0, 12 * rtt)
    window = (0.5 if quick else 2.0) + (2 if quick else 5) * rtt
    bench.run_until(warmup)
    packets_before = bench.sent_packets
    received_before = bench.server.bytes_received
    cpu0 = time.process_time()
    bench.run_until(warmup + window)
    cpu = time.process_time() - cpu0
    packets = bench.sent_packets - packets_before
    delivered = bench.server.bytes_received - received_before
    pps = packets / cpu if cpu > 0 else 0.0
    stats = bench.client.stats(now=bench.now)
    return {
        "loss": loss,
        "inflight": inflight,
        "pps": round(pps),
        "us_per_packet": round(1e6 / pps, 1) if pps else 0.0,
        "inflight_seen": round(stats.bytes_in_flight / PACKET),
        "mbit_delivered": round(delivered * 8 / window / 1e6, 1),
    }


def table(rows: list[dict[str, float]]) -> str:
    base = {r["inflight"]: r for r in rows if r["loss"] == 0.0}
    lines = [
        "| loss | in flight (target / seen) | packets/s | µs/packet | vs 0 % loss |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ref = base.get(r["inflight"])
        ratio = r["us_per_packet"] / ref["us_per_packet"] if ref and ref["us_per_packet"] else 0
        lines.append(
            f"| {r['loss']:.0%} | {r['inflight']} / {r['inflight_seen']} | {r['pps']:,} "
            f"| {r['us_per_packet']} | {ratio:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    parser.add_argument("--quick", action="store_true", help="shorter measuring windows")
    args = parser.parse_args()
    rows = [measure(p, n, quick=args.quick) for n in INFLIGHT for p in LOSSES]
    if args.json:
        print(json.dumps({"rows": rows}))
    else:
        print("session engine alone, 100 Mbit/s bottleneck, CPU time of both sessions")
        print(table(rows))


if __name__ == "__main__":
    main()
