"""Shared helpers for simulator scenarios: seeded payloads and a bidirectional transfer."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from resip.testing.pair import SessionPair

MIB = 1 << 20


def payload(seed: int, size: int) -> bytes:
    """Incompressible, reproducible bytes."""
    return random.Random(seed).randbytes(size)


def sha(data: bytes | bytearray) -> str:
    """Hex SHA-256, what every data test compares."""
    return hashlib.sha256(data).hexdigest()


@dataclass
class Transfer:
    """One channel carrying ``up`` bytes client->server and ``down`` bytes back."""

    pair: SessionPair
    channel: int
    up: bytes
    down: bytes

    @classmethod
    def start(
        cls, pair: SessionPair, *, up: int, down: int, seed: int, shutdown: bool = True
    ) -> Transfer:
        """Open a channel and queue both directions (the server writes once it accepts)."""
        channel = pair.open()
        up_data = payload(seed, up)
        down_data = payload(seed + 1, down)
        pair.client.write(channel, up_data, shutdown=shutdown)
        # The server's application answers as soon as the channel exists there.
        pair.server.log(channel)
        pair.server.write(channel, down_data, shutdown=shutdown)
        return cls(pair, channel, up_data, down_data)

    def complete(self) -> bool:
        """Both directions fully delivered."""
        return len(self.pair.server.log(self.channel).received) == len(self.up) and len(
            self.pair.client.log(self.channel).received
        ) == len(self.down)

    def run(self, *, limit: float) -> None:
        """Run the simulation until both directions are delivered (or ``limit`` seconds)."""
        self.pair.sim.run_until(self.pair.sim.now + limit, stop=self.complete)

    def assert_exact(self, seed: int) -> None:
        """Every byte in each direction, in order, exactly once (SHA-256 compared)."""
        got_up = self.pair.server.log(self.channel).received
        got_down = self.pair.client.log(self.channel).received
        assert len(got_up) == len(self.up), f"seed={seed}: up {len(got_up)}/{len(self.up)}"
        assert len(got_down) == len(self.down), (
            f"seed={seed}: down {len(got_down)}/{len(self.down)}"
        )
        assert sha(got_up) == sha(self.up), f"seed={seed}: upstream bytes differ"
        assert sha(got_down) == sha(self.down), f"seed={seed}: downstream bytes differ"
