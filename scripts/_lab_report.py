"""What ``scripts/bench_lab.py`` prints and draws: Markdown tables and the PNG plot.

Sweep rows (``Report.rows``) are dicts with ``system``, ``rate_mbit``, ``loss`` (a
fraction), ``rtt_ms``, ``goodput_mbit``, ``efficiency``, ``cpu_s_per_gib`` and
``cpu_cores`` (both ``{process name: value or None}``, empty for kernel TCP); scenario
rows are dicts with ``system``, ``scenario`` and the scenario's own keys. Every table is
one per link rate, with one column per loss rate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _lab_systems import NO_PROCESS

Row = dict[str, Any]


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    scenarios: list[Row] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _grid(rows: Sequence[Row], rate: float) -> tuple[list[str], list[int], list[float]]:
    """Systems, RTTs and losses measured at ``rate`` (in the order they ran)."""
    mine = [r for r in rows if r["rate_mbit"] == rate]
    systems = list(dict.fromkeys(r["system"] for r in mine))
    return systems, sorted({r["rtt_ms"] for r in mine}), sorted({r["loss"] for r in mine})


def _header(first: Sequence[str], losses: Sequence[float]) -> list[str]:
    return [
        "| " + " | ".join([*first, *(f"{p:.0%}" for p in losses)]) + " |",
        "|" + "---|" * (len(first) - 1) + "---:|" + "---:|" * len(losses),
    ]


def goodput_table(rows: Sequence[Row], rate: float) -> list[str]:
    """Goodput (eta) per system x RTT at ``rate``, one column per loss."""
    systems, rtts, losses = _grid(rows, rate)
    cells = {(r["system"], r["rtt_ms"], r["loss"]): r for r in rows if r["rate_mbit"] == rate}
    out = _header(["system", "RTT ms"], losses)
    for system in systems:
        for rtt in rtts:
            vals = [
                "-" if r is None else f"{r['goodput_mbit']:.2f} ({r['efficiency']:.2f})"
                for p in losses
                for r in [cells.get((system, rtt, p))]
            ]
            out.append(f"| {system} | {rtt} | " + " | ".join(vals) + " |")
    return out


def _ratio_cell(ours: Row | None, theirs: list[Row]) -> str:
    if ours is None or not theirs:
        return "-"
    best = max(theirs, key=lambda r: r["goodput_mbit"])
    if best["goodput_mbit"] > 0:
        ratio = f"{ours['goodput_mbit'] / best['goodput_mbit']:.2f}x"
    else:
        ratio = "inf" if ours["goodput_mbit"] > 0 else "0/0"
    return f"{ratio} ({best['system']})"


def ratio_table(rows: Sequence[Row], rate: float) -> list[str]:
    """ResIP's goodput over the best other system's, per RTT x loss at ``rate``."""
    systems, rtts, losses = _grid(rows, rate)
    others = [s for s in systems if s != "resip"]
    if "resip" not in systems or not others:
        return []
    cells = {(r["system"], r["rtt_ms"], r["loss"]): r for r in rows if r["rate_mbit"] == rate}
    out = _header(["RTT ms"], losses)
    for rtt in rtts:
        vals = [
            _ratio_cell(
                cells.get(("resip", rtt, p)),
                [cells[(s, rtt, p)] for s in others if (s, rtt, p) in cells],
            )
            for p in losses
        ]
        out.append(f"| {rtt} | " + " | ".join(vals) + " |")
    return out


def _cpu_cell(row: Row | None, proc: str) -> str:
    if row is None:
        return "-"
    per_gib, cores = row["cpu_s_per_gib"].get(proc), row["cpu_cores"].get(proc)
    if per_gib is None:
        return "n/a" if cores is None else f"n/a ({cores:.2f})"
    return f"{per_gib:.1f} ({cores:.2f})"


def cpu_table(rows: Sequence[Row], rate: float) -> list[str]:
    """CPU s/GiB (cores) per system process x RTT at ``rate``, one column per loss."""
    systems, rtts, losses = _grid(rows, rate)
    cells = {(r["system"], r["rtt_ms"], r["loss"]): r for r in rows if r["rate_mbit"] == rate}
    out = _header(["system", "process", "RTT ms"], losses)
    for system in systems:
        procs = list(
            dict.fromkeys(p for r in rows if r["system"] == system for p in r["cpu_s_per_gib"])
        )
        for proc in procs or [NO_PROCESS]:
            for rtt in rtts:
                row_cells = [cells.get((system, rtt, p)) for p in losses]
                vals = ["-" if not procs else _cpu_cell(r, proc) for r in row_cells]
                out.append(f"| {system} | {proc} | {rtt} | " + " | ".join(vals) + " |")
    return out


def _blackhole_cells(bh: Row | None) -> tuple[str, str]:
    if bh is None:
        return "-", "-"
    if "error" in bh:
        return f"error: {bh['error'][:60]}", "-"
    if bh["resumed"]:
        return f"{bh['resumed_after_s']:.1f} s", f"{bh['goodput_after_mbit']:.2f} Mbit/s"
    return f"never (> {bh['limit_s']:g} s)", "-"


def _move_cells(ac: Row | None) -> tuple[str, str]:
    if ac is None:
        return "-", "-"
    if "error" in ac:
        return f"error: {ac['error'][:60]}", "-"
    if ac["survived"]:
        return "yes", f"{ac['resumed_after_s']:.1f} s"
    return "no", f"never (> {ac['limit_s']:g} s)"


def scenario_table(scenarios: Sequence[Row], blackhole_s: float) -> list[str]:
    out = [
        f"| system | blackhole {blackhole_s:g} s: data again after | "
        "rate 5 s later | address change: survives | resumed after |",
        "|---|---:|---:|---|---:|",
    ]
    by = {(r["system"], r["scenario"]): r for r in scenarios}
    for system in dict.fromkeys(r["system"] for r in scenarios):
        bh_text, bh_rate = _blackhole_cells(by.get((system, "blackhole")))
        ac_text, ac_time = _move_cells(by.get((system, "address_change")))
        out.append(f"| {system} | {bh_text} | {bh_rate} | {ac_text} | {ac_time} |")
    return out


def markdown(
    report: Report, *, rates: Sequence[float], describe: Callable[[float], str], scenario: str
) -> str:
    """Every table: per rate goodput, ResIP / best other, CPU; then the scenarios.

    ``describe(rate)`` is the sentence above a rate's goodput table; ``scenario`` the
    caption of the scenario table, whose blackhole length comes from its rows.
    """
    out: list[str] = []
    for rate in rates:
        if not any(r["rate_mbit"] == rate for r in report.rows):
            continue
        out += [describe(rate), "", *goodput_table(report.rows, rate)]
        ratios = ratio_table(report.rows, rate)
        if ratios:
            out += ["", f"ResIP goodput / best other system's goodput (which one), {rate:g} Mbit/s"]
            out += ["", *ratios]
        out += [
            "",
            f"CPU seconds per GiB received (in parentheses: cores, CPU s per s), {rate:g} Mbit/s;"
            " utime + stime from /proc/PID/stat over the measuring window (curl, http.server"
            " and the relay are not counted; n/a: nothing moved)",
            "",
            *cpu_table(report.rows, rate),
            "",
        ]
    if report.scenarios:
        hole = next((r["blackhole_s"] for r in report.scenarios if "blackhole_s" in r), 0.0)
        out += [scenario, "", *scenario_table(report.scenarios, hole)]
    return "\n".join(out).rstrip()


def plot(report: Report, path: Path) -> str | None:
    """Draw the PNG (one panel per rate x RTT); return why not, or None."""
    try:
        import matplotlib as mpl

        mpl.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (scripts/install-bench-deps): no plot"
    panels = sorted({(r["rate_mbit"], r["rtt_ms"]) for r in report.rows})
    if not panels:
        return "no sweep rows: no plot"
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for ax, (rate, rtt) in zip(axes[0], panels, strict=True):
        rows = [r for r in report.rows if (r["rate_mbit"], r["rtt_ms"]) == (rate, rtt)]
        losses = sorted({r["loss"] for r in rows})
        ax.plot(
            [p * 100 for p in losses],
            [(1 - p) * rate for p in losses],
            color="grey",
            linestyle=":",
            label="(1 - p) x C",
        )
        for system in dict.fromkeys(r["system"] for r in rows):
            pts = sorted((r["loss"], r["goodput_mbit"]) for r in rows if r["system"] == system)
            ax.plot([p * 100 for p, _ in pts], [g for _, g in pts], marker="o", label=system)
        ax.set_title(f"RTT {rtt} ms, {rate:g} Mbit/s bottleneck")
        ax.set_xlabel("random loss each way, %")
        ax.set_ylabel("goodput, Mbit/s")
        ax.set_ylim(bottom=0)
        ax.grid(visible=True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
