"""``resip-server``: the server's command line (typer). Configures logging; reads config files.

``init`` writes a configuration; ``run`` serves it (HTTPS session API, UDP packets and the
TCP fallback) until SIGINT or SIGTERM, then closes every session with CLOSE code 3 and
exits 0. A bad configuration or an unusable port is one clear line on stderr and exit 1.
``status`` shows every session and channel of the running server (``GET /v1/admin/status``
with the config's admin key and pinned certificate); ``--json``/``--once`` print and exit, and
so does ``status`` without a terminal on stdout.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Annotated

import typer

from resip import __version__
from resip.core.enrol import DEFAULT_API_PORT, DEFAULT_RESIP_PORT, format_uri
from resip.core.errors import ConfigError
from resip.server.app import ResipServer, StartError
from resip.server.config import CONFIG_NAME, ServerConfig, init_server, load_server_config

app = typer.Typer(
    name="resip-server",
    help="ResIP server: carries TCP and UDP through lossy, roaming, long-outage links.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def init(
    directory: Annotated[
        Path, typer.Option("--dir", help="Where to write config and keys.")
    ] = Path("resip-server"),
    public_host: Annotated[
        str, typer.Option(help="Host name or IP clients use to reach this server.")
    ] = "127.0.0.1",
    api_port: Annotated[int, typer.Option(help="HTTPS session API port.")] = DEFAULT_API_PORT,
    resip_port: Annotated[
        int, typer.Option(help="UDP packet port (the TCP fallback uses the same number).")
    ] = DEFAULT_RESIP_PORT,
    listen_host: Annotated[str, typer.Option(help="Address to bind.")] = "0.0.0.0",  # noqa: S104
    force: Annotated[bool, typer.Option(help="Overwrite an existing configuration.")] = False,
) -> None:
    """Write a server config (TOML), a TLS CA + certificate, and an API key.

    The last line printed is the enrolment URI a client needs (``resip-proxy init URI``).
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        config, enrolment = init_server(
            directory,
            public_host=public_host,
            api_port=api_port,
            resip_port=resip_port,
            listen_host=listen_host,
            force=force,
        )
    except (ConfigError, OSError) as exc:
        typer.echo(f"resip-server init: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"wrote {directory / 'config.toml'} (keep it private: it holds the API key)")
    typer.echo(f"TLS certificate: {config.tls_cert}")
    typer.echo("enrolment URI for clients:")
    typer.echo(format_uri(enrolment))


@app.command()
def run(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="Server config written by 'resip-server init'.")
    ] = Path("resip-server") / CONFIG_NAME,
) -> None:
    """Serve the session API, the UDP packet endpoint and the TCP fallback until stopped."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_server_config(config)
    except ConfigError as exc:
        typer.echo(f"resip-server run: {exc}", err=True)
        raise typer.Exit(1) from None
    logging.getLogger().setLevel(cfg.log_level.upper())
    try:
        asyncio.run(_serve(cfg))
    except (StartError, ConfigError) as exc:
        typer.echo(f"resip-server run: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        pass


async def _serve(cfg: ServerConfig) -> None:
    server = ResipServer(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Before start(): a SIGTERM that arrives once the start-up is logged stops cleanly.
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await server.start()  # logs the addresses it serves (once: not again here)
    try:
        await stop.wait()
    finally:
        await server.stop("server shutting down")


def _admin_url(cfg: ServerConfig) -> str:
    """Where the running server's admin status is (a wildcard listen is reached on loopback)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(  # noqa: S104
        cfg.listen_host, cfg.listen_host
    )
    return f"https://{f'[{host}]' if ':' in host else host}:{cfg.api_port}/v1/admin/status"


@app.command()
def status(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="Server config written by 'resip-server init'.")
    ] = Path("resip-server") / CONFIG_NAME,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON and exit.")] = False,
    once: Annotated[bool, typer.Option("--once", help="Print one frame and exit.")] = False,
) -> None:
    """Live view of every session and channel of the running server (q quits).

    Without a terminal on stdout it prints one frame and exits, as ``--once`` does.
    """
    import json

    from rich.console import Console

    from resip.server.admin import AdminError, fetch_admin_status
    from resip.server.certs import cert_fingerprint
    from resip.ui.server_view import render_admin, run_admin_live

    try:
        cfg = load_server_config(config)
        fingerprint = cert_fingerprint(cfg.tls_cert.read_bytes())
    except (ConfigError, OSError) as exc:
        typer.echo(f"resip-server status: {exc}", err=True)
        raise typer.Exit(1) from None
    url = _admin_url(cfg)

    async def fetch() -> dict[str, object]:
        return await fetch_admin_status(url, admin_key=cfg.admin_key, fingerprint=fingerprint)

    console = Console()
    try:
        # A live view into a pipe (cron, ssh without -t) would show nothing and never end.
        if as_json or once or not console.is_terminal:
            doc = asyncio.run(fetch())
            if as_json:
                typer.echo(json.dumps(doc, indent=2))
            else:
                size = console.size
                console.print(render_admin(doc, height=size.height, width=size.width))
            return
        asyncio.run(run_admin_live(fetch, console))
    except AdminError as exc:
        typer.echo(f"resip-server status: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        pass


@app.command()
def version() -> None:
    """Print the ResIP version."""
    typer.echo(__version__)


if __name__ == "__main__":
    app()
