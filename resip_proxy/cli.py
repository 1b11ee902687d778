"""``resip-proxy``: the client's command line (typer). The only place that configures logging.

- ``init URI`` writes the client config from an enrolment URI.
- ``run`` serves SOCKS5 + HTTP proxy on one local port over one resilient session,
  until Ctrl-C or SIGTERM (exit 0); config and server errors are one line, exit 1.
- ``connect HOST PORT`` joins stdin/stdout to one channel (an ssh ProxyCommand), through
  the running ``run`` when there is one (resip_proxy.connect).
- ``demo`` runs an embedded server and the proxy on loopback with throwaway keys.
- ``status`` shows the running proxy's live status from its control socket
  (``--once`` or no terminal: one frame, ``--json``: the snapshot; exit 1 if no proxy runs).
- ``simulate`` runs the real session engine (both ends) through the shipped network
  simulator, so anyone can see what ResIP does on a link like theirs in seconds,
  without a server.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from resip import __version__
from resip.core.errors import ConfigError

if TYPE_CHECKING:
    from resip_proxy.client import SessionManager
    from resip_proxy.config import ClientConfig
    from resip_proxy.frontend import ProxyFrontend

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
    # Imported here, as every command's heavy parts are: start-up is connect's latency.
    from resip.testing.netsim import LinkSpec
    from resip.testing.pair import SessionPair

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


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="Client config file (default: ~/.config/resip/proxy.toml)."
    ),
]
ListenOption = Annotated[
    str | None,
    typer.Option("--listen", "-l", help="Proxy address HOST:PORT (default: 127.0.0.1:1080)."),
]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")]
ControlSocketOption = Annotated[
    Path | None,
    typer.Option(
        "--control-socket",
        help="Status socket (default: $XDG_RUNTIME_DIR/resip/proxy.sock, or /tmp/resip-$UID/).",
    ),
]


def _setup_logging(level: int) -> None:
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def _pin(cfg: ClientConfig, fingerprint: str) -> None:
    from resip_proxy.config import save_fingerprint

    save_fingerprint(cfg, fingerprint)


def _load(config: Path | None) -> ClientConfig:
    from resip_proxy.config import default_config_path, load_client_config

    return load_client_config(config or default_config_path())


async def _until_stopped() -> None:
    """Return on SIGINT or SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)


def _run_async(main: Callable[[], Awaitable[None]]) -> None:
    """Run ``main``; user-facing errors become one line and exit status 1."""
    from resip_proxy.client import ClientError

    async def wrapper() -> None:
        await main()

    try:
        asyncio.run(wrapper())
    except (ClientError, ConfigError) as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        pass


async def _serve_proxy(manager: SessionManager, listen: tuple[str, int]) -> ProxyFrontend:
    from resip_proxy.client import ClientError
    from resip_proxy.frontend import ProxyFrontend

    frontend = ProxyFrontend(manager, listen=listen)
    try:
        await frontend.start()
    except OSError as exc:
        raise ClientError(
            f"cannot listen on {listen[0]}:{listen[1]}: {exc.strerror or exc}"
        ) from None
    return frontend


@contextlib.asynccontextmanager
async def _control(
    manager: SessionManager, path: Path | None, listen: tuple[str, int]
) -> AsyncIterator[None]:
    """Serve the status socket (resip_proxy.control) while the proxy runs; never fatal.

    ``listen`` (the proxy's bound address) lets ``connect`` use this proxy.
    """
    from resip_proxy.control import ControlError, ControlServer

    server = ControlServer(manager, path, listen=listen)
    try:
        await server.start()
    except ControlError as exc:
        logging.getLogger("resip_proxy").warning("no status socket: %s", exc)
    try:
        yield
    finally:
        await server.close()


@app.command()
def init(
    uri: Annotated[str, typer.Argument(help="Enrolment URI printed by `resip-server init`.")],
    config: ConfigOption = None,
    force: Annotated[bool, typer.Option(help="Replace an existing config.")] = False,
) -> None:
    """Write the client config from an enrolment URI (pins the server certificate)."""
    from resip_proxy.config import default_config_path, init_client

    path = config or default_config_path()
    try:
        cfg = init_client(uri, path, force=force)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        raise _fail(f"cannot write {path}: {exc.strerror or exc}") from None
    e = cfg.enrolment
    typer.echo(f"wrote {path} (server {e.host}:{e.api_port})")
    if e.fingerprint is None:
        typer.echo("no fingerprint in the URI: the certificate is pinned on first connection")
    typer.echo("next: resip-proxy run")


@app.command()
def run(
    config: ConfigOption = None,
    listen: ListenOption = None,
    verbose: VerboseOption = False,
    control_socket: ControlSocketOption = None,
) -> None:
    """Serve SOCKS5 and HTTP proxy on one local port through the server, until Ctrl-C."""
    from resip_proxy.client import SessionManager
    from resip_proxy.config import parse_listen

    _setup_logging(logging.DEBUG if verbose else logging.INFO)
    try:
        cfg = _load(config)
        address = parse_listen(listen) if listen else cfg.listen
    except ConfigError as exc:
        raise _fail(str(exc)) from None

    async def main() -> None:
        manager = SessionManager(cfg.enrolment, on_pin=lambda fp: _pin(cfg, fp))
        try:
            await manager.start()
            frontend = await _serve_proxy(manager, address)
            try:
                typer.echo(
                    f"proxy ready on {address[0]}:{frontend.address[1]} (SOCKS5 and HTTP)", err=True
                )
                async with _control(manager, control_socket, frontend.address):
                    await _until_stopped()
            finally:
                await frontend.close()
        finally:
            await manager.close()

    _run_async(main)


ProxySocketOption = Annotated[
    Path | None,
    typer.Option(
        "--control-socket",
        help="Where to look for a running `resip-proxy run` (default: as `run`).",
    ),
]
OwnSessionOption = Annotated[
    bool,
    typer.Option("--own-session", help="Always create a session, even when a proxy is running."),
]


@app.command()
def connect(
    host: Annotated[str, typer.Argument(help="Target host (resolved by the server).")],
    port: Annotated[int, typer.Argument(min=1, max=65535, help="Target port.")],
    config: ConfigOption = None,
    verbose: VerboseOption = False,
    control_socket: ProxySocketOption = None,
    own_session: OwnSessionOption = False,
) -> None:
    """Join stdin/stdout to HOST:PORT: ssh -o ProxyCommand='resip-proxy connect %h %p' host.

    Uses a running `resip-proxy run` of the same server if there is one;
    otherwise, or with --own-session, it creates a session of its own.
    stdin and stdout may be pipes, sockets, a terminal or files.
    On SIGHUP (from ssh), SIGTERM or SIGINT it closes channel and session
    at once and exits with 128 + the signal number.
    """
    from resip_proxy.connect import ConnectError, run_connect

    _setup_logging(logging.DEBUG if verbose else logging.WARNING)
    try:
        cfg = _load(config)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    # Not _run_async: that imports the session manager, which a connect through a
    # running proxy never needs (run_connect imports it only for a session of its own).
    try:
        status = asyncio.run(
            run_connect(
                cfg,
                host,
                port,
                control_socket=control_socket,
                own_session=own_session,
                on_pin=lambda fp: _pin(cfg, fp),
            )
        )
    except (ConnectError, ConfigError) as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:  # Ctrl-C before run_connect's own handler was in place
        status = 128 + signal.SIGINT
    if status:
        raise typer.Exit(status)


@app.command()
def demo(
    listen: ListenOption = None,
    verbose: VerboseOption = False,
    control_socket: ControlSocketOption = None,
) -> None:
    """Embedded server + proxy on loopback with throwaway keys; shows what to try."""
    from resip.server.acl import Acl
    from resip.server.app import ResipServer
    from resip.server.config import init_server
    from resip_proxy.client import SessionManager
    from resip_proxy.config import ClientConfig, parse_listen, write_client_config

    _setup_logging(logging.DEBUG if verbose else logging.INFO)  # as `run` does
    try:
        address = parse_listen(listen) if listen else ("127.0.0.1", 1080)
    except ConfigError as exc:
        raise _fail(str(exc)) from None

    async def main() -> None:
        with tempfile.TemporaryDirectory(prefix="resip-demo-") as tmp:
            server_cfg, enrolment = init_server(
                Path(tmp) / "server", public_host="127.0.0.1", listen_host="127.0.0.1"
            )
            # A local demo bound to 127.0.0.1: every target, loopback included, is allowed.
            acl = Acl.from_config(["allow 0.0.0.0/0", "allow ::/0"])
            server = ResipServer(server_cfg, acl=acl, api_port=0, resip_port=0)
            await server.start()
            try:
                enrolment = dataclasses.replace(
                    enrolment,
                    api_port=server.api_port,
                    udp_port=server.udp_port,
                    tcp_port=server.tcp_port,
                )
                manager = SessionManager(enrolment)
                try:
                    await manager.start()
                    frontend = await _serve_proxy(manager, address)
                    try:
                        host, port = frontend.address
                        proxy = f"{host}:{port}"
                        # Written once bound, so the file names the port really listened on.
                        client_config = Path(tmp) / "proxy.toml"
                        write_client_config(ClientConfig(client_config, enrolment, (host, port)))
                        typer.echo(
                            f"ResIP demo: server on 127.0.0.1:{server.api_port} (API), "
                            f"{server.udp_port} (UDP/TCP); proxy on {proxy}"
                        )
                        typer.echo("try:")
                        typer.echo(f"  curl --socks5-hostname {proxy} http://example.com/")
                        typer.echo(f"  curl --proxy http://{proxy} http://example.com/")
                        command = f"resip-proxy connect --config {client_config} %h %p"
                        typer.echo(f"  ssh -o ProxyCommand='{command}' user@host")
                        typer.echo(f"  chromium --proxy-server=socks5://{proxy}")
                        typer.echo("Ctrl-C to stop.")
                        async with _control(manager, control_socket, frontend.address):
                            await _until_stopped()
                    finally:
                        await frontend.close()
                finally:
                    await manager.close()
            finally:
                await server.stop("demo finished")
        typer.echo("demo stopped")

    _run_async(main)


@app.command()
def status(
    control_socket: ControlSocketOption = None,
    once: Annotated[bool, typer.Option("--once", help="Print one frame and exit.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the JSON snapshot and exit.")
    ] = False,
) -> None:
    """Live status of the running proxy (q quits); see docs/STATUS.md.

    Without a terminal on stdout it prints one frame and exits, as ``--once`` does.
    """
    import json

    from rich.console import Console

    from resip_proxy.control import ControlError, default_socket_path, fetch_status
    from resip_proxy.tui import RateHistory, render_status, run_live

    path = control_socket or default_socket_path()
    console = Console()
    try:
        # A live view into a pipe (cron, ssh without -t) would show nothing and never end.
        if as_json or once or not console.is_terminal:
            doc = asyncio.run(fetch_status(path))
            if as_json:
                typer.echo(json.dumps(doc, indent=2))
            else:
                history = RateHistory()
                history.add(doc)
                size = console.size
                console.print(
                    render_status(doc, history=history, height=size.height, width=size.width)
                )
            return
        asyncio.run(run_live(path, console))
    except ControlError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        pass


@app.command()
def version() -> None:
    """Print the ResIP version."""
    typer.echo(__version__)


if __name__ == "__main__":
    app()
