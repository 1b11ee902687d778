"""A throwaway OpenSSH server and client options, shared by the ssh end-to-end and lab tests."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")


def sshd_missing() -> str | None:
    """Why a real sshd cannot run here, or None if it can."""
    if os.geteuid() != 0:
        return "needs root: sshd only logs in as the user it runs as, and must run as root"
    if not SSHD.is_file():
        return f"{SSHD} not installed (apt-get install openssh-server; scripts/install-test-deps)"
    for tool in ("ssh", "scp", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (apt-get install openssh-client)"
    return None


def write_sshd_config(directory: Path, listen: str) -> tuple[Path, Path]:
    """Host and user keys plus an sshd_config accepting the user key for root on ``listen``.

    Returns ``(config, user_key)``. ``listen`` is ``HOST:PORT``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    host_key = directory / "host_ed25519"
    user_key = directory / "user_ed25519"
    for key in (host_key, user_key):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "resip-test", "-f", str(key)],
            check=True,
            capture_output=True,
            timeout=30,
        )
    authorized = directory / "authorized_keys"
    authorized.write_text(user_key.with_suffix(".pub").read_text())
    config = directory / "sshd_config"
    config.write_text(
        f"""\
ListenAddress {listen}
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
    return config, user_key


def sshd_argv(config: Path) -> list[str]:
    """sshd in the foreground, logging to stderr."""
    return [str(SSHD), "-f", str(config), "-D", "-e"]


def ssh_options(user_key: Path, proxy_command: Sequence[str]) -> list[str]:
    """Options that make ssh/scp use only ``proxy_command`` and ``user_key``, non-interactively."""
    return [
        "-F",
        "/dev/null",  # no user or system ssh_config can change what is tested
        "-o",
        f"ProxyCommand={shlex.join(proxy_command)}",
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
        str(user_key),
    ]
