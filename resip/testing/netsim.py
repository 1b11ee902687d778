"""Deterministic network simulator with a virtual clock, for sans-IO endpoints.

Contract:

- Endpoints are sans-IO objects satisfying :class:`SimEndpoint` (the client
  ``Session`` and the server ``Endpoint`` both do). The simulator is the only
  thing that calls them, and it always passes the virtual time ``now=``.
- The clock *jumps* from event to event (deliveries, endpoint timers, scheduled
  callbacks). Cost is O(datagrams + timer firings + callbacks) and never grows
  with simulated time: 72 idle hours with 15 s keepalives is ~50k events.
- Fully deterministic: every random draw comes from one ``random.Random(seed)``,
  endpoints are visited in insertion order, and simultaneous events are ordered
  by a monotonically increasing sequence number. Same seed, same endpoints =>
  identical trace.
- Addressing: a node sends from its *current* address (what the receiver sees
  as ``path``); a datagram goes to whichever node owns the destination address,
  both when it is sent (to pick the link) and when it arrives (a node that has
  rebound away no longer receives traffic for its old address: "no-route").
- Datagrams between two nodes only travel over a configured :meth:`NetSim.link`;
  with no link, or no owner of the destination address, they are dropped as
  "no-route".
- Per datagram, in this order: MTU check, outage check (at the send instant),
  bottleneck queue (tail drop, FIFO serialisation at ``rate_bps``), random loss
  (after the bottleneck, so lost datagrams still used capacity), then delivery
  at ``serialised + delay + U(0, jitter) [+ reorder_delay]``, possibly twice.
- Misbehaving endpoints are caught instead of hanging the test: a timer that
  keeps firing at one instant, a ``datagrams_to_send`` that never drains, or a
  zero-delay event storm that never lets the clock advance raise RuntimeError.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Protocol

__all__ = [
    "DeliverHook",
    "Fate",
    "LinkSpec",
    "LinkStats",
    "NetSim",
    "SimEndpoint",
    "SimStats",
    "TraceRecord",
]


class SimEndpoint(Protocol):
    """What the simulator drives: a sans-IO endpoint fed with virtual time."""

    def receive_datagram(self, data: bytes, path: Hashable, *, now: float) -> None:
        """Consume one datagram that arrived from address ``path``."""
        ...

    def datagrams_to_send(self, *, now: float) -> list[tuple[bytes, Hashable]]:
        """Return queued ``(datagram, destination address)`` pairs; ``[]`` when drained."""
        ...

    def next_timer(self) -> float | None:
        """Absolute virtual time of the next deadline, or None for no timer."""
        ...

    def handle_timer(self, *, now: float) -> None:
        """Process every deadline that is due at ``now``."""
        ...


Fate = Literal[
    "sent",
    "lost",
    "outage",
    "mtu",
    "queue",
    "no-route",
    "delivered",
    "duplicated",
    "injected",
]
"""What happened to a datagram: one send-side record per datagram offered
("sent" or a drop reason; "injected" for :meth:`NetSim.inject`), one extra
"duplicated" when a copy is made, and one "delivered" per copy that arrives
(or "no-route" if its destination address lost its owner in flight)."""

DeliverHook = Callable[[str, bytes, Hashable, float], None]
"""``hook(node_name, data, src_path, now)``, called before each genuine delivery."""


class TraceRecord(NamedTuple):
    """One trace line: when, from which address, to which address, how big, what happened."""

    time: float
    src: Hashable
    dst: Hashable
    size: int
    fate: Fate


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """Behaviour of one direction of a link. All times in seconds."""

    delay: float = 0.025
    """One-way propagation delay."""
    jitter: float = 0.0
    """Extra delay drawn uniformly from [0, jitter]; large values reorder."""
    loss: float = 0.0
    """Probability that a datagram is dropped."""
    duplicate: float = 0.0
    """Probability that a datagram is delivered twice (copy gets its own jitter)."""
    reorder: float = 0.0
    """Probability that a datagram is held back by ``reorder_delay`` so later ones overtake it."""
    reorder_delay: float = 0.010
    rate_bps: float | None = None
    """Bottleneck serialisation rate in bits/s; None means infinitely fast."""
    queue_bytes: int = 64 * 1024
    """Bottleneck queue: a datagram that does not fit behind the bytes still awaiting
    serialisation is tail-dropped. Only meaningful with ``rate_bps``."""
    mtu: int = 1500
    """Datagrams larger than this are dropped."""

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"LinkSpec.{name}={p} is not a probability")
        for name in ("delay", "jitter", "reorder_delay"):
            if getattr(self, name) < 0.0:
                raise ValueError(f"LinkSpec.{name} must be >= 0")
        if self.rate_bps is not None and self.rate_bps <= 0.0:
            raise ValueError("LinkSpec.rate_bps must be > 0 or None")
        if self.queue_bytes < 0 or self.mtu <= 0:
            raise ValueError("LinkSpec.queue_bytes must be >= 0 and mtu > 0")


@dataclass(slots=True)
class LinkStats:
    """Counters for one direction ``a -> b`` of a link."""

    sent: int = 0
    """Datagrams offered to the link (before any drop)."""
    bytes_sent: int = 0
    delivered: int = 0
    """Copies handed to the receiver (duplicates included)."""
    bytes_delivered: int = 0
    duplicated: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    """Drops by reason: "lost", "outage", "mtu", "queue", "no-route"."""

    @property
    def dropped_total(self) -> int:
        """All drops, whatever the reason."""
        return sum(self.dropped.values())


@dataclass(slots=True)
class SimStats:
    """Simulator-wide counters. ``events`` is what the simulation's cost scales with."""

    events: int = 0
    """Deliveries + timer firings + callbacks processed."""
    deliveries: int = 0
    timer_fires: int = 0
    callbacks: int = 0
    injected: int = 0
    no_route: int = 0
    """Datagrams with no owner for their destination or no link to it."""
    links: dict[tuple[str, str], LinkStats] = field(default_factory=dict)


@dataclass(slots=True)
class _Node:
    name: str
    ep: SimEndpoint
    addr: Hashable
    owned: list[Hashable]
    # Bumped by rebind/bounce so a superseded bounce schedule stops itself.
    generation: int = 0


@dataclass(slots=True)
class _Direction:
    spec: LinkSpec
    stats: LinkStats
    busy_until: float = 0.0


@dataclass(slots=True)
class _Delivery:
    dst: str
    data: bytes
    src_addr: Hashable
    dst_addr: Hashable
    link: tuple[str, str] | None
    """None for injected datagrams, which bypass links and the deliver hook."""


_Event = _Delivery | Callable[[], None]


class NetSim:
    """Event-driven network of named nodes joined by impaired links; see the module docstring."""

    def __init__(
        self,
        *,
        seed: int,
        trace: bool = False,
        trace_limit: int | None = 100_000,
        max_timer_fires_per_instant: int = 1000,
        max_events_per_instant: int = 1_000_000,
        max_send_calls_per_drain: int = 100_000,
    ) -> None:
        """Create an empty network at virtual time 0.0.

        ``trace`` turns recording on; ``trace_limit`` keeps only the newest records
        (None = unbounded, mind memory on long runs). The ``max_*`` limits are the
        busy-loop guards.
        """
        self.seed = seed
        self.rng = random.Random(seed)
        self.trace_enabled = trace
        self.trace: deque[TraceRecord] = deque(maxlen=trace_limit)
        self.stats = SimStats()
        self.on_deliver: DeliverHook | None = None
        self._now = 0.0
        self._nodes: dict[str, _Node] = {}
        self._owners: dict[Hashable, str] = {}
        self._links: dict[tuple[str, str], _Direction] = {}
        self._outages: dict[tuple[str, str], list[tuple[float, float]]] = {}
        self._heap: list[tuple[float, int, _Event]] = []
        self._seq = itertools.count()
        self._max_timer_fires = max_timer_fires_per_instant
        self._max_events_per_instant = max_events_per_instant
        self._max_send_calls = max_send_calls_per_drain
        self._fires_now: dict[str, int] = {}
        self._events_now = 0

    # ------------------------------------------------------------------ topology

    @property
    def now(self) -> float:
        """Current virtual time in seconds (starts at 0.0, only moves forward)."""
        return self._now

    def add(self, name: str, ep: SimEndpoint, addr: Hashable) -> None:
        """Add node ``name`` running ``ep``, owning and sending from ``addr``."""
        if name in self._nodes:
            raise ValueError(f"node {name!r} already exists")
        self._claim(name, [addr])
        self._nodes[name] = _Node(name=name, ep=ep, addr=addr, owned=[addr])

    def endpoint(self, name: str) -> SimEndpoint:
        """The endpoint running on node ``name``."""
        return self._node(name).ep

    def address(self, name: str) -> Hashable:
        """The address node ``name`` currently sends from."""
        return self._node(name).addr

    def link(self, a: str, b: str, spec: LinkSpec, *, reverse: LinkSpec | None = None) -> None:
        """Join ``a`` and ``b``: ``spec`` for ``a -> b``; ``reverse`` (default ``spec``) back."""
        self.set_link(a, b, spec)
        self.set_link(b, a, spec if reverse is None else reverse)

    def set_link(self, a: str, b: str, spec: LinkSpec) -> None:
        """Create or change the single direction ``a -> b``; counters and queue carry over.

        Datagrams already in flight keep their schedule. Call it via :meth:`schedule`
        to change a link at a given virtual time.
        """
        self._node(a)
        self._node(b)
        d = self._links.get((a, b))
        if d is None:
            stats = LinkStats()
            self.stats.links[(a, b)] = stats
            self._links[(a, b)] = _Direction(spec=spec, stats=stats)
        else:
            d.spec = spec

    def link_stats(self, a: str, b: str) -> LinkStats:
        """Counters of direction ``a -> b``."""
        return self._links[(a, b)].stats

    def outage(self, a: str, b: str, *, start: float, end: float) -> None:
        """Drop everything sent between ``a`` and ``b`` (both ways) during ``[start, end)``.

        Datagrams already in flight when the outage starts still arrive.
        """
        self._node(a)
        self._node(b)
        if not end > start:
            raise ValueError("outage needs end > start")
        key = (a, b) if a <= b else (b, a)
        self._outages.setdefault(key, []).append((start, end))

    def rebind(self, name: str, new_addr: Hashable, *, at: float) -> None:
        """From ``at`` on, ``name`` sends from ``new_addr`` and only ``new_addr`` reaches it.

        Models NAT rebinding or a Wi-Fi -> LTE handover; cancels any running bounce.
        """
        node = self._node(name)

        def apply() -> None:
            node.generation += 1
            self._set_addresses(node, [new_addr], new_addr)

        self.schedule(at, apply)

    def bounce(
        self,
        name: str,
        addrs: Sequence[Hashable],
        *,
        start: float,
        every: float,
        end: float | None = None,
    ) -> None:
        """Multihoming: from ``start`` the node owns all of ``addrs`` and sends from them in turn.

        The sending address starts at ``addrs[0]`` and advances cyclically every
        ``every`` seconds until ``end`` (None = forever); afterwards it stays on the
        last one. Every address in ``addrs`` remains deliverable to the node, like a
        host with several interfaces. Each switch is one event, so cost is
        proportional to switches, not to time.
        """
        node = self._node(name)
        if not addrs:
            raise ValueError("bounce needs at least one address")
        if every <= 0.0:
            raise ValueError("bounce needs every > 0")
        owned = list(dict.fromkeys(addrs))
        cycle = list(addrs)

        def switch(i: int, gen: int) -> None:
            if node.generation != gen:
                return  # superseded by a later rebind/bounce
            node.addr = cycle[i % len(cycle)]
            t_next = start + (i + 1) * every
            if end is None or t_next < end:
                self.schedule(t_next, lambda: switch(i + 1, gen))

        def begin() -> None:
            node.generation += 1
            self._set_addresses(node, owned, cycle[0])
            switch(0, node.generation)

        self.schedule(start, begin)

    def schedule(self, at: float, fn: Callable[[], None]) -> None:
        """Run ``fn()`` at virtual time ``at`` (after deliveries already queued for ``at``)."""
        if at < self._now:
            raise ValueError(f"cannot schedule at {at} < now {self._now}")
        heapq.heappush(self._heap, (at, next(self._seq), fn))

    def inject(self, src_addr: Hashable, dst: str, data: bytes, *, at: float | None = None) -> None:
        """Deliver ``data`` to node ``dst`` as if from ``src_addr`` (forged/off-path traffic).

        Bypasses links, loss and outages, is not passed to ``on_deliver``, and is
        delivered even if ``dst`` has no address. ``at`` defaults to now.
        """
        node = self._node(dst)
        t = self._now if at is None else at
        if t < self._now:
            raise ValueError(f"cannot inject at {t} < now {self._now}")
        self.stats.injected += 1
        self._record(t, src_addr, node.addr, len(data), "injected")
        item = _Delivery(dst=dst, data=data, src_addr=src_addr, dst_addr=node.addr, link=None)
        heapq.heappush(self._heap, (t, next(self._seq), item))

    # ------------------------------------------------------------------ running

    def run_for(self, dt: float, *, stop: Callable[[], bool] | None = None) -> None:
        """Run for ``dt`` virtual seconds; see :meth:`run_until`."""
        self.run_until(self._now + dt, stop=stop)

    def run_until(self, t: float, *, stop: Callable[[], bool] | None = None) -> None:
        """Process every event up to and including time ``t``, then set ``now = t``.

        ``stop()`` is checked once before starting and after every event; when it
        returns true the run ends early with ``now`` at that event's time.
        """
        if t < self._now:
            raise ValueError(f"cannot run back in time to {t} < now {self._now}")
        # Endpoints may have queued datagrams through API calls since the last run.
        self._drain()
        if stop is not None and stop():
            return
        while self._step(t):
            if stop is not None and stop():
                return
        self._advance(t)

    def next_event_time(self) -> float | None:
        """Time of the next delivery, callback or endpoint timer (past timers count as now)."""
        t, _ = self._next()
        return None if math.isinf(t) else t

    def in_flight(self) -> int:
        """Datagrams scheduled for delivery but not yet delivered."""
        return sum(1 for _, _, ev in self._heap if isinstance(ev, _Delivery))

    # ------------------------------------------------------------------ internals

    def _node(self, name: str) -> _Node:
        try:
            return self._nodes[name]
        except KeyError:
            raise KeyError(f"unknown node {name!r}") from None

    def _claim(self, name: str, addrs: Sequence[Hashable]) -> None:
        for addr in addrs:
            owner = self._owners.get(addr)
            if owner is not None and owner != name:
                raise ValueError(f"address {addr!r} already belongs to node {owner!r}")
        for addr in addrs:
            self._owners[addr] = name

    def _set_addresses(self, node: _Node, owned: list[Hashable], current: Hashable) -> None:
        for addr in node.owned:
            if self._owners.get(addr) == node.name:
                del self._owners[addr]
        try:
            self._claim(node.name, owned)
        except ValueError:
            self._claim(node.name, node.owned)  # leave the topology as it was
            raise
        node.owned = owned
        node.addr = current

    def _record(self, t: float, src: Hashable, dst: Hashable, size: int, fate: Fate) -> None:
        if self.trace_enabled:
            self.trace.append(TraceRecord(t, src, dst, size, fate))

    def _advance(self, t: float) -> None:
        if t > self._now:
            self._now = t
            self._fires_now.clear()
            self._events_now = 0

    def _next(self) -> tuple[float, str | None]:
        """Earliest pending time, and the node whose timer it is (None: the heap wins ties)."""
        best = math.inf
        who: str | None = None
        for node in self._nodes.values():
            deadline = node.ep.next_timer()
            if deadline is None:
                continue
            deadline = max(deadline, self._now)
            if deadline < best:
                best, who = deadline, node.name
        if self._heap and self._heap[0][0] <= best:
            # Deliveries first at equal times: an ACK arriving exactly at the
            # retransmission deadline should be seen before the timer fires.
            return self._heap[0][0], None
        return best, who

    def _step(self, t_end: float) -> bool:
        t, who = self._next()
        if t > t_end:
            return False
        self._advance(t)
        self._events_now += 1
        if self._events_now > self._max_events_per_instant:
            raise RuntimeError(
                f"simulation not advancing: more than {self._max_events_per_instant} events "
                f"at t={self._now} (zero-delay loop?)"
            )
        self.stats.events += 1
        if who is None:
            _, _, ev = heapq.heappop(self._heap)
            if isinstance(ev, _Delivery):
                self._deliver(ev)
            else:
                self.stats.callbacks += 1
                ev()
        else:
            fires = self._fires_now.get(who, 0)
            if fires >= self._max_timer_fires:
                raise RuntimeError(
                    f"timer not advancing: endpoint {who!r} still reports next_timer() <= "
                    f"now={self._now} after {fires} handle_timer calls at this instant"
                )
            self._fires_now[who] = fires + 1
            self.stats.timer_fires += 1
            self._nodes[who].ep.handle_timer(now=self._now)
        self._drain()
        return True

    def _deliver(self, ev: _Delivery) -> None:
        node = self._nodes[ev.dst]
        if ev.link is not None:
            stats = self._links[ev.link].stats
            # The owner is checked again on arrival: after a rebind the old
            # address no longer leads to the node (NAT mapping gone).
            if self._owners.get(ev.dst_addr) != ev.dst:
                stats.dropped["no-route"] = stats.dropped.get("no-route", 0) + 1
                self.stats.no_route += 1
                self._record(self._now, ev.src_addr, ev.dst_addr, len(ev.data), "no-route")
                return
            stats.delivered += 1
            stats.bytes_delivered += len(ev.data)
        self.stats.deliveries += 1
        self._record(self._now, ev.src_addr, ev.dst_addr, len(ev.data), "delivered")
        if ev.link is not None and self.on_deliver is not None:
            self.on_deliver(ev.dst, ev.data, ev.src_addr, self._now)
        node.ep.receive_datagram(ev.data, ev.src_addr, now=self._now)

    def _drain(self) -> None:
        for node in self._nodes.values():
            calls = 0
            while True:
                out = node.ep.datagrams_to_send(now=self._now)
                if not out:
                    break
                calls += 1
                if calls > self._max_send_calls:
                    raise RuntimeError(
                        f"datagrams_to_send of {node.name!r} never returns [] "
                        f"(more than {self._max_send_calls} calls at t={self._now})"
                    )
                for data, dst_addr in out:
                    self._send(node, data, dst_addr)

    def _in_outage(self, a: str, b: str) -> bool:
        windows = self._outages.get((a, b) if a <= b else (b, a))
        if not windows:
            return False
        now = self._now
        return any(start <= now < end for start, end in windows)

    def _drop(self, stats: LinkStats, reason: Fate, src: Hashable, dst: Hashable, n: int) -> None:
        stats.dropped[reason] = stats.dropped.get(reason, 0) + 1
        self._record(self._now, src, dst, n, reason)

    def _send(self, node: _Node, data: bytes, dst_addr: Hashable) -> None:
        now = self._now
        src_addr = node.addr
        size = len(data)
        dst_name = self._owners.get(dst_addr)
        d = None if dst_name is None else self._links.get((node.name, dst_name))
        if dst_name is None or d is None:
            self.stats.no_route += 1
            self._record(now, src_addr, dst_addr, size, "no-route")
            return
        spec, stats, rng = d.spec, d.stats, self.rng
        stats.sent += 1
        stats.bytes_sent += size
        if size > spec.mtu:
            self._drop(stats, "mtu", src_addr, dst_addr, size)
            return
        if self._in_outage(node.name, dst_name):
            self._drop(stats, "outage", src_addr, dst_addr, size)
            return
        depart = now
        if spec.rate_bps is not None:
            start = max(now, d.busy_until)
            backlog = (start - now) * spec.rate_bps / 8.0
            # Tail drop: the datagram must fit behind what still awaits serialisation.
            if backlog + size > spec.queue_bytes:
                self._drop(stats, "queue", src_addr, dst_addr, size)
                return
            d.busy_until = depart = start + size * 8.0 / spec.rate_bps
        if spec.loss > 0.0 and rng.random() < spec.loss:
            self._drop(stats, "lost", src_addr, dst_addr, size)
            return
        self._record(now, src_addr, dst_addr, size, "sent")
        copies = 1
        if spec.duplicate > 0.0 and rng.random() < spec.duplicate:
            copies = 2
            stats.duplicated += 1
            self._record(now, src_addr, dst_addr, size, "duplicated")
        for _ in range(copies):
            at = depart + spec.delay
            if spec.jitter > 0.0:
                at += rng.uniform(0.0, spec.jitter)
            if spec.reorder > 0.0 and rng.random() < spec.reorder:
                at += spec.reorder_delay
            item = _Delivery(dst_name, data, src_addr, dst_addr, (node.name, dst_name))
            heapq.heappush(self._heap, (at, next(self._seq), item))
