"""Session API: authentication, failure limiting, limits, info, delete, JSON errors."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from resip import __version__
from resip.core.config import SessionConfig
from resip.core.session import Session
from resip.server.endpoint import Endpoint
from resip.server.http_api import FailureLimiter, make_api

if TYPE_CHECKING:
    from aiohttp.test_utils import TestClient

API_KEY = "k" * 32
ADMIN_KEY = "a" * 32
AUTH = {"Authorization": f"Bearer {API_KEY}"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Service:
    """The app's SessionService on a bare Endpoint (no sockets)."""

    server_start = "start-token"

    def __init__(self, max_sessions: int = 3) -> None:
        self.endpoint: Endpoint[Session] = Endpoint.generate(
            SessionConfig(), max_sessions=max_sessions
        )
        self.closed: list[bytes] = []

    def create_session(self) -> dict[str, object]:
        _, creds = self.endpoint.create_session(0.0, lambda session: session)
        creds.update(udp_port=1, tcp_port=1, server_start=self.server_start)
        return creds

    def close_session(self, session_id: bytes) -> bool:
        session = self.endpoint.get(session_id)
        if session is None:
            return False
        session.close(0, "api", now=0.0)
        self.closed.append(session_id)
        self.endpoint.remove(session_id)
        return True


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def service() -> Service:
    return Service()


@pytest.fixture
async def client(aiohttp_client: Any, service: Service, clock: FakeClock) -> TestClient[Any, Any]:
    limiter = FailureLimiter(max_failures=20, window=60.0, clock=clock)
    app = make_api(service, api_keys=(API_KEY, ADMIN_KEY), limiter=limiter)
    return await aiohttp_client(app)  # type: ignore[no-any-return]


async def test_create_session_returns_every_credential(
    client: TestClient[Any, Any], service: Service
) -> None:
    resp = await client.post("/v1/sessions", headers=AUTH)
    assert resp.status == 200
    body = await resp.json()
    assert set(body) == {
        "session_id",
        "secret",
        "suite",
        "hp_key_id",
        "hp_key",
        "packet_size",
        "udp_port",
        "tcp_port",
        "server_start",
        "idle_timeout",
    }
    assert service.endpoint.get(bytes.fromhex(body["session_id"])) is not None
    assert body["server_start"] == "start-token"


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing Authorization header"),
        ({"Authorization": f"Basic {API_KEY}"}, "malformed Authorization header"),
        ({"Authorization": "Bearer"}, "malformed Authorization header"),
        ({"Authorization": "Bearer wrong-key-wrong-key-wrong"}, "invalid API key"),
        ({"Authorization": f"Bearer {API_KEY}x"}, "invalid API key"),
        ({"Authorization": "Bearer k\u00e9y"}, "invalid API key"),
    ],
)
async def test_bad_authorization_is_401_json(
    client: TestClient[Any, Any], service: Service, headers: dict[str, str], message: str
) -> None:
    resp = await client.post("/v1/sessions", headers=headers)
    assert resp.status == 401
    body = await resp.json()
    assert message in body["error"]
    assert len(service.endpoint) == 0


async def test_admin_key_is_accepted(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/v1/info", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert resp.status == 200


async def test_repeated_failures_from_one_address_get_429(
    client: TestClient[Any, Any], clock: FakeClock
) -> None:
    bad = {"Authorization": "Bearer nope-nope-nope-nope"}
    for _ in range(20):
        assert (await client.post("/v1/sessions", headers=bad)).status == 401
    resp = await client.post("/v1/sessions", headers=bad)
    assert resp.status == 429
    assert "too many failed" in (await resp.json())["error"]
    assert int(resp.headers["Retry-After"]) >= 1
    # Blocked even with the right key until the window passes: guessing stays slow.
    assert (await client.post("/v1/sessions", headers=AUTH)).status == 429
    clock.now += 61
    assert (await client.post("/v1/sessions", headers=AUTH)).status == 200


async def test_session_limit_is_503(client: TestClient[Any, Any]) -> None:
    for _ in range(3):
        assert (await client.post("/v1/sessions", headers=AUTH)).status == 200
    resp = await client.post("/v1/sessions", headers=AUTH)
    assert resp.status == 503
    assert "maximum of 3 sessions" in (await resp.json())["error"]


async def test_info_needs_auth_and_reports_start_token(client: TestClient[Any, Any]) -> None:
    assert (await client.get("/v1/info")).status == 401
    resp = await client.get("/v1/info", headers=AUTH)
    assert resp.status == 200
    assert await resp.json() == {"server_start": "start-token", "version": __version__}


async def test_delete_closes_the_session(client: TestClient[Any, Any], service: Service) -> None:
    session_id = (await (await client.post("/v1/sessions", headers=AUTH)).json())["session_id"]
    assert (await client.delete(f"/v1/sessions/{session_id}")).status == 401
    resp = await client.delete(f"/v1/sessions/{session_id}", headers=AUTH)
    assert resp.status == 204
    assert service.closed == [bytes.fromhex(session_id)]
    resp = await client.delete(f"/v1/sessions/{session_id}", headers=AUTH)
    assert resp.status == 404
    assert session_id in (await resp.json())["error"]
    resp = await client.delete("/v1/sessions/not-hex", headers=AUTH)
    assert resp.status == 400
    assert "16 hexadecimal digits" in (await resp.json())["error"]


async def test_unknown_routes_and_methods_are_json(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/nowhere", headers=AUTH)
    assert resp.status == 404
    assert "no such endpoint" in (await resp.json())["error"]
    resp = await client.get("/v1/sessions", headers=AUTH)
    assert resp.status == 405
    assert "not allowed" in (await resp.json())["error"]


async def test_service_failure_is_500_without_traceback(
    client: TestClient[Any, Any], service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom() -> dict[str, object]:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(service, "create_session", boom)
    resp = await client.post("/v1/sessions", headers=AUTH)
    assert resp.status == 500
    text = await resp.text()
    assert "secret internals" not in text
    assert (await resp.json()) == {"error": "internal server error"}


def test_limiter_memory_is_bounded() -> None:
    clock = FakeClock()
    limiter = FailureLimiter(max_failures=2, window=60.0, max_sources=10, clock=clock)
    for i in range(100):
        limiter.failed(f"10.0.0.{i}")
    assert len(limiter._failures) == 10
    limiter.failed("x")
    limiter.failed("x")
    assert limiter.retry_after("x") == pytest.approx(60.0)
    clock.now += 60.5
    assert limiter.retry_after("x") is None


def test_make_api_needs_a_key() -> None:
    with pytest.raises(ValueError, match="at least one API key"):
        make_api(Service(), api_keys=("",))
