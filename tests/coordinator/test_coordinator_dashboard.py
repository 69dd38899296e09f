"""The dashboard in real headless Chromium: a screenshot whose pixels show the chart.

The coordinator runs on loopback with a recorded history (through the store's real write path):
demand constant at 40 jobs, supply ramping from 0 to 20 leases. In the screenshot the demand
colour must form a flat line above the supply colour, and the supply line must rise from left to
right; the desktop-state bars must show their colours too. With real job ads as demand, the
page Chromium renders shows each VM type's unfit jobs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from coordinator.coord_support import (
    BOINC,
    BULK,
    Clock,
    make_coordinator,
    serve_in_thread,
    write_setup,
)
from coordinator.png_decode import decode_png

from cvmc.coordinator.adapters.dashboard import COLOURS, STATE_COLOURS, render_dashboard
from cvmc.coordinator.adapters.web import create_app
from cvmc.coordinator.domain.leases import Allocation
from cvmc.coordinator.ports import DashboardCounts
from cvmc.coordinator.service.coordinator import Coordinator

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
    "--window-size=800,900",
]


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        message = "Debian's chromium is not installed; run scripts/test-deps.sh"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[tuple[Coordinator, str]]:
    now = time.time()
    coordinator = make_coordinator(
        write_setup(tmp_path, f"sqlite:///{tmp_path / 'c.db'}"), Clock(now)
    )
    # Six hours of history, one sample every 10 minutes, through the store's real write path.
    for i in range(37):
        at = now - 6 * 3600 + i * 600
        supply = round(20 * i / 36)
        coordinator.store.apply(
            Allocation(),
            at,
            ({BOINC: 30, BULK: 10}, {BOINC: supply, BULK: 0}, {BOINC: 0}),
            86400,
        )
    coordinator.counts = DashboardCounts(
        {"idle": 12, "busy": 20, "owner_present": 7, "offline": 3, "revoked": 0},
        {BOINC: 15, BULK: 5},
        {BOINC: 20},
    )
    with serve_in_thread(create_app(coordinator)) as port:
        yield coordinator, f"http://127.0.0.1:{port}/"


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def pixels_of(rows: list[bytearray], channels: int, colour: str) -> list[tuple[int, int]]:
    want = _rgb(colour)
    found = []
    for y, row in enumerate(rows):
        for x in range(0, len(row), channels):
            if all(abs(row[x + c] - want[c]) <= 6 for c in range(3)):
                found.append((x // channels, y))
    return found


def test_dashboard_screenshot_shows_demand_above_a_rising_supply(
    dashboard: tuple[Coordinator, str], tmp_path: Path
) -> None:
    _, url = dashboard
    shot = tmp_path / "dashboard.png"
    result = subprocess.run(
        [
            chromium(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert shot.exists(), result.stderr[-2000:]
    width, height, rows, channels = decode_png(shot.read_bytes())
    assert (width, height) == (800, 900)
    # The chart's series (ignore the legend's swatches: 10 px squares above the chart).
    demand = [p for p in pixels_of(rows, channels, COLOURS["demand"])]
    supply = [p for p in pixels_of(rows, channels, COLOURS["supply"])]
    demand_line = _longest_row(demand)
    assert demand_line[1] >= 500, f"no flat demand line: {demand_line}"
    y_demand = demand_line[0]
    chart_supply = [(x, y) for x, y in supply if y > y_demand - 5 and y < y_demand + 300]
    assert len(chart_supply) > 300, "no supply line in the chart"
    xs = sorted(x for x, _ in chart_supply)
    left = [y for x, y in chart_supply if x < xs[0] + 60]
    right = [y for x, y in chart_supply if x > xs[-1] - 60]
    # Screen y grows downwards: supply rises (smaller y) to the right, and stays below demand.
    assert sum(right) / len(right) < sum(left) / len(left) - 50
    assert min(y for _, y in chart_supply) > y_demand
    # Demand 40 and supply 20 at the right end: supply is about half-way up to demand.
    bottom = max(left)
    assert abs((bottom - sum(right) / len(right)) / (bottom - y_demand) - 0.5) < 0.1
    # Desktops by state: each state's bar colour is there, below the chart.
    for state in ("owner_present", "offline"):
        bar = [p for p in pixels_of(rows, channels, STATE_COLOURS[state]) if p[1] > bottom]
        assert len(bar) > 100, state


def _longest_row(points: list[tuple[int, int]]) -> tuple[int, int]:
    """(y, count) of the row holding the most of ``points``."""
    counts: dict[int, int] = {}
    for _, y in points:
        counts[y] = counts.get(y, 0) + 1
    if not counts:
        return (-1, 0)
    y = max(counts, key=lambda k: counts[k])
    return y, counts[y]


class _Table(HTMLParser):
    """The cells of the table with id ``types`` and the text of the element ``unfit-note``."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.note = ""
        self._in_table = self._in_note = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        ident = dict(attrs).get("id")
        if tag == "table" and ident == "types":
            self._in_table = True
        elif tag == "p" and ident == "unfit-note":
            self._in_note = True
        elif self._in_table and tag == "tr":
            self.rows.append([])
        elif self._in_table and tag in ("td", "th"):
            self.rows[-1].append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_table = False
        elif tag == "p":
            self._in_note = False

    def handle_data(self, data: str) -> None:
        if self._in_table and self.rows and self.rows[-1]:
            self.rows[-1][-1] += data.strip()
        elif self._in_note:
            self.note += data


def test_dashboard_shows_unfit_jobs_from_real_ads(tmp_path: Path) -> None:
    """Real job ads from the htcondor 25.0.14 wheel's submit (fixtures/htcondor): the page, as
    headless Chromium renders it, has each type's unfit jobs next to its demand."""
    coordinator = make_coordinator(
        write_setup(tmp_path, f"sqlite:///{tmp_path / 'c.db'}"), Clock(time.time())
    )
    real = Path(__file__).parent / "fixtures" / "htcondor" / "condor_q_long_25.0.14.txt"
    Path(coordinator.config.demand.job_ads_file).write_text(real.read_text())
    coordinator.allocation_round()
    with serve_in_thread(create_app(coordinator)) as port:
        result = subprocess.run(
            [
                chromium(),
                *CHROMIUM_FLAGS,
                f"--user-data-dir={tmp_path / 'profile'}",
                "--dump-dom",
                f"http://127.0.0.1:{port}/",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    coordinator.store.close()
    page = _Table()
    page.feed(result.stdout)
    assert page.rows, result.stderr[-2000:]
    header, *rows = page.rows
    assert header == ["VM type", "demand (jobs)", "unfit (jobs)", "leases", "running"]
    by_type = {row[0]: row[1:3] for row in rows}
    assert by_type == {BOINC: ["4", "2"], BULK: ["1", "1"]}
    assert " ".join(page.note.split()).startswith("3 jobs name a VM type that cannot hold them")


def test_dashboard_without_unfit_jobs_has_no_note(tmp_path: Path) -> None:
    coordinator = make_coordinator(
        write_setup(tmp_path, f"sqlite:///{tmp_path / 'c.db'}"), Clock(time.time())
    )
    coordinator.allocation_round()
    page = _Table()
    page.feed(render_dashboard(coordinator, [], time.time()))
    coordinator.store.close()
    assert [row[2] for row in page.rows] == ["unfit (jobs)", "0", "0"]
    assert page.note == ""
