"""The dashboard page: one screen that tells an operator why each VM type is not running.

From the top: the pool's size (desktops, cores, memory, desktops never enrolled, cores running
research VMs); the job queue's health (when demand was last read, the last error); demand and
supply over time; the VM types' table (demand, unfit jobs, leases, running, recent declines,
and a status with its reason: ``cvmc.coordinator.domain.health.why_not_running``); notes on
jobs that name no known VM type and jobs too big for theirs; desktops by state and the ones
whose hardware can never take work, and why; departments (desktops by state, leases,
core-hours, a link to their desktops); core-hours delivered by VM type; the latest declines
with the agent's detail; agent versions. ``/desktops`` lists each desktop.

Rendered on the server as HTML with inline SVG (no JavaScript library, no CDN: the coordinator
reaches no internet). The page reloads itself every 30 s (static/dashboard.js). Every string
that comes from a desktop, a job or the grid file is escaped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from cvmc.coordinator.domain.health import CANNOT_WORK_REASONS, held_by_counts, pool_size

if TYPE_CHECKING:
    from cvmc.coordinator.service.coordinator import Coordinator

__all__ = [
    "CANNOT_WORK_COLOURS",
    "CHART",
    "COLOURS",
    "STATUS_COLOURS",
    "chart_span",
    "downsample",
    "render_dashboard",
    "render_desktops",
    "series_chart",
]

#: The series' colours (the dashboard test looks for them in a screenshot).
COLOURS = {"demand": "#d62728", "supply": "#1f77b4", "running": "#2ca02c"}
#: Stroke widths: demand is drawn last and thinnest, so that it shows on top of supply where
#: the two are equal (the normal state).
STROKES = {"supply": 6, "running": 4, "demand": 2}
STATE_COLOURS = {
    "idle": "#2ca02c",
    "busy": "#1f77b4",
    "owner_present": "#ff7f0e",
    "offline": "#7f7f7f",
    "revoked": "#8c564b",
    "cannot_work": "#9467bd",
}
STATE_LABELS = {"cannot_work": "can never work"}
#: The departments' table: desktops by their state as the store counts it.
_DEPARTMENT_STATES = ("idle", "busy", "owner_present", "offline", "revoked")
CANNOT_WORK_COLOURS = {
    "hw_virt_held": "#9467bd",
    "no_hw_virt": "#e377c2",
    "too_little_memory": "#bcbd22",
}
CANNOT_WORK_LABELS = {
    "hw_virt_held": "VT-x held by another hypervisor",
    "no_hw_virt": "no VT-x/AMD-V",
    "too_little_memory": "too little memory",
}
STATUS_COLOURS = {"ok": "#2ca02c", "waiting": "#ff7f0e", "blocked": "#d62728"}
#: The chart's geometry in its own units (the SVG scales to the window's width): plot area
#: x0..x1, y0 (top)..y1 (bottom).
CHART = {"width": 720, "height": 260, "x0": 50, "x1": 700, "y0": 20, "y1": 230}
#: The chart's span: the data's age, between these bounds (seconds).
SPAN_MIN_S = 600.0
SPAN_MAX_S = 6 * 3600.0
#: At most this many points per series (one per 2 units of the plot's width).
MAX_POINTS = (CHART["x1"] - CHART["x0"]) // 2

History = Sequence[tuple[float, Mapping[str, int], Mapping[str, int], Mapping[str, int]]]
Point = tuple[float, int, int, int]


def chart_span(history: History, now: float) -> float:
    """The chart's span: from the oldest sample to now, within ``SPAN_MIN_S``..``SPAN_MAX_S``."""
    if not history:
        return SPAN_MIN_S
    return min(max(now - min(at for at, *_ in history), SPAN_MIN_S), SPAN_MAX_S)


def downsample(points: Sequence[Point], start: float, span: float, buckets: int) -> list[Point]:
    """At most ``buckets`` points: the samples in each equal slice of the span, as one point
    at the slice's latest time holding each series' highest value (a peak stays visible)."""
    if len(points) <= buckets:
        return list(points)
    out: dict[int, Point] = {}
    for point in points:
        index = min(int((point[0] - start) / span * buckets), buckets - 1)
        seen = out.get(index)
        if seen is None:
            out[index] = point
        else:
            out[index] = (
                max(seen[0], point[0]),
                max(seen[1], point[1]),
                max(seen[2], point[2]),
                max(seen[3], point[3]),
            )
    return [out[index] for index in sorted(out)]


def _age(seconds: float) -> str:
    if seconds >= 3600:
        hours = seconds / 3600
        return f"-{hours:.0f}h" if hours == int(hours) else f"-{hours:.1f}h"
    return f"-{seconds / 60:.0f}m"


def series_chart(history: History, now: float, span_s: float) -> str:
    """SVG: total demand, supply (leases) and running VMs over the last ``span_s`` seconds."""
    c = CHART
    start = now - span_s
    raw = [
        (at, sum(d.values()), sum(s.values()), sum(r.values()))
        for at, d, s, r in history
        if at >= start
    ]
    points = downsample(raw, start, span_s, MAX_POINTS)
    highest = max([1] + [max(d, s, r) for _, d, s, r in points])
    top = -(-(highest * 11 // 10 + 1) // 4) * 4  # a multiple of 4: whole-number ticks

    def x(at: float) -> float:
        return c["x0"] + (c["x1"] - c["x0"]) * (at - start) / span_s

    def y(value: float) -> float:
        return c["y1"] - (c["y1"] - c["y0"]) * value / top

    parts = [
        f'<svg id="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {c["width"]} '
        f'{c["height"]}" preserveAspectRatio="xMinYMin meet" role="img" '
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
    for tick in range(7):
        at = start + tick * span_s / 6
        label = "now" if tick == 6 else _age(span_s - tick * span_s / 6)
        parts.append(
            f'<text x="{x(at):.1f}" y="{c["y1"] + 16}" font-size="11" text-anchor="middle" '
            f'fill="#444">{label}</text>'
        )
    for name, index in (("supply", 2), ("running", 3), ("demand", 1)):
        coords = " ".join(f"{x(p[0]):.1f},{y(p[index]):.1f}" for p in points)
        if coords:
            parts.append(
                f'<polyline class="series-{name}" fill="none" stroke="{COLOURS[name]}" '
                f'stroke-width="{STROKES[name]}" points="{coords}"/>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _bars(
    counts: Mapping[str, int],
    colours: Mapping[str, str],
    element_id: str,
    labels: Mapping[str, str] | None = None,
) -> str:
    top = max([1, *counts.values()])
    rows = []
    for i, (name, value) in enumerate(counts.items()):
        width = 300 * value / top
        colour = colours.get(name, "#9467bd")
        label = (labels or {}).get(name, name)
        rows.append(
            f'<text x="0" y="{i * 24 + 16}" font-size="12">{escape(label)}</text>'
            f'<rect x="210" y="{i * 24 + 4}" width="{width:.1f}" height="16" fill="{colour}"/>'
            f'<text x="{216 + width:.1f}" y="{i * 24 + 16}" font-size="12">{value}</text>'
        )
    height = max(len(counts), 1) * 24 + 8
    return (
        f'<svg id="{element_id}" class="bars" xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 560 {height}" preserveAspectRatio="xMinYMin meet">{"".join(rows)}</svg>'
    )


def _when(at: float | None, now: float) -> str:
    if at is None:
        return "never"
    ago = max(now - at, 0.0)
    if ago < 120:
        return f"{ago:.0f} s ago"
    if ago < 7200:
        return f"{ago / 60:.0f} min ago"
    return f"{ago / 3600:.1f} h ago"


def _stamp(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _table(element_id: str, header: Sequence[str], rows: Sequence[str]) -> str:
    """A table in a box that scrolls sideways in a narrow window (the page does not)."""
    head = "".join(f"<th>{escape(cell)}</th>" for cell in header)
    return (
        f'<div class="scroll"><table id="{element_id}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _pool(coordinator: Coordinator, now: float) -> str:
    counts = coordinator.counts
    size = pool_size(counts.hardware)
    health = coordinator.demand_health()
    never = coordinator.never_enrolled()
    pool = (
        f'<p id="pool"><b>{size.desktops}</b> desktops enrolled, <b>{size.cores}</b> cores, '
        f"<b>{size.memory_mb / 1024:.0f}</b> GiB; <b>{counts.cores_running}</b> "
        f"core{'' if counts.cores_running == 1 else 's'} running research VMs; "
        f"<b>{never}</b> desktops of the grid never enrolled.</p>"
    )
    if coordinator.grid.backfill.enabled:
        spare = counts.backfill
        pool += (
            f'<p id="backfill">Backfill ({escape(coordinator.grid.backfill.vm_type)}, when no '
            f"job wants a desktop): <b>{spare.get('running', 0)}</b> running, "
            f"<b>{spare.get('offered', 0) + spare.get('starting', 0)}</b> offered or starting; "
            "real demand preempts them.</p>"
        )
    if health.failing:
        error = escape(health.error or "")
        demand = (
            f'<p id="demand-health" class="failing">The job queue was last read '
            f"{_when(health.read_at, now)}; the last try failed "
            f"{_when(health.error_at, now)}: {error}. Demand below is the last known.</p>"
        )
    else:
        error = (
            f" Last error {_when(health.error_at, now)}: {escape(health.error or '')}."
            if health.error_at is not None
            else ""
        )
        demand = (
            f'<p id="demand-health" class="healthy">The job queue was read '
            f"{_when(health.read_at, now)}.{error}</p>"
        )
    return pool + demand


def _types(coordinator: Coordinator) -> str:
    counts = coordinator.counts
    demand = coordinator.demand
    rows = []
    for status in coordinator.type_statuses():
        name = status.name
        declined = sum(c for (n, _), c in counts.declines.items() if n == name)
        rows.append(
            f'<tr class="status-{status.status}"><td>{escape(name)}</td>'
            f'<td class="why"><span class="dot" style="background:'
            f'{STATUS_COLOURS[status.status]}"></span>{escape(status.why)}</td>'
            f"<td>{demand.by_type.get(name, 0)}</td>"
            f'<td class="unfit">{demand.unfit.get(name, 0)}</td>'
            f"<td>{counts.leases.get(name, 0)}</td><td>{counts.running.get(name, 0)}</td>"
            f'<td class="declined">{declined}</td></tr>'
        )
    header = (
        "VM type",
        "why",
        "demand (jobs)",
        "unfit (jobs)",
        "leases",
        "running",
        "declined (1 h)",
    )
    return _table("types", header, rows)


def _notes(coordinator: Coordinator) -> str:
    demand = coordinator.demand
    types = [t.name for t in coordinator.grid.vm_types]
    parts = []
    if demand.unknown:
        names = ", ".join(
            f"<code>{escape(name)}</code> ({count})"
            for name, count in sorted(demand.unknown_names.items(), key=lambda i: (-i[1], i[0]))
        )
        parts.append(
            f'<p class="note" id="unknown-note">{demand.unknown} '
            f"job{'' if demand.unknown == 1 else 's'} name a VM type the grid does not have, "
            f"and start no VM: {names}. Known types: "
            f"{', '.join(f'<code>{escape(t)}</code>' for t in types)}.</p>"
        )
    unfit = sum(demand.unfit.get(name, 0) for name in types)
    if unfit:
        parts.append(
            f'<p class="note" id="unfit-note">{unfit} job{"" if unfit == 1 else "s"} name a VM '
            "type that cannot hold them (more CPUs, memory, disk or GPUs than one VM of the "
            "type has): they start no VM.</p>"
        )
    return "".join(parts)


def _desktops(coordinator: Coordinator) -> str:
    counts = coordinator.counts
    able = coordinator.desktop_states()
    states = {s: able.get(s, 0) for s in STATE_COLOURS}
    cannot = coordinator.cannot_work()
    held = held_by_counts(counts.hardware)
    held_note = (
        '<p class="note" id="held-by">VT-x held by: '
        + ", ".join(f"{escape(name)} ({count})" for name, count in sorted(held.items()))
        + "</p>"
        if held
        else ""
    )
    return (
        f"<section><h2>Desktops by state</h2>"
        f"{_bars(states, STATE_COLOURS, 'desktops', STATE_LABELS)}"
        "</section><section><h2>Desktops that can never take work</h2>"
        f"{_bars({r: cannot[r] for r in CANNOT_WORK_REASONS}, CANNOT_WORK_COLOURS, 'cannot-work', CANNOT_WORK_LABELS)}"  # noqa: E501
        f"{held_note}</section>"
    )


def _departments(coordinator: Coordinator) -> str:
    rows = []
    for row in coordinator.departments():
        states = row["states"]
        hours = sum(row["core_hours"].values())
        name = row["department"]
        rows.append(
            f'<tr><td><a href="/desktops?department={quote(name)}">{escape(name)}</a></td>'
            + "".join(f"<td>{states.get(s, 0)}</td>" for s in _DEPARTMENT_STATES)
            + f"<td>{row['leases']}</td><td>{hours:.1f}</td></tr>"
        )
    header = ("department", *_DEPARTMENT_STATES, "leases", "core-hours")
    return _table("departments", header, rows)


def _delivered(coordinator: Coordinator) -> str:
    by_type: dict[str, float] = {}
    for (_, name), seconds in coordinator.counts.core_seconds.items():
        by_type[name] = by_type.get(name, 0.0) + seconds
    rows = [
        f"<tr><td>{escape(name)}</td><td>{seconds / 3600:.1f}</td></tr>"
        for name, seconds in sorted(by_type.items())
    ]
    total = sum(by_type.values()) / 3600
    rows.append(f"<tr><td><b>all</b></td><td><b>{total:.1f}</b></td></tr>")
    return _table("delivered", ("VM type", "core-hours"), rows)


def _declines(coordinator: Coordinator, now: float) -> str:
    rows = [
        f"<tr><td>{_when(r.at, now)}</td><td>{escape(r.desktop)}</td>"
        f"<td>{escape(r.department)}</td><td>{escape(r.vm_name)}</td>"
        f'<td>{escape(r.reason)}</td><td class="detail">{escape(r.detail)}</td></tr>'
        for r in coordinator.counts.recent_declines
    ]
    header = ("when", "desktop", "department", "VM type", "reason", "detail")
    return _table("declines", header, rows)


def _page(coordinator: Coordinator, title: str, now: float, body: str) -> str:
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(coordinator.grid.name)}: {escape(title)}</title>
<link rel="stylesheet" href="/static/dashboard.css">
<script src="/static/dashboard.js" defer></script>
</head><body>
<h1>{escape(coordinator.grid.name)}</h1>
<p class="stamp">{_stamp(now)}</p>
{body}
</body></html>
"""


def render_dashboard(coordinator: Coordinator, history: History, now: float) -> str:
    span = chart_span(history, now)
    legend = " ".join(
        f'<span class="key"><span class="swatch" style="background:{colour}"></span>{name}</span>'
        for name, colour in COLOURS.items()
    )
    versions = ", ".join(
        f"{escape(version)} ({count})"
        for version, count in sorted(
            coordinator.counts.agent_versions.items(), key=lambda i: (-i[1], i[0])
        )[:10]
    )
    body = f"""<section><h2>Pool</h2>
{_pool(coordinator, now)}
</section>
<section><h2>VM types: why each is (not) running</h2>
{_types(coordinator)}
{_notes(coordinator)}
</section>
<section><h2>Demand and supply, last {_age(span)[1:]}</h2>
<p class="legend">{legend}</p>
{series_chart(history, now, span)}
</section>
{_desktops(coordinator)}
<section><h2>Departments</h2>
{_departments(coordinator)}
</section>
<section><h2>Delivered</h2>
{_delivered(coordinator)}
</section>
<section><h2>Recent declines</h2>
{_declines(coordinator, now)}
</section>
<p class="stamp" id="versions">Agent versions: {versions or "none yet"}.
<a href="/desktops">Every desktop</a>.</p>
"""
    return _page(coordinator, "desktop grid coordinator", now, body)


def render_desktops(
    coordinator: Coordinator,
    rows: Sequence[Mapping[str, Any]],
    department: str | None,
    offset: int,
) -> str:
    """The desktops page: each desktop's state, agent, last heartbeat, hardware, VMs and
    recent declines (``Coordinator.admin_desktops``; 500 a page)."""
    now = coordinator.clock()
    cells = []
    for row in rows:
        seen = row["last_heartbeat"]
        virt = (
            "yes"
            if row["hw_virt"]
            else f"no ({row['hw_virt_held_by']})"
            if row["hw_virt_held_by"]
            else "no"
        )
        vms = ", ".join(f"{vm['vm_name']} ({vm['state']})" for vm in row["vms"])
        cells.append(
            f"<tr><td>{escape(row['name'])}</td><td>{escape(row['department'])}</td>"
            f'<td class="state-{escape(row["state"])}">{escape(row["state"])}</td>'
            f"<td>{escape(row['agent_version'])}</td><td>{escape(seen or 'never')}</td>"
            f"<td>{row['cpus']}</td><td>{row['memory_total_mb']}</td><td>{escape(virt)}</td>"
            f"<td>{escape(vms)}</td><td>{row['recent_declines']}</td></tr>"
        )
    header = (
        "desktop",
        "department",
        "state",
        "agent",
        "last heartbeat",
        "CPUs",
        "memory (MB)",
        "VT-x",
        "VMs",
        "declines (1 h)",
    )
    what = f"department {escape(department)}" if department else "all departments"
    more = ""
    if len(rows) == 500:
        query = f"department={quote(department)}&" if department else ""
        more = f'<p><a href="/desktops?{query}offset={offset + 500}">next 500</a></p>'
    body = (
        f'<h2>Desktops of {what}</h2><p><a href="/">dashboard</a></p>'
        f"{_table('desktop-list', header, cells)}{more}"
    )
    return _page(coordinator, "desktops", now, body)
