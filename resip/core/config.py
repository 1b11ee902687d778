"""Tunable parameters of a session, with their units and the reason for each default.

Timing constants live here, grouped, so the engine's behaviour can be read in one
place (mosh's ``transportsender.h`` habit). Tests change behaviour through these
fields, never by reaching into private state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from resip.core.congestion import CongestionConfig
from resip.core.crypto import KeyLimits
from resip.core.errors import ConfigError

HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Everything a :class:`~resip.core.session.Session` can be tuned with."""

    # -- packets --------------------------------------------------------------
    #: Largest datagram we send. 1200 is QUIC's safe minimum: it fits IPv6's 1280-byte
    #: minimum MTU and most tunnels, so we never depend on path-MTU discovery.
    packet_size: int = 1200
    #: Pad every datagram to exactly ``packet_size`` (hides sizes; costs bandwidth).
    pad_packets: bool = False

    # -- acknowledgements -------------------------------------------------------
    #: Longest we hold an ACK back after an ack-eliciting packet (PROTOCOL.md §6).
    max_ack_delay: float = 0.025
    #: Acknowledge at once after this many ack-eliciting packets.
    ack_every: int = 2

    # -- liveness and outages ---------------------------------------------------
    #: The client sends a keep-alive after this much silence; it also keeps NAT bindings.
    keepalive_interval: float = 15.0
    #: Cap of the probe backoff during an outage, so service resumes within this long
    #: (plus two round trips) after the link returns.
    probe_backoff_cap: float = 30.0
    #: Probe timeouts in a row without any answer before we call it an outage.
    outage_after_probes: int = 3
    #: ...and at least this much silence: on a 90 %-loss link a few quiet probe
    #: timeouts are normal and must not switch the sender to probing only.
    outage_min_silence: float = 10.0
    #: A session with no authenticated packet for this long is closed (both sides).
    #: 96 h so a 72-hour outage is survived with a day to spare.
    idle_timeout: float = 96 * HOUR
    #: A server that cannot validate a new client address within this many probe
    #: timeouts falls back to the last validated one.
    path_validation_ptos: int = 3

    # -- channels and memory ----------------------------------------------------
    #: Receive window per channel, in records (~1.2 KB each, so ~19 MB): at 600 ms RTT
    #: and 30-50 % loss the head of the window waits several round trips for its
    #: repairs, and 4096 records capped goodput at half the link (measured with
    #: scripts/bench_sim.py). Memory is only used while a bulk channel is out of order.
    channel_window: int = 16384
    #: Bytes a channel's ``send`` buffers before it pushes back on the application.
    channel_send_buffer: int = 1 << 20
    #: Bytes all channels of a session may buffer for sending, together.
    session_send_buffer: int = 64 << 20
    #: Largest message (the unit of compression) cut from a stream.
    message_size: int = 16 << 10
    #: Compress stream messages with zstd when it makes them smaller.
    compress: bool = True
    #: Datagrams (UDP channels) waiting longer than this to be sent are dropped:
    #: stale UDP is worse than none (DNS retries, games move on).
    datagram_max_age: float = 30.0
    #: Datagrams a UDP channel queues for sending before dropping new ones.
    datagram_queue: int = 256
    #: Channels the peer may have open at once (server side limit).
    max_channels: int = 4096

    # -- crypto and congestion --------------------------------------------------
    key_limits: KeyLimits = field(default_factory=KeyLimits)
    congestion: CongestionConfig = field(default_factory=CongestionConfig)

    def __post_init__(self) -> None:
        if not 256 <= self.packet_size <= 65535:
            raise ConfigError(f"packet_size must be 256..65535, not {self.packet_size}")
        if self.channel_window < 16:
            raise ConfigError("channel_window must be at least 16 records")
        if self.probe_backoff_cap <= 0 or self.keepalive_interval <= 0:
            raise ConfigError("probe_backoff_cap and keepalive_interval must be positive")
        if self.idle_timeout <= self.keepalive_interval:
            raise ConfigError("idle_timeout must exceed keepalive_interval")
        if self.message_size < 1024:
            raise ConfigError("message_size must be at least 1024 bytes")
