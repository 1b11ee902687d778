"""Real OpenSSH through ``resip-proxy connect`` as the ProxyCommand.

A private ``sshd`` (root, 127.0.0.1, ephemeral port, temporary host and user keys, no PAM)
is the target; the ResIP server runs as its own process (``conftest.resip_server``) and is
allowed to reach loopback. ``ssh`` runs a command and ``scp`` uploads 20 MiB of random data,
both with ``ProxyCommand='python -m resip_proxy.cli connect %h %p --config CFG'``: the
ProxyCommand's stdin/stdout is the only path ssh has, so success means every byte crossed
a ResIP session. Skipped (with the reason) unless root with sshd, ssh and scp installed
(``scripts/install-test-deps`` installs them).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from tests.sshd_support import ssh_options, sshd_missing

from .conftest import RESIP_PROXY, ServerHandle, Sshd

SIZE = 20 << 20


pytestmark = pytest.mark.skipif(sshd_missing() is not None, reason=sshd_missing() or "")


def _ssh_options(sshd: Sshd, client_config: Path) -> list[str]:
    return ssh_options(
        sshd.key, [*RESIP_PROXY, "connect", "%h", "%p", "--config", str(client_config)]
    )


def _run(argv: list[str], sshd: Sshd, server: ServerHandle) -> str:
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=45, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 0, (
        f"{argv[0]} exited {result.returncode}\nstdout:\n{result.stdout}\n"
        f"stderr:\n{result.stderr}\n{sshd.process.describe()}\n{server.process.describe()}"
    )
    return result.stdout


@pytest.mark.timeout(60)
def test_ssh_command_through_resip(sshd: Sshd, resip_server: ServerHandle) -> None:
    argv = [
        "ssh",
        *_ssh_options(sshd, resip_server.client_config),
        "-p",
        str(sshd.port),
        "root@127.0.0.1",
        "echo hello-resip; uname -s",
    ]
    assert _run(argv, sshd, resip_server) == "hello-resip\nLinux\n"


@pytest.mark.timeout(60)
def test_scp_20_mib_through_resip(sshd: Sshd, resip_server: ServerHandle, tmp_path: Path) -> None:
    source = tmp_path / "random.bin"
    data = os.urandom(SIZE)
    source.write_bytes(data)
    target = tmp_path / "received.bin"
    argv = [
        "scp",
        "-q",
        *_ssh_options(sshd, resip_server.client_config),
        "-P",
        str(sshd.port),
        str(source),
        f"root@127.0.0.1:{target}",
    ]
    _run(argv, sshd, resip_server)
    received = target.read_bytes()
    assert len(received) == SIZE
    assert hashlib.sha256(received).hexdigest() == hashlib.sha256(data).hexdigest()
