"""``resip-proxy``: the client's command line (typer). The only place that configures logging.

``simulate`` runs the real session engine (both ends) through the shipped network
simulator, so anyone can see what ResIP does on a link like theirs in seconds,
without a server.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Annotated

import typer

from resip import __version__
from resip.testing.netsim import LinkSpec
from resip.testing.pair import SessionPair

app = typer.Typer(
    name="resip-proxy",
    help="ResIP client proxy: SOCKS5 and HTTP CONNECT on localhost over one resilient session.",
    no_args_is_help=True,
    add_completion=False,
)


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = text.strip().lower().removesuffix("ib").removesuffix("b")
    factor = units.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in units else text
    try:
        value = int(float(number) * factor)
    except ValueError as exc:
        raise typer.BadParameter(f"not a size: {text!r} (try 10MiB)") from exc
    if value <= 0:
        raise typer.BadParameter("size must be positive")
    return value


@app.command()
def simulate(
    loss: Annotated[float, typer.Option(min=0.0, max=0.999, help="Random loss, 0..0.999.")] = 0.3,
    rtt_ms: Annotated[float, typer.Option(min=0.0, help="Round-trip time in ms.")] = 50.0,
    rate_mbit: Annotated[float, typer.Option(min=0.01, help="Bottleneck in Mbit/s.")] = 20.0,
    size: Annotated[str, typer.Option(help="Bytes to send each way, e.g. 4MiB.")] = "4MiB",
    outage: Annotated[
        float, typer.Option(min=0.0, help="Seconds of total outage in mid-transfer.")
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="Simulator seed (runs are reproducible).")] = 1,
) -> None:
    """Run a transfer through a simulated impaired link and report goodput and stats."""
    nbytes = _size(size)
    spec = LinkSpec(
        delay=rtt_ms / 2000,
        loss=loss,
        rate_bps=rate_mbit * 1e6,
        queue_bytes=max(16_000, int(rate_mbit * 1e6 / 8 * 0.1)),
    )
    pair = SessionPair.create(seed=seed, link=spec)
    channel = pair.open()
    up, down = os.urandom(nbytes), os.urandom(nbytes)
    pair.client.write(channel, up, shutdown=True)
    pair.server.log(channel)
    pair.server.write(channel, down, shutdown=True)
    if outage:
        pair.sim.outage("client", "server", start=0.5, end=0.5 + outage)
    started = time.perf_counter()

    def complete() -> bool:
        return (
            len(pair.server.log(channel).received) == nbytes
            and len(pair.client.log(channel).received) == nbytes
        )

    pair.sim.run_until(outage + 24 * 3600.0, stop=complete)
    real = time.perf_counter() - started
    ok_up = (
        hashlib.sha256(pair.server.log(channel).received).digest() == hashlib.sha256(up).digest()
    )
    ok_down = (
        hashlib.sha256(pair.client.log(channel).received).digest() == hashlib.sha256(down).digest()
    )
    sim_time = pair.sim.now
    stats = pair.client.session.stats(now=sim_time)
    goodput = nbytes * 8 / max(sim_time - outage, 1e-9) / 1e6
    typer.echo(
        f"link: {rate_mbit:g} Mbit/s, RTT {rtt_ms:g} ms, loss {loss:.1%}, outage {outage:g} s"
    )
    typer.echo(f"moved {nbytes:,} bytes each way in {sim_time:.1f} simulated s ({real:.1f} s real)")
    typer.echo(
        f"goodput {goodput:.2f} Mbit/s each way = {goodput / (rate_mbit * (1 - loss)):.0%} "
        "of what the lossy link can carry"
    )
    typer.echo(
        f"client: RTT {stats.rtt_smoothed * 1000:.0f} ms (min {stats.rtt_min * 1000:.0f}), "
        f"loss estimate {stats.loss_estimate:.1%}, {stats.packets_sent:,} packets sent, "
        f"{stats.retransmissions:,} records retransmitted, {stats.outages} outage(s)"
    )
    if not (ok_up and ok_down):
        typer.echo("DATA MISMATCH: this is a bug, please report it with the seed", err=True)
        raise typer.Exit(2)
    typer.echo("every byte arrived, in order, exactly once (SHA-256 checked both ways)")


@app.command()
def version() -> None:
    """Print the ResIP version."""
    typer.echo(__version__)


if __name__ == "__main__":
    app()
