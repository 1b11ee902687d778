"""``resip-proxy connect`` as ssh's ProxyCommand leaves nothing behind, and uses a running proxy.

Real processes only: ``resip-server run`` (one for this module, so its session count is
this module's alone), a private ``sshd`` as the target, ``ssh`` and ``resip-proxy``.
The server's ``/v1/admin/status`` says which sessions and channels it holds; the
kernel's socket table (``/proc/net/tcp``) says which connections sshd has open.

- ssh ends its ProxyCommand with SIGHUP: after several ssh sessions the server must
  hold no session or channel more than before, and sshd no connection more.
- ``connect`` killed with SIGHUP or SIGTERM in mid-connection: the same.
- With ``resip-proxy run`` up (found through its control socket, which
  ``RESIP_CONTROL_SOCKET`` names), ``connect`` is a channel of that proxy's session:
  the server's session count does not move and the proxy's status lists the channel.

Skipped unless root with sshd, ssh and ssh-keygen installed (``scripts/install-test-deps``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from resip_proxy.control import fetch_status
from tests.sshd_support import ssh_options, sshd_missing

from .conftest import (
    POLL_INTERVAL,
    RESIP_PROXY,
    ServerHandle,
    Sshd,
    held,
    running,
    start_resip_server,
)

pytestmark = [
    pytest.mark.skipif(sshd_missing() is not None, reason=sshd_missing() or ""),
    pytest.mark.timeout(90),
]

#: ssh sessions in a row (the issue's bench used 20; each takes about a second).
ROUNDS = 5
#: How long the server and sshd get to let go of a closed session and its connection.
SETTLE = 10.0
#: TCP states in /proc/net/tcp that hold a connection open: ESTABLISHED and CLOSE_WAIT
#: (the peer closed, the owner has not).
_OPEN_STATES = {"01", "08"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    """A resip-server of this module's own."""
    with start_resip_server(tmp_path_factory.mktemp("connect-server")) as handle:
        yield handle


def target_connections(port: int) -> int:
    """Open TCP connections whose local port is ``port`` (sshd's side of each session)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] in _OPEN_STATES:
                    count += 1
    return count


def _env(control_socket: Path) -> dict[str, str]:
    return dict(os.environ, RESIP_CONTROL_SOCKET=str(control_socket))


def _until(condition: Callable[[], bool], what: Callable[[], str]) -> None:
    """Poll state held by other processes until ``condition``; fail after SETTLE s."""
    deadline = time.monotonic() + SETTLE
    while not condition():
        assert time.monotonic() < deadline, what()
        time.sleep(POLL_INTERVAL)  # polling other processes' state with a deadline


def _settled(server: ServerHandle, sshd: Sshd, base: tuple[int, int], conns: int) -> None:
    """The server holds no more than ``base`` and sshd no more than ``conns`` connections."""

    def clean() -> bool:
        now = held(server)
        return now[0] <= base[0] and now[1] <= base[1] and target_connections(sshd.port) <= conns

    _until(
        clean,
        lambda: (
            f"after {SETTLE} s the server holds (sessions, channels) {held(server)}, "
            f"{base} before; sshd has {target_connections(sshd.port)} connections, "
            f"{conns} before\n{server.process.describe()}"
        ),
    )


def _ssh(sshd: Sshd, server: ServerHandle, command: str, env: dict[str, str]) -> str:
    proxy = [*RESIP_PROXY, "connect", "%h", "%p", "--config", str(server.client_config)]
    argv = ["ssh", *ssh_options(sshd.key, proxy), "-p", str(sshd.port), "root@127.0.0.1", command]
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=45, stdin=subprocess.DEVNULL, env=env
    )
    assert result.returncode == 0, (
        f"ssh exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}\n"
        f"{sshd.process.describe()}"
    )
    return result.stdout


def _connect(
    server: ServerHandle, sshd: Sshd, env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    """``connect`` to sshd with pipes (``sleep 30 | connect | cat``), past the SSH banner."""
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [*RESIP_PROXY, "connect", "127.0.0.1", str(sshd.port),
             "--config", str(server.client_config)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=env,
        )  # fmt: skip
    assert proc.stdout is not None
    banner = proc.stdout.readline()
    assert banner.startswith(b"SSH-2.0-"), f"{banner!r}; connect said:\n{log.read_text()}"
    return proc


def _stop(proc: subprocess.Popen[bytes], sig: int) -> int:
    """Send ``sig``; the exit status."""
    try:
        proc.send_signal(sig)
        code = proc.wait(timeout=SETTLE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()
    return code


def test_ssh_sessions_leave_no_session_channel_or_connection(
    server: ServerHandle, sshd: Sshd, tmp_path: Path
) -> None:
    env = _env(tmp_path / "no-proxy.sock")
    base, conns = held(server), target_connections(sshd.port)
    for i in range(ROUNDS):
        assert _ssh(sshd, server, f"echo round-{i}", env) == f"round-{i}\n"
    _settled(server, sshd, base, conns)


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM], ids=["SIGHUP", "SIGTERM"])
def test_a_killed_connect_leaves_no_session_channel_or_connection(
    server: ServerHandle, sshd: Sshd, tmp_path: Path, sig: signal.Signals
) -> None:
    env = _env(tmp_path / "no-proxy.sock")
    base, conns = held(server), target_connections(sshd.port)
    log = tmp_path / "connect.log"
    proc = _connect(server, sshd, env, log)
    assert held(server) == (base[0] + 1, base[1] + 1)
    assert target_connections(sshd.port) == conns + 1
    code = _stop(proc, sig)
    _settled(server, sshd, base, conns)
    assert code == 128 + sig, f"exit {code}; connect said:\n{log.read_text()}"


def _proxy_channels(control: Path, port: int) -> list[dict[str, object]]:
    doc = asyncio.run(fetch_status(control))
    return [c for c in doc["channels"] if c["target"] == f"127.0.0.1:{port}"]


def test_connect_goes_through_a_running_proxy(
    server: ServerHandle, sshd: Sshd, tmp_path: Path
) -> None:
    control = tmp_path / "ctl" / "proxy.sock"
    argv = [*RESIP_PROXY, "run", "--config", str(server.client_config),
            "--listen", "127.0.0.1:0", "--control-socket", str(control)]  # fmt: skip
    with running(argv, tmp_path / "proxy.log", what="resip-proxy run") as proxy:
        proxy.wait_for(control.exists, f"the control socket {control}")
        env = _env(control)
        base, conns = held(server), target_connections(sshd.port)
        assert _ssh(sshd, server, "echo via-proxy", env) == "via-proxy\n"
        assert held(server)[0] == base[0], "connect created a session of its own"
        _until(
            lambda: not _proxy_channels(control, sshd.port),
            lambda: f"after ssh ended the proxy still has {_proxy_channels(control, sshd.port)}",
        )

        log = tmp_path / "connect.log"
        proc = _connect(server, sshd, env, log)
        channels = _proxy_channels(control, sshd.port)
        assert [c["state"] for c in channels] == ["open"], channels
        assert channels[0]["local_peer"] is not None
        assert held(server)[0] == base[0], "connect created a session of its own"
        code = _stop(proc, signal.SIGHUP)
        assert code == 128 + signal.SIGHUP, f"exit {code}; connect said:\n{log.read_text()}"
        _until(
            lambda: not _proxy_channels(control, sshd.port),
            lambda: f"the proxy still has {_proxy_channels(control, sshd.port)}",
        )
        _settled(server, sshd, base, conns)
