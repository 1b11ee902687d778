"""The transport policy in the simulator: a real client and server session, UDP and TCP paths.

The lab tests (tests/lab) check the same rules with real sockets in network namespaces;
here they run in simulated time, deterministically, in a fraction of a second: UDP
blocked mid-download moves to TCP within 5 s and the download completes byte-exact;
UDP coming back is taken back at the next retry; a TCP path that dies leads back to
UDP; a restarted server means a new session that carries traffic again.
"""

from __future__ import annotations

import random

from resip.testing.netsim import NetSim
from resip_proxy.transport_events import (
    AskServerStart,
    PolicyConfig,
    RecreateSession,
    TransportState,
    Via,
)
from tests.sim.conftest import MIB, payload, sha

from .policy_harness import BLOCKED, TCP_LINK, PolicyClient

S = TransportState


def setup(seed: int, **config: float) -> tuple[NetSim, PolicyClient]:
    sim = NetSim(seed=seed)
    client = PolicyClient(sim, random.Random(seed), PolicyConfig(**config))  # type: ignore[arg-type]
    return sim, client


def download(client: PolicyClient, size: int, seed: int) -> tuple[int, bytes]:
    """Open a channel; the server sends ``size`` bytes down it once it exists."""
    channel = client.session.open_channel("example.com", 443, now=client.sim.now)
    data = payload(seed, size)
    client.server.peer.write(channel, data, shutdown=True)
    return channel, data


def received(client: PolicyClient, channel: int) -> bytearray:
    return client.log(channel).received


def switch_time(client: PolicyClient, to: Via, after: float) -> float | None:
    return next((t for t, via in client.transports if via is to and t >= after), None)


def test_udp_blocked_mid_download_moves_to_tcp_within_5_s_and_returns_when_it_is_back() -> None:
    sim, client = setup(seed=1)
    channel, data = download(client, 4 * MIB, seed=10)
    # Mid-download, as in the lab: past the start-up, whose queue drops stretch patience.
    sim.run_until(30.0, stop=lambda: len(received(client, channel)) > 2 * MIB)
    assert client.transport is Via.UDP
    blocked = sim.now
    client.block_udp(blocked)
    sim.run_until(blocked + 5.0, stop=lambda: client.transport is Via.TCP)
    moved = switch_time(client, Via.TCP, blocked)
    assert moved is not None and moved - blocked < 5.0, client.transports
    sim.run_until(sim.now + 60.0, stop=lambda: len(received(client, channel)) == len(data))
    assert sha(received(client, channel)) == sha(data)
    assert sim.link_stats("server", "client-tcp").bytes_delivered > MIB  # the rest, over TCP
    # UDP comes back: taken at the next retry (every 30 s, answered within 3 s).
    restored = sim.now
    client.block_udp(restored, blocked=False)
    sim.run_until(restored + 35.0, stop=lambda: client.transport is Via.UDP)
    assert client.checked.state is S.UDP_OK
    assert client.tcp_open is None, "the fallback connection is closed once UDP is back"
    channel, data = download(client, MIB // 4, seed=11)
    before = sim.link_stats("server", "client").bytes_delivered
    sim.run_until(sim.now + 30.0, stop=lambda: len(received(client, channel)) == len(data))
    assert sha(received(client, channel)) == sha(data)
    assert sim.link_stats("server", "client").bytes_delivered - before > len(data)


def test_udp_blocked_from_the_start_uses_tcp_alone() -> None:
    sim, client = setup(seed=2)
    client.block_udp(0.0)
    channel, data = download(client, MIB // 2, seed=12)
    sim.run_until(5.0, stop=lambda: client.transport is Via.TCP)
    assert client.transport is Via.TCP and sim.now < 4.0  # udp_timeout 3 s + TCP
    sim.run_until(sim.now + 30.0, stop=lambda: len(received(client, channel)) == len(data))
    assert sha(received(client, channel)) == sha(data)
    assert sim.link_stats("server", "client-tcp").bytes_delivered > len(data)


def test_a_lost_tcp_fallback_leads_back_to_udp_and_a_new_race() -> None:
    sim, client = setup(seed=3, udp_retry=300.0)
    client.block_udp(0.0)
    sim.run_until(5.0, stop=lambda: client.transport is Via.TCP)
    channel, data = download(client, MIB, seed=13)
    sim.run_until(sim.now + 30.0, stop=lambda: len(received(client, channel)) > MIB // 4)
    # The TCP path dies silently (our address vanished): silence while data waits.
    lost = sim.now
    sim.link("client-tcp", "server", BLOCKED)
    sim.run_until(lost + 30.0, stop=lambda: switch_time(client, Via.UDP, lost) is not None)
    back = switch_time(client, Via.UDP, lost)
    # 5 s of TCP silence while the download waits, then a 1 s probe.
    assert back is not None and back - lost < 7.0, client.transports
    # TCP works again, UDP does not: the next race (fresh socket vs. TCP) takes TCP.
    sim.link("client-tcp", "server", TCP_LINK)
    sim.run_until(sim.now + 30.0, stop=lambda: client.transport is Via.TCP)
    sim.run_until(sim.now + 60.0, stop=lambda: len(received(client, channel)) == len(data))
    assert sha(received(client, channel)) == sha(data)


def test_a_restarted_server_means_a_new_session() -> None:
    sim, client = setup(seed=4)
    channel, data = download(client, 8 * MIB, seed=14)
    sim.run_until(30.0, stop=lambda: len(received(client, channel)) > MIB // 2)
    first = client.session
    client.restart_server(sim.now)
    restarted = sim.now
    sim.run_until(restarted + 30.0, stop=lambda: client.session is not first)
    assert client.session is not first, client.checked.log[-5:]
    # Neither path answered, the API said the server restarted, the session was replaced.
    assert client.checked.actions_of(AskServerStart)
    assert client.checked.actions_of(RecreateSession)
    assert client.tcp_open is None
    sim.run_until(sim.now + 10.0, stop=lambda: client.checked.state is S.UDP_OK)
    assert client.checked.state is S.UDP_OK
    channel, data = download(client, MIB // 4, seed=15)
    sim.run_until(sim.now + 30.0, stop=lambda: len(received(client, channel)) == len(data))
    assert sha(received(client, channel)) == sha(data)


def test_an_address_change_stays_on_udp() -> None:
    sim, client = setup(seed=5)
    channel, data = download(client, MIB, seed=16)
    sim.run_until(30.0, stop=lambda: len(received(client, channel)) > MIB // 4)
    sim.rebind("client", ("10.9.9.9", 40000), at=sim.now)
    sim.run_until(sim.now + 60.0, stop=lambda: len(received(client, channel)) == len(data))
    assert sha(received(client, channel)) == sha(data)
    # The server follows the new address over UDP (roaming): no fallback needed.
    assert client.transports == [(0.0, Via.UDP)]
    assert client.tcp_open is None
