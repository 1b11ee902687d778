"""The command lines, invoked as users invoke them (typer's runner, real files)."""

from __future__ import annotations

import stat
from pathlib import Path

from typer.testing import CliRunner

from resip.core.enrol import parse_uri
from resip.server.certs import cert_fingerprint
from resip.server.cli import app as server_app
from resip_proxy.cli import app as proxy_app

runner = CliRunner()


def test_server_init_writes_config_and_prints_enrolment_uri_last(tmp_path: Path) -> None:
    result = runner.invoke(server_app, ["init", "--dir", str(tmp_path / "srv"), "--public-host",
                                        "203.0.113.5"])  # fmt: skip
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    enrolment = parse_uri(last)
    assert enrolment.host == "203.0.113.5"
    assert enrolment.fingerprint == cert_fingerprint((tmp_path / "srv" / "cert.pem").read_bytes())
    config = tmp_path / "srv" / "config.toml"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert enrolment.api_key in config.read_text()


def test_server_init_refuses_to_overwrite(tmp_path: Path) -> None:
    assert runner.invoke(server_app, ["init", "--dir", str(tmp_path)]).exit_code == 0
    again = runner.invoke(server_app, ["init", "--dir", str(tmp_path)])
    assert again.exit_code == 1
    assert "--force" in again.output


def test_simulate_reports_exact_delivery() -> None:
    result = runner.invoke(proxy_app, ["simulate", "--loss", "0.3", "--size", "256KiB"])
    assert result.exit_code == 0, result.output
    assert "every byte arrived" in result.output
    assert "262,144 bytes each way" in result.output


def test_simulate_rejects_a_bad_size() -> None:
    result = runner.invoke(proxy_app, ["simulate", "--size", "lots"])
    assert result.exit_code == 2
    assert "not a size" in result.output


def test_version() -> None:
    assert runner.invoke(proxy_app, ["version"]).output.strip() == "0.1.0"
    assert runner.invoke(server_app, ["version"]).output.strip() == "0.1.0"
