"""``resip-server``: the server's command line (typer). Configures logging; reads config files.

Commands that exist work end to end; the session API and packet endpoints
(``resip-server run``) arrive with the end-to-end milestone.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from resip import __version__
from resip.enrol import DEFAULT_API_PORT, DEFAULT_RESIP_PORT, format_uri
from resip.errors import ConfigError
from resip.server.config import init_server

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
def version() -> None:
    """Print the ResIP version."""
    typer.echo(__version__)


if __name__ == "__main__":
    app()
