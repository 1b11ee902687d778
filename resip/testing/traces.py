"""Packet-trace fingerprints of seeded simulator scenarios: proof that a refactor only moved code.

Each scenario drives a :class:`SessionPair` deterministically (keys, loss and jitter
all come from its seed) and hashes every datagram either side emits, with the
virtual time and destination, plus every application event in order. A change
that only moves code leaves every hash byte-identical; a change of behaviour
changes some, and its commit says which and why.

Usage::

    python -m resip.testing.traces              # print the table
    python -m resip.testing.traces --write F    # record (JSON)
    python -m resip.testing.traces --check F    # compare; exit 1 on any difference
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Callable, Hashable
from pathlib import Path

from resip.core.config import SessionConfig
from resip.core.wire import Proto
from resip.testing.netsim import LinkSpec
from resip.testing.pair import CLIENT_ADDR, SessionPair, SimPeer

MIB = 1 << 20
_LINK = LinkSpec(delay=0.025, rate_bps=20e6, queue_bytes=128 * 1024)


def _payload(seed: int, size: int) -> bytes:
    return hashlib.shake_256(seed.to_bytes(8, "big")).digest(size)


def _fingerprint(peer: SimPeer, digest: hashlib._Hash, label: bytes) -> None:
    """Hash every datagram ``peer`` emits (time, destination, bytes)."""
    inner = peer.datagrams_to_send

    def recorded(*, now: float) -> list[tuple[bytes, Hashable]]:
        out = inner(now=now)
        for data, path in out:
            digest.update(b"%s %r %r %d\n" % (label, now, path, len(data)))
            digest.update(data)
        return out

    peer.datagrams_to_send = recorded  # type: ignore[method-assign]


def _bulk(pair: SessionPair, *, up: int, down: int, seed: int) -> list[int]:
    channel = pair.open()
    pair.client.write(channel, _payload(seed, up), shutdown=True)
    pair.server.log(channel)
    pair.server.write(channel, _payload(seed + 1, down), shutdown=True)
    return [channel]


def _run(pair: SessionPair, channels: list[int], limit: float) -> None:
    def done() -> bool:
        return all(pair.client.log(c).closed and pair.server.log(c).closed for c in channels)

    pair.sim.run_until(pair.sim.now + limit, stop=done)


def _clean(pair: SessionPair) -> None:
    _run(pair, _bulk(pair, up=1 * MIB, down=2 * MIB, seed=1), 60)


def _lossy(loss: float) -> Callable[[SessionPair], None]:
    def scenario(pair: SessionPair) -> None:
        pair.sim.set_link("client", "server", LinkSpec(delay=0.025, rate_bps=20e6, loss=loss))
        pair.sim.set_link("server", "client", LinkSpec(delay=0.025, rate_bps=20e6, loss=loss))
        _run(pair, _bulk(pair, up=64 * 1024, down=512 * 1024, seed=2), 300)

    return scenario


def _outage(pair: SessionPair) -> None:
    channels = _bulk(pair, up=512 * 1024, down=1 * MIB, seed=3)
    pair.sim.outage("client", "server", start=0.5, end=120.5)
    _run(pair, channels, 400)


def _rebind(pair: SessionPair) -> None:
    channels = _bulk(pair, up=256 * 1024, down=2 * MIB, seed=4)
    for i in range(4):
        pair.sim.rebind("client", ("10.0.0.2", 40001 + i), at=0.5 + 2 * i)
    _run(pair, channels, 120)


def _bounce(pair: SessionPair) -> None:
    channels = _bulk(pair, up=512 * 1024, down=512 * 1024, seed=5)
    addrs = [CLIENT_ADDR, ("10.9.0.2", 40000), ("172.16.5.5", 6000)]
    pair.sim.bounce("client", addrs, start=0.3, every=1.0)
    _run(pair, channels, 120)


def _many_channels(pair: SessionPair) -> None:
    channels = []
    for i in range(500):
        channel = pair.open("198.51.100.7", 1000 + i)
        pair.client.write(channel, _payload(600 + i, (i * 7919) % 8000 + 1), shutdown=True)
        pair.server.log(channel)
        pair.server.write(channel, b"ok", shutdown=True)
        channels.append(channel)
    _run(pair, channels, 120)


def _session_budget(pair: SessionPair) -> None:
    channels = []
    for i in range(24):
        channel = pair.open("198.51.100.8", 2000 + i)
        pair.client.write(channel, b"GET", shutdown=True)
        pair.server.log(channel)
        pair.server.write(channel, _payload(700 + i, 128 * 1024), shutdown=True)
        channels.append(channel)
    _run(pair, channels, 120)


def _datagrams(pair: SessionPair) -> None:
    channel = pair.open("192.0.2.53", 53, proto=Proto.UDP)
    for i in range(40):
        pair.client.session.send_datagram(channel, _payload(800 + i, 60 + i), now=pair.sim.now)
    pair.sim.run_until(pair.sim.now + 10)


def _ping_pong(pair: SessionPair) -> None:
    channel = pair.open()
    received = pair.server.log(channel).received
    for i in range(1, 41):
        pair.client.write(channel, b"p" * 100)
        pair.sim.run_for(2, stop=lambda n=100 * i: len(received) >= n)  # type: ignore[misc]
        pair.server.write(channel, b"q" * 100)
        pair.sim.run_for(0.05)


def _idle(pair: SessionPair) -> None:
    pair.sim.run_until(4000.0)


#: name -> (seed, server config, scenario).
SCENARIOS: dict[str, tuple[int, SessionConfig | None, Callable[[SessionPair], None]]] = {
    "clean-bulk": (101, None, _clean),
    "loss-10": (102, None, _lossy(0.10)),
    "loss-50": (103, None, _lossy(0.50)),
    "loss-90": (104, None, _lossy(0.90)),
    "outage-120s": (105, None, _outage),
    "rebind": (106, None, _rebind),
    "bounce": (107, None, _bounce),
    "500-channels": (108, None, _many_channels),
    "session-budget": (109, SessionConfig(session_send_buffer=1 * MIB), _session_budget),
    "datagrams": (110, None, _datagrams),
    "ping-pong": (111, None, _ping_pong),
    "idle-hour": (112, None, _idle),
}


def trace_hash(name: str) -> str:
    """SHA-256 of every datagram and event of one scenario."""
    seed, server_config, scenario = SCENARIOS[name]
    pair = SessionPair.create(seed=seed, link=_LINK, server_config=server_config)
    digest = hashlib.sha256()
    _fingerprint(pair.client, digest, b"c")
    _fingerprint(pair.server, digest, b"s")
    scenario(pair)
    for label, peer in ((b"c", pair.client), (b"s", pair.server)):
        for t, event in peer.timeline:
            digest.update(b"%s %r %r\n" % (label, t, event))
    return digest.hexdigest()


def all_hashes() -> dict[str, str]:
    """Every scenario's hash, by name."""
    return {name: trace_hash(name) for name in SCENARIOS}


def main(argv: list[str] | None = None) -> int:
    """Print, record or check the scenario hashes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", type=Path, help="record the hashes in this JSON file")
    group.add_argument("--check", type=Path, help="compare with this JSON file")
    args = parser.parse_args(argv)
    hashes = all_hashes()
    if args.write:
        args.write.write_text(json.dumps(hashes, indent=2) + "\n")
    differing = []
    if args.check:
        recorded = json.loads(args.check.read_text())
        differing = [n for n in hashes if recorded.get(n) != hashes[n]]
    for name, value in hashes.items():
        mark = "  CHANGED" if name in differing else ""
        sys.stdout.write(f"{name:16} {value}{mark}\n")
    return 1 if differing else 0


if __name__ == "__main__":
    raise SystemExit(main())
