"""The status views are pure functions of a snapshot: render them and read the text."""

from __future__ import annotations

import re
import time

from rich.console import Console

from resip.ui.server_view import render_admin
from resip_proxy.tui import RateHistory, format_rate, render_status, sparkline

from .conftest import sample_channel, sample_snapshot


def text_of(renderable: object, *, width: int = 120, height: int = 40) -> str:
    console = Console(record=True, width=width, height=height, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_header_shows_state_server_transport_rtt_loss_and_rates() -> None:
    first = sample_snapshot()
    later = sample_snapshot(bytes={"sent": (3 << 20) + 125_000, "received": 5 << 20})
    later["uptime_s"] = first["uptime_s"] + 1.0
    history = RateHistory()
    history.add(first)
    history.add(later)
    out = text_of(render_status(later, history=history))
    assert "CONNECTED" in out
    assert "vpn.example.net" in out
    assert "transport UDP" in out
    assert "RTT 42.5 ms (min 30.0)" in out
    # Measured loss is called loss; retransmissions (spurious ones included) are not.
    assert "loss in 25.0% (measured)" in out
    assert "retransmitted 17 records (0.6% of packets)" in out  # of 3,000 packets sent
    assert "12.5%" not in out  # the controller's estimate is not shown as loss
    assert "up 1.0 Mbit/s" in out  # 125,000 bytes in 1 s
    assert "down 0 bit/s" in out


def test_states_fallback_and_outage_are_visible() -> None:
    out = text_of(render_status(sample_snapshot(state="tcp-fallback", transport="tcp")))
    assert "TCP-FALLBACK" in out and "transport TCP" in out
    assert "OUTAGE" in text_of(render_status(sample_snapshot(state="outage")))


def test_channel_row_and_event_log() -> None:
    snap = sample_snapshot(
        [sample_channel(7, target="db.internal:5432", local_peer="127.0.0.1:5555")]
    )
    out = text_of(render_status(snap))
    assert "db.internal:5432" in out
    assert "127.0.0.1:5555" in out
    assert "outage ended after 12.0 s" in out
    assert "19.0s ago" in out  # uptime 61 - t 42
    assert "channels (1, 0 active)" in out
    assert "1 shown" in out


def test_text_from_the_network_is_not_markup() -> None:
    snap = sample_snapshot([sample_channel(1, target="[bold red]evil[/]:80")])
    snap["events"].append({"t": 50.0, "kind": "channel-failed", "text": "[blink]x[/blink]"})
    out = text_of(render_status(snap))
    assert "[bold red]evil[/]:80" in out
    assert "[blink]x[/blink]" in out


def test_no_session_yet() -> None:
    snap = sample_snapshot()
    snap["session"] = None
    snap["channels"] = []
    out = text_of(render_status(snap))
    assert "no session yet" in out
    assert "channels (0, 0 active)" in out


def test_error_line_is_shown() -> None:
    out = text_of(render_status(sample_snapshot(), error="control socket does not answer"))
    assert "control socket does not answer" in out


def test_ten_thousand_channels_show_the_most_active_rows_that_fit_and_totals() -> None:
    channels = [sample_channel(i) for i in range(10_000)]
    channels[1234] = sample_channel(1234, idle_s=0.0, target="busiest.example:443")
    channels[4321] = sample_channel(4321, idle_s=0.5, target="second.example:443")
    snap = sample_snapshot(channels)
    started = time.perf_counter()
    out = text_of(render_status(snap, height=40), height=40)
    elapsed = time.perf_counter() - started
    lines = out.rstrip("\n").split("\n")
    assert len(lines) <= 40, f"frame is {len(lines)} lines for a 40-line terminal"
    assert "channels (10,000, 2 active)" in out
    assert "+9,982 more (9,982 idle)" in out  # 18 rows shown
    total_sent = sum(ch["bytes_sent"] for ch in channels)
    assert f"total sent {total_sent / (1 << 20):.1f} MiB" in out
    busiest = next(i for i, line in enumerate(lines) if "busiest.example" in line)
    second = next(i for i, line in enumerate(lines) if "second.example" in line)
    assert busiest < second
    assert "host9999.example" not in out  # an idle channel that does not fit
    assert elapsed < 2.0, f"rendering 10,000 channels took {elapsed:.2f} s"


def test_small_terminal_still_shows_a_row_and_totals() -> None:
    snap = sample_snapshot([sample_channel(i) for i in range(100)])
    out = text_of(render_status(snap, height=10, width=60), width=60, height=10)
    assert "+99 more (99 idle)" in out


def test_sparkline_blocks_scale_to_the_peak() -> None:
    assert sparkline([0, 4, 8], 3) == " ▄█"
    assert sparkline([1, 2, 3, 4], 2) == "▆█"
    assert sparkline([], 5) == ""
    assert sparkline([0, 0], 5) == "  "
    assert format_rate(1_500_000) == "1.5 Mbit/s"


def test_rate_history_restarts_with_a_new_session() -> None:
    history = RateHistory()
    a = sample_snapshot()
    b = sample_snapshot(session_id="ffffffffffffffff", bytes={"sent": 0, "received": 0})
    b["uptime_s"] = a["uptime_s"] + 1
    history.add(a)
    history.add(b)
    assert list(history.up) == []  # counters reset: no bogus negative or huge rate


def test_server_view_lists_sessions_and_channels() -> None:
    snap = {
        "version": 1,
        "resip_version": "0.1.0",
        "server_start": "x",
        "uptime_s": 5.0,
        "sessions": [
            {
                "id": "00112233445566aa",
                "client_addresses": ["198.51.100.4:50000"],
                "transport": "udp",
                "state": "connected",
                "address_changes": 0,
                "rtt_ms": {"smoothed": 12.0, "min": 10.0},
                "loss": 0.0,
                "last_packet_age_s": 0.1,
                "bytes": {"sent": 2048, "received": 1024},
                "retransmissions": 0,
                "outages": 0,
                "channels": [
                    {
                        "id": 3,
                        "kind": "tcp",
                        "target": "example.org:443",
                        "state": "open",
                        "bytes_sent": 10,
                        "bytes_received": 20,
                        "in_flight": 0,
                        "age_s": 1.0,
                        "idle_s": 0.1,
                    }
                ],
            }
        ],
        "dropped_packets": {"malformed": 0, "unknown_session": 0, "wrong_direction": 0},
    }
    out = text_of(render_admin(snap))
    assert "1 sessions, 1 channels" in out
    assert "00112233445566aa" in out and "198.51.100.4:50000" in out
    assert "example.org:443" in out


def lines_of(renderable: object, *, width: int, height: int) -> list[str]:
    return text_of(renderable, width=width, height=height).rstrip("\n").split("\n")


def test_event_kind_and_text_are_separated_by_a_space() -> None:
    snap = sample_snapshot()
    snap["events"].append(
        {"t": 50.0, "kind": "channel-failed", "text": "127.0.0.1:18997: connection refused"}
    )
    out = text_of(render_status(snap))
    assert "channel-failed 127.0.0.1:18997: connection refused" in out


def test_80x24_frame_fits_and_keeps_every_field_and_the_state_column_whole() -> None:
    channels = [sample_channel(i, target=f"a-rather-long-host-name-{i}.example.org:443")
                for i in range(40)]  # fmt: skip
    snap = sample_snapshot(channels)
    snap["events"].append({"t": 50.0, "kind": "channel-failed", "text": "x " * 60})
    lines = lines_of(render_status(snap, width=80, height=24), width=80, height=24)
    assert len(lines) <= 24, "\n".join(lines)
    assert all(len(line) <= 80 for line in lines)
    text = "\n".join(lines)
    for field in ("CONNECTED", "server vpn.example.net", "transport UDP",
                  "RTT 42.5 ms (min 30.0)", "loss in 25.0% (measured)",
                  "retransmitted 17 records (0.6% of packets)",
                  "sent 3.0 MiB  received 5.0 MiB"):  # fmt: skip
        assert field in text, f"{field!r} is missing or wrapped:\n{text}"
    [names] = [line for line in lines if "target" in line and "┃" in line]
    assert "state" in names and "sent" in names
    assert sum(" open " in line for line in lines) == 5  # the rows that fit
    assert "+35 more (35 idle)" in text


def test_active_channels_come_before_idle_and_closing_ones() -> None:
    # Stuck or finished: half-closed and idle for ten minutes.
    stuck = [
        sample_channel(i, state="half-closed-remote", idle_s=600.0 + i, target=f"stuck{i}.ex:1")
        for i in range(30)
    ]
    idle = sample_channel(100, idle_s=30.0, target="idle.example:22")
    active = sample_channel(101, idle_s=0.2, target="active.example:443")
    waiting = sample_channel(102, idle_s=100.0, in_flight=5000, target="waiting.example:443")
    snap = sample_snapshot([*stuck, idle, active, waiting])
    lines = lines_of(render_status(snap, width=120, height=24), width=120, height=24)
    names = ("active.example", "waiting.example", "idle.example", "stuck0.")
    order = [next(i for i, line in enumerate(lines) if name in line) for name in names]
    assert order == sorted(order), "\n".join(lines)
    text = "\n".join(lines)
    assert "channels (33, 2 active)" in text
    assert "+28 more (28 closing)" in text


def admin_session(n: int, channels: list[dict[str, object]]) -> dict[str, object]:
    return {
        "id": f"{n:016x}",
        "client_addresses": ["198.51.100.4:50000"],
        "transport": "udp",
        "state": "connected",
        "address_changes": 0,
        "rtt_ms": {"smoothed": 0.4, "min": 0.1},
        "loss": 0.128,  # the controller's estimate (spurious losses on loopback)
        "loss_in": 0.0,
        "last_packet_age_s": 0.1,
        "bytes": {"sent": 500 << 20, "received": 1 << 20},
        "packets": {"sent": 405_000, "received": 200_000},
        "retransmissions": 5379,
        "outages": 0,
        "channels": channels,
    }


def admin_channel(i: int, *, state: str = "open", idle_s: float = 0.1) -> dict[str, object]:
    return {
        "id": i, "kind": "tcp", "target": f"origin-{i}.example.org:443", "state": state,
        "bytes_sent": 0, "bytes_received": 1 << 20, "in_flight": 0, "age_s": 700.0,
        "idle_s": idle_s,
    }  # fmt: skip


def test_server_view_at_80x24_keeps_the_state_and_puts_stuck_channels_last() -> None:
    stuck = [admin_channel(i, state="half-closed-remote", idle_s=660.0) for i in range(54)]
    channels = [*stuck, admin_channel(99, idle_s=0.0)]
    snap = {
        "version": 1, "resip_version": "0.1.0", "server_start": "x", "uptime_s": 700.0,
        "sessions": [admin_session(1, channels), *(admin_session(n, []) for n in range(2, 9))],
        "dropped_packets": {"malformed": 0, "unknown_session": 0, "wrong_direction": 0},
    }  # fmt: skip
    lines = text_of(render_admin(snap, width=80, height=24), width=80).rstrip("\n").split("\n")
    text = "\n".join(lines)
    assert len(lines) <= 24, text
    assert all(len(line) <= 80 for line in lines), text
    [sessions_head, channels_head] = [line for line in lines if "┃" in line]
    assert "state" in sessions_head and "loss in" in sessions_head
    assert "state" in channels_head and "target" in channels_head
    assert "12.8%" not in text  # the controller's estimate is not shown as loss
    first_row = next(i for i, line in enumerate(lines) if "half-closed" in line)
    assert "origin-99." in lines[first_row - 1]  # the active channel comes first
    assert "8 sessions, 55 channels" in text
    assert re.search(r"\+\d+ more \(\d+ closing\)", text)
    assert re.search(r"\+\d+ more$", text, re.M)  # sessions left out
