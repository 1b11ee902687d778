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
import shlex
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import RESIP_PROXY, Process, ServerHandle, free_tcp_port, running

SSHD = Path("/usr/sbin/sshd")
SIZE = 20 << 20


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root: sshd only logs in as the user it runs as, and must run as root"
    if not SSHD.is_file():
        return f"{SSHD} not installed (apt-get install openssh-server; scripts/install-test-deps)"
    for tool in ("ssh", "scp", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (apt-get install openssh-client)"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")


def _banner(port: int) -> bool:
    """Whether an SSH server answers on 127.0.0.1:port (not just anything listening)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
            return sock.recv(64).startswith(b"SSH-2.0-")
    except OSError:
        return False


@dataclass(frozen=True)
class Sshd:
    """A private sshd accepting ``key`` for root on 127.0.0.1:``port``."""

    process: Process
    port: int
    key: Path


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    """sshd -D -e with a throwaway config, host key and authorized user key."""
    directory = tmp_path / "sshd"
    directory.mkdir()
    host_key = directory / "host_ed25519"
    user_key = directory / "user_ed25519"
    for key in (host_key, user_key):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "resip-e2e", "-f", str(key)],
            check=True,
            capture_output=True,
            timeout=30,
        )
    authorized = directory / "authorized_keys"
    authorized.write_text(user_key.with_suffix(".pub").read_text())
    port = free_tcp_port()
    config = directory / "sshd_config"
    config.write_text(
        f"""\
ListenAddress 127.0.0.1:{port}
HostKey {host_key}
PidFile none
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile {authorized}
# scp uses the SFTP protocol since OpenSSH 9.0.
Subsystem sftp internal-sftp
LogLevel VERBOSE
"""
    )
    # sshd refuses to start without its compiled-in privilege separation directory, which
    # only the distribution's service unit creates.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    argv = [str(SSHD), "-f", str(config), "-D", "-e"]
    with running(argv, tmp_path / "sshd.log", what="sshd") as proc:
        proc.wait_for(lambda: _banner(port), f"sshd banner on port {port}")
        yield Sshd(proc, port, user_key)


def _ssh_options(sshd: Sshd, client_config: Path) -> list[str]:
    proxy_command = shlex.join(
        [*RESIP_PROXY, "connect", "%h", "%p", "--config", str(client_config)]
    )
    return [
        "-F",
        "/dev/null",  # no user or system ssh_config can change what is tested
        "-o",
        f"ProxyCommand={proxy_command}",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "ConnectTimeout=30",
        "-o",
        "LogLevel=ERROR",
        "-i",
        str(sshd.key),
    ]


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
