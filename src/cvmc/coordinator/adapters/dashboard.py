"""The dashboard page: desktops by state, VMs running by type, demand against supply over time.

The VM types' table has each type's demand, its unfit jobs (jobs that name the type but that one
VM of it cannot hold), leases and running VMs; a line under it counts the unfit jobs when there
are any.

Rendered on the server as HTML with inline SVG (no JavaScript library, no CDN: the coordinator
reaches no internet). The page reloads itself every 30 s (static/dashboard.js).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cvmc.coordinator.service.coordinator import Coordinator

__all__ = ["CHART", "COLOURS", "render_dashboard", "series_chart"]

#: The series' colours (the dashboard test looks for them in a screenshot).
COLOURS = {"demand": "#d62728", "supply": "#1f77b4", "running": "#2ca02c"}
STATE_COLOURS = {
    "idle": "#2ca02c",
    "busy": "#1f77b4",
    "owner_present": "#ff7f0e",
    "offline": "#7f7f7f",
    "revoked": "#8c564b",
}
#: The chart's geometry in CSS pixels: plot area x0..x1, y0 (top)..y1 (bottom).
CHART = {"width": 720, "height": 260, "x0": 50, "x1": 700, "y0": 20, "y1": 230}

History = Sequence[tuple[float, Mapping[str, int], Mapping[str, int], Mapping[str, int]]]


def series_chart(history: History, now: float, span_s: float) -> str:
    """SVG: total demand, supply (leases) and running VMs over the last ``span_s`` seconds."""
    c = CHART
    points = [(at, sum(d.values()), sum(s.values()), sum(r.values())) for at, d, s, r in history]
    top = max([1] + [max(d, s, r) for _, d, s, r in points])
    top = int(top * 1.1) + 1

    def x(at: float) -> float:
        return c["x0"] + (c["x1"] - c["x0"]) * (at - (now - span_s)) / span_s

    def y(value: float) -> float:
        return c["y1"] - (c["y1"] - c["y0"]) * value / top

    parts = [
        f'<svg id="chart" xmlns="http://www.w3.org/2000/svg" width="{c["width"]}" '
        f'height="{c["height"]}" viewBox="0 0 {c["width"]} {c["height"]}" role="img" '
        'aria-label="demand and supply over time">',
        f'<rect x="{c["x0"]}" y="{c["y0"]}" width="{c["x1"] - c["x0"]}" '
        f'height="{c["y1"] - c["y0"]}" fill="#ffffff" stroke="#cccccc"/>',
    ]
    for i in range(5):
        value = top * i / 4
        parts.append(
            f'<text x="{c["x0"] - 6}" y="{y(value) + 4:.1f}" font-size="11" '
            f'text-anchor="end" fill="#444">{value:.0f}</text>'
        )
    for hours in range(7):
        at = now - span_s + hours * span_s / 6
        label = "now" if hours == 6 else f"-{6 - hours}h"
        parts.append(
            f'<text x="{x(at):.1f}" y="{c["y1"] + 16}" font-size="11" text-anchor="middle" '
            f'fill="#444">{label}</text>'
        )
    for name, index in (("demand", 1), ("supply", 2), ("running", 3)):
        coords = " ".join(f"{x(p[0]):.1f},{y(p[index]):.1f}" for p in points)
        if coords:
            parts.append(
                f'<polyline class="series-{name}" fill="none" stroke="{COLOURS[name]}" '
                f'stroke-width="3" points="{coords}"/>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _bars(counts: Mapping[str, int], colours: Mapping[str, str], element_id: str) -> str:
    top = max([1, *counts.values()])
    rows = []
    for i, (name, value) in enumerate(counts.items()):
        width = 300 * value / top
        colour = colours.get(name, "#9467bd")
        rows.append(
            f'<text x="0" y="{i * 24 + 16}" font-size="12">{escape(name)}</text>'
            f'<rect x="190" y="{i * 24 + 4}" width="{width:.1f}" height="16" fill="{colour}"/>'
            f'<text x="{196 + width:.1f}" y="{i * 24 + 16}" font-size="12">{value}</text>'
        )
    height = max(len(counts), 1) * 24 + 8
    return (
        f'<svg id="{element_id}" xmlns="http://www.w3.org/2000/svg" width="560" '
        f'height="{height}">{"".join(rows)}</svg>'
    )


def render_dashboard(coordinator: Coordinator, history: History, now: float) -> str:
    counts = coordinator.counts
    states = {s: counts.desktops.get(s, 0) for s in STATE_COLOURS}
    types = [t.name for t in coordinator.grid.vm_types]
    running = {name: counts.running.get(name, 0) for name in types}
    demand = coordinator.demand
    rows = "".join(
        f"<tr><td>{escape(name)}</td><td>{demand.by_type.get(name, 0)}</td>"
        f'<td class="unfit">{demand.unfit.get(name, 0)}</td>'
        f"<td>{counts.leases.get(name, 0)}</td><td>{running[name]}</td></tr>"
        for name in types
    )
    unfit = sum(demand.unfit.get(name, 0) for name in types)
    unfit_note = (
        f'<p class="note" id="unfit-note">{unfit} job{"" if unfit == 1 else "s"} name a VM type '
        "that cannot hold them (more CPUs, memory, disk or GPUs than one VM of the type has): "
        "they start no VM.</p>"
        if unfit
        else ""
    )
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    legend = " ".join(
        f'<span class="key"><span class="swatch" style="background:{colour}"></span>{name}</span>'
        for name, colour in COLOURS.items()
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{escape(coordinator.grid.name)}: desktop grid coordinator</title>
<link rel="stylesheet" href="/static/dashboard.css">
<script src="/static/dashboard.js" defer></script>
</head><body>
<h1>{escape(coordinator.grid.name)}</h1>
<p class="stamp">{stamp}</p>
<section><h2>Demand and supply, last 6 hours</h2>
<p class="legend">{legend}</p>
{series_chart(history, now, 6 * 3600)}
</section>
<section><h2>Desktops by state</h2>
{_bars(states, STATE_COLOURS, "desktops")}
</section>
<section><h2>VMs by type</h2>
{_bars(running, {}, "vms")}
<table id="types"><thead><tr><th>VM type</th><th>demand (jobs)</th><th>unfit (jobs)</th>
<th>leases</th><th>running</th></tr>
</thead><tbody>{rows}</tbody></table>
{unfit_note}
</section>
</body></html>
"""
