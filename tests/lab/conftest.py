"""Lab fixtures: a real resip-server and resip-proxy in two namespaces behind ``scripts/netlab``.

A fresh lab per test (building it costs a few seconds): the server namespace runs
``resip-server run`` and an HTTP server on its loopback serving random 20 MiB and 8 MiB
files; the client namespace runs ``resip-proxy run`` on 127.0.0.1:1080. Results (goodput,
times) go to ``record_property`` and, when ``RESIP_LAB_RESULTS`` names a file, are appended
to it as JSON lines for the benchmarks.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from resip.lab import labstack
from resip.lab.labstack import LogTail, wait_tcp
from tests.sshd_support import ssh_options, sshd_argv, sshd_missing, write_sshd_config

NETLAB = Path(__file__).resolve().parents[2] / "scripts" / "netlab"
BLOB_SIZE = 20 << 20
#: The file of the event tests (blackhole, address change, UDP block): smaller, to keep CI
#: time sane; the events happen mid-transfer all the same.
SMALL_SIZE = 8 << 20
HTTP_PORT = 8080
PROXY = "127.0.0.1:1080"
#: RESIP_LAB_VERBOSE=1: the proxy and ssh's ProxyCommand log every transport decision.
VERBOSE = os.environ.get("RESIP_LAB_VERBOSE") == "1"


netlab = labstack.load_netlab(NETLAB)


class Download:
    """A curl download through the proxy, running in the client namespace."""

    def __init__(self, stack: Stack, out: Path, max_time: float, name: str) -> None:
        self.out = out
        self.name = name
        self.started = time.monotonic()
        self.proc = stack.lab.popen(
            "client",
            ["curl", "-sS", "--fail", "--max-time", str(int(max_time)), "--socks5-hostname",
             PROXY, f"http://127.0.0.1:{HTTP_PORT}/{name}", "-o", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.finished: float | None = None

    def size(self) -> int:
        try:
            return self.out.stat().st_size
        except FileNotFoundError:
            return 0

    def wait_bytes(self, nbytes: int, timeout: float) -> None:
        """Wait until ``nbytes`` arrived (polling the file: curl offers no event)."""
        deadline = time.monotonic() + timeout
        while self.size() < nbytes:
            assert self.proc.poll() is None, f"curl ended early: {self.stderr()}"
            assert time.monotonic() < deadline, f"only {self.size()} bytes after {timeout} s"
            time.sleep(0.1)

    def close(self) -> None:
        """Close curl's stderr pipe (the lab has stopped curl by now)."""
        if self.proc.stderr is not None:
            with contextlib.suppress(OSError):
                self.proc.stderr.close()

    def wait_exit(self, timeout: float) -> bool:
        """Whether curl ended within ``timeout`` seconds."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def stderr(self) -> str:
        return self.proc.stderr.read() if self.proc.stderr and self.proc.poll() is not None else ""

    def finish(self, timeout: float) -> float:
        """Wait for curl; assert success and a byte-exact file; return the elapsed seconds."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            if self.proc.stderr is not None:
                self.proc.stderr.close()  # a failed test must not leak the pipe into others
            raise AssertionError(
                f"download not done after {timeout} s ({self.size()} bytes)"
            ) from None
        self.finished = time.monotonic()
        err = self.stderr()
        assert self.proc.stderr is not None
        self.proc.stderr.close()
        assert rc == 0, f"curl failed (exit {rc}): {err}"
        digest = hashlib.sha256(self.out.read_bytes()).hexdigest()
        assert digest == _digests[self.name], "downloaded file differs from the served one"
        return self.finished - self.started


_digests: dict[str, str] = {}

SSHD_PORT = 2222


class SshSession:
    """``ssh ... sh`` from the client namespace, ProxyCommand ``resip-proxy connect``.

    Lines written to it are shell commands run on the server side; their output is
    collected with arrival times, like a log.
    """

    def __init__(self, stack: Stack, user_key: Path) -> None:
        proxy_command = [sys.executable, "-m", "resip_proxy.cli", "connect", "%h", "%p",
                         "--config", str(stack.workdir / "proxy.toml"),
                         *(["--verbose"] if VERBOSE else [])]  # fmt: skip
        self.errors = stack.workdir / "ssh.stderr"
        with self.errors.open("w") as errors:  # the child keeps its own descriptor
            self.proc = stack.lab.popen(
                "client",
                ["ssh", *ssh_options(user_key, proxy_command), "-p", str(SSHD_PORT),
                 "root@127.0.0.1", "sh"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors,
                text=True, bufsize=1,
            )  # fmt: skip
        self.output = LogTail(self.proc.stdout)

    def send(self, command: str) -> float:
        """Type ``command``; returns when (monotonic) it was written."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return time.monotonic()

    def expect(self, pattern: str, timeout: float, after: float = 0.0) -> float:
        """Wait for an output line matching ``pattern``; returns its arrival time."""
        at = self.output.wait_for(pattern, timeout, after)
        assert at is not None, (
            f"no {pattern!r} from ssh within {timeout} s (ssh exit {self.proc.poll()})\n"
            f"output: {self.output.text()[-500:]}\nstderr: {self.errors.read_text()[-2000:]}"
        )
        return at

    def close(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self.output.close()


class Stack:
    """The lab plus the server, proxy and HTTP server running in it."""

    def __init__(self, lab: Any, workdir: Path, uri: str, server_log: LogTail) -> None:
        self.lab = lab
        self.workdir = workdir
        self.uri = uri
        self.server_log = server_log
        self._proxy_log: LogTail | None = None
        self._n = 0
        self._closers: list[Callable[[], None]] = []

    @property
    def proxy_log(self) -> LogTail:
        """The proxy's stderr (the proxy must be running)."""
        assert self._proxy_log is not None, "the proxy is not started"
        return self._proxy_log

    def start_proxy(self) -> float:
        """Start the proxy; return the time it was started (monotonic)."""
        started = time.monotonic()
        self._proxy_log = start_proxy(self.lab, self.workdir, self.uri)
        return started

    def close_logs(self) -> None:
        for close in self._closers:
            close()
        for log in (self._proxy_log, self.server_log):
            if log is not None:
                log.close()

    def reset(self) -> None:
        self.lab.reset()

    def ssh(self) -> SshSession:
        """A real sshd in the server namespace and an ssh session to it through ResIP."""
        reason = sshd_missing()
        if reason is not None:
            pytest.skip(f"ssh lab test {reason}")
        config, user_key = write_sshd_config(self.workdir / "sshd", f"127.0.0.1:{SSHD_PORT}")
        with (self.workdir / "sshd.log").open("w") as sshd_log:
            self.lab.popen("server", sshd_argv(config), stdout=subprocess.DEVNULL, stderr=sshd_log)
        _wait_tcp(self.lab, "server", "127.0.0.1", SSHD_PORT, 15)
        session = SshSession(self, user_key)
        self._closers.append(session.close)
        return session

    def download(self, max_time: float = 120, *, small: bool = False) -> Download:
        """Start fetching the 20 MiB file (or the 8 MiB one with ``small``)."""
        self._n += 1
        name = "small" if small else "blob"
        download = Download(self, self.workdir / f"out-{self._n}", max_time, name)
        # A test that fails mid-download must not leak curl's stderr pipe into later tests.
        self._closers.append(download.close)
        return download


def _wait_tcp(lab: Any, where: str, host: str, port: int, timeout: float) -> None:
    assert wait_tcp(lab, where, host, port, timeout), (
        f"{host}:{port} not listening in {where} after {timeout} s"
    )


def record(request: pytest.FixtureRequest, **values: Any) -> None:
    """Attach measured numbers to the test report (and RESIP_LAB_RESULTS, if set)."""
    for key, value in values.items():
        request.node.user_properties.append((key, value))
    path = os.environ.get("RESIP_LAB_RESULTS")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"test": request.node.name, **values}) + "\n")


@pytest.fixture(scope="session")
def www(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The HTTP server's directory: ``blob`` (20 MiB) and ``small`` (8 MiB), random."""
    reason = netlab.unavailable_reason()
    if reason is not None:
        pytest.skip(f"lab tests {reason}")
    if shutil.which("curl") is None:
        pytest.skip("lab tests need curl")
    www = tmp_path_factory.mktemp("www")
    for name, size in (("blob", BLOB_SIZE), ("small", SMALL_SIZE)):
        data = os.urandom(size)
        (www / name).write_bytes(data)
        _digests[name] = hashlib.sha256(data).hexdigest()
    return www


def start_proxy(lab: Any, work: Path, uri: str) -> LogTail:
    """``resip-proxy init`` + ``run`` in the client namespace; its stderr, once ready."""
    try:
        proxy = labstack.start_proxy(
            lab, work, uri, listen=PROXY, control_socket=work / "proxy.sock", verbose=VERBOSE
        )
    except labstack.LabStackError as exc:
        pytest.fail(str(exc))
    return proxy.log


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the item, so a fixture can tell that its test failed."""
    report = yield
    setattr(item, f"lab_report_{report.when}", report)
    return report


def _diagnose(st: Stack) -> str:
    """What a failed lab test leaves behind: the proxy's status snapshot and log tails."""
    parts = []
    if st._proxy_log is not None:
        status = st.lab.run_in(
            "client", [sys.executable, "-m", "resip_proxy.cli", "status", "--json",
             "--control-socket", str(st.workdir / "proxy.sock")],
            check=False, timeout=20,
        )  # fmt: skip
        parts.append(f"--- resip-proxy status --json\n{status.stdout}{status.stderr}")
        (st.workdir / "proxy.log").write_text(st._proxy_log.text())
        parts.append(f"--- proxy log tail\n{st._proxy_log.text()[-6000:]}")
    (st.workdir / "server.log").write_text(st.server_log.text())
    parts.append(f"--- server log tail\n{st.server_log.text()[-6000:]}")
    parts.append(f"--- full logs in {st.workdir}")
    with contextlib.suppress(Exception):
        parts.append(f"--- relay stats\n{json.dumps(st.lab.stats())}")
    return "\n".join(parts)


@pytest.fixture
def stack(www: Path, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """A fresh lab per test, so no test inherits another's transport or address state."""
    with _make_stack(www, tmp_path, with_proxy=True, request=request) as st:
        yield st


@pytest.fixture
def stack_without_proxy(
    www: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    """Like ``stack``, but the test starts the proxy (``stack.start_proxy()``) itself."""
    with _make_stack(www, tmp_path, with_proxy=False, request=request) as st:
        yield st


@contextlib.contextmanager
def _make_stack(
    www: Path, work: Path, *, with_proxy: bool, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    with netlab.Lab(seed=7) as lab:
        # The target is the server namespace's own loopback HTTP server: open it in the ACL.
        setup = labstack.init_server(
            work, lab.server_addr, ["127.0.0.0/8", f"{lab.server_addr}/32"]
        )
        server_log = labstack.start_server(lab, setup.config)
        labstack.start_http_server(lab, www, bind="127.0.0.1", port=HTTP_PORT)
        uri = setup.uri
        st = Stack(lab, work, uri, server_log)
        if with_proxy:
            st.start_proxy()
        try:
            yield st
            report = getattr(request.node, "lab_report_call", None)
            if report is not None and report.failed:
                # stderr of a fixture teardown is shown with the failure in the CI log
                sys.stderr.write(_diagnose(st) + "\n")
        finally:
            lab.close()  # stops the processes, so the log threads see EOF
            st.close_logs()
