"""The status views are pure functions of a snapshot: render them and read the text."""

from __future__ import annotations

import time

from rich.console import Console

from resip.server.admin import render_admin
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
    assert "loss 12.5% out, 25.0% in" in out
    assert "up 1.0 Mbit/s" in out  # 125,000 bytes in 1 s
    assert "down 0 bit/s" in out
    assert "retx 17" in out


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
    assert "total: 1 channels (1 shown)" in out


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
    assert "total: 0 channels" in out


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
    assert "channels (10,000)" in out
    assert "total: 10,000 channels (18 shown)" in out
    total_sent = sum(ch["bytes_sent"] for ch in channels)
    assert f"sent {total_sent / (1 << 20):.1f} MiB" in out
    busiest = next(i for i, line in enumerate(lines) if "busiest.example" in line)
    second = next(i for i, line in enumerate(lines) if "second.example" in line)
    assert busiest < second
    assert "host9999.example" not in out  # an idle channel that does not fit
    assert elapsed < 2.0, f"rendering 10,000 channels took {elapsed:.2f} s"


def test_small_terminal_still_shows_a_row_and_totals() -> None:
    snap = sample_snapshot([sample_channel(i) for i in range(100)])
    out = text_of(render_status(snap, height=10, width=60), width=60, height=10)
    assert "total: 100 channels (1 shown)" in out


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
