"""The dashboard in real headless Chromium: a screenshot whose pixels show the chart.

The coordinator runs on loopback with a recorded history (through the store's real write path):
demand constant at 40 jobs, supply ramping from 0 to 20 leases. In the screenshot the demand
colour must form a flat line above the supply colour, and the supply line must rise from left to
right; the desktop-state bars must show their colours too. With real job ads as demand, the
page Chromium renders shows each VM type's unfit jobs.
"""

from __future__ import annotations

import importlib.util
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
    Desk,
    heartbeat,
    job_ads,
    make_coordinator,
    running,
    serve_in_thread,
    write_setup,
)
from coordinator.png_decode import decode_png
from starlette.testclient import TestClient

from cvmc.coordinator.adapters.dashboard import (
    CANNOT_WORK_COLOURS,
    COLOURS,
    MAX_POINTS,
    STATE_COLOURS,
    chart_span,
    render_dashboard,
    series_chart,
)
from cvmc.coordinator.adapters.web import create_app
from cvmc.coordinator.domain.leases import Allocation
from cvmc.coordinator.ports import DashboardCounts
from cvmc.coordinator.service.coordinator import Coordinator

#: The VM types' table's columns, as an operator reads them.
TYPES_HEADER = [
    "VM type",
    "why",
    "demand (jobs)",
    "unfit (jobs)",
    "leases",
    "running",
    "declined (1 h)",
]
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
    assert header == TYPES_HEADER
    by_type = {row[0]: row[2:4] for row in rows}
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
    assert [row[3] for row in page.rows] == ["unfit (jobs)", "0", "0"]
    assert page.note == ""


# -- the operator's view: every element, in Chromium ----------------------------------------

TYPO = "its-u11-boinc-2012041"
DETAIL = "image lab-el9-bulk-20261101: the minisign signature does not verify"


def _operator_grid(tmp_path: Path) -> Coordinator:
    """A pool driven through the signed API: a desktop running BOINC (no room for more), one
    whose VT-x Hyper-V holds, one without VT-x, one too small, one that declined BULK with the
    agent's detail; jobs for BOINC, for BULK, one too big for BOINC and two naming no type.
    Its history: demand equal to supply for the last hour (the normal state)."""
    clock = Clock()
    coordinator = make_coordinator(write_setup(tmp_path, f"sqlite:///{tmp_path / 'c.db'}"), clock)
    with TestClient(create_app(coordinator)) as client:
        good, held, absent, small, other = (Desk(client, f"desk0{i}") for i in (0, 1, 2, 3, 4))
        good.leases(heartbeat(memory_free_mb=600))
        held.leases(heartbeat(hw_virt=False, hw_virt_held_by="Hyper-V", agent_version="0.0.9"))
        absent.leases(heartbeat(hw_virt=False))
        small.leases(heartbeat(memory_total_mb=400, memory_free_mb=300))
        other.leases()
        ads = job_ads((BOINC, 1), (BULK, 1), (TYPO, 1), (TYPO, 1), (BOINC, 1))
        head, _, last = ads.rpartition("ClusterId = 104")
        Path(coordinator.config.demand.job_ads_file).write_text(
            head + "ClusterId = 104" + last.replace("RequestMemory = 256", "RequestMemory = 4096")
        )
        coordinator.demand_at = float("-inf")
        coordinator.allocation_round()
        (boinc,) = good.leases(heartbeat(memory_free_mb=600))
        (bulk,) = other.leases()
        busy = running([boinc])
        busy["resources"]["memory_free_mb"] = 100
        good.leases(busy)
        declined = [{"lease_id": bulk["lease_id"], "reason": "image_unavailable", "detail": DETAIL}]
        other.leases(heartbeat(declined=declined))
        for _ in range(3):  # core-seconds: three rounds of the running VM
            clock.now += coordinator.config.leases.allocate_s
            good.leases(busy)
            coordinator.allocation_round()
    for i in range(61):  # the last hour: demand 2, supply 2, running 1, once a minute
        coordinator.store.apply(
            Allocation(),
            clock.now - 3600 + i * 60,
            ({BOINC: 1, BULK: 1}, {BOINC: 2}, {BOINC: 1}),
            86400,
        )
    return coordinator


class _Page(HTMLParser):
    """The text of each element that has an id, and each table's rows (by the table's id)."""

    def __init__(self) -> None:
        super().__init__()
        self.text: dict[str, str] = {}
        self.tables: dict[str, list[list[str]]] = {}
        self._open: list[tuple[str, str | None]] = []
        self._table: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        ident = dict(attrs).get("id")
        if tag in {"meta", "link", "br", "input"}:
            return
        self._open.append((tag, ident))
        if ident is not None:
            self.text.setdefault(ident, "")
        if tag == "table" and ident is not None:
            self._table = ident
            self.tables[ident] = []
        elif self._table is not None and tag == "tr":
            self.tables[self._table].append([])
        elif self._table is not None and tag in ("td", "th"):
            self.tables[self._table][-1].append("")

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            opened, _ = self._open.pop()
            if opened == tag:
                break
        if tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        for _, ident in self._open:
            if ident is not None:
                self.text[ident] += data
        if self._table is not None and self.tables[self._table]:
            row = self.tables[self._table][-1]
            if row:
                row[-1] += data.strip()


def _chromium(url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args, url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _screenshot(tmp_path: Path, width: int) -> tuple[int, list[bytearray], int]:
    """The operator grid's dashboard in a window ``width`` px wide and 1600 high: (its width,
    its rows of pixels, channels per pixel)."""
    coordinator = _operator_grid(tmp_path)
    shot = tmp_path / f"dashboard-{width}.png"
    with serve_in_thread(create_app(coordinator)) as port:
        result = _chromium(
            f"http://127.0.0.1:{port}/",
            tmp_path,
            f"--window-size={width},1600",
            f"--screenshot={shot}",
        )
    coordinator.store.close()
    assert shot.exists(), result.stderr[-2000:]
    got, _, rows, channels = decode_png(shot.read_bytes())
    return got, rows, channels


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_dashboard_answers_why_each_type_is_not_running(tmp_path: Path) -> None:
    """The page Chromium renders has every element of the operator's view, with the figures
    the pool's heartbeats and jobs give."""
    coordinator = _operator_grid(tmp_path)
    with serve_in_thread(create_app(coordinator)) as port:
        result = _chromium(f"http://127.0.0.1:{port}/", tmp_path, "--dump-dom")
        desktops = _chromium(
            f"http://127.0.0.1:{port}/desktops?department=dept_chem", tmp_path, "--dump-dom"
        )
    coordinator.store.close()
    page = _Page()
    page.feed(result.stdout)
    assert page.tables, result.stderr[-2000:]
    assert _flat(page.text["pool"]) == (
        "5 desktops enrolled, 20 cores, 63 GiB; 1 core running research VMs; "
        "5 desktops of the grid never enrolled."
    )
    assert _flat(page.text["demand-health"]).startswith("The job queue was read ")
    header, *rows = page.tables["types"]
    assert header == TYPES_HEADER
    by_type = {row[0]: row for row in rows}
    assert by_type[BOINC][2:] == ["1", "1", "1", "1", "0"]
    assert by_type[BOINC][1] == (
        "runs what the jobs ask for; 1 job too big for one VM of it (1 CPUs, 512 MB)"
    )
    assert by_type[BULK][2:] == ["1", "0", "0", "0", "1"]
    assert by_type[BULK][1] == (
        f"declined 1 time in the last hour, mostly image_unavailable: {DETAIL}"
    )
    assert _flat(page.text["unknown-note"]).startswith(
        f"2 jobs name a VM type the grid does not have, and start no VM: {TYPO} (2)."
    )
    assert _flat(page.text["unfit-note"]).startswith("1 job name a VM type that cannot hold")
    assert page.text["cannot-work"] == (
        "VT-x held by another hypervisor1no VT-x/AMD-V1too little memory1"
    )
    assert _flat(page.text["held-by"]) == "VT-x held by: Hyper-V (1)"
    # The three that can never work are not shown as idle.
    assert page.text["desktops"] == ("idle1busy1owner_present0offline0revoked0can never work3")
    departments = {row[0]: row[1:] for row in page.tables["departments"][1:]}
    assert departments["dept_chem"] == ["3", "1", "0", "0", "0", "1", "0.0"]
    assert departments["dept_phys"] == ["1", "0", "0", "0", "0", "0", "0.0"]
    delivered = dict(page.tables["delivered"][1:])
    assert delivered == {BOINC: "0.0", "all": "0.0"}  # 3 rounds of 5 s: 15 core-seconds
    (decline,) = page.tables["declines"][1:]
    assert decline[1:] == ["desk04", "dept_phys", BULK, "image_unavailable", DETAIL]
    assert _flat(page.text["versions"]).startswith("Agent versions: 0.1.0 (4), 0.0.9 (1).")
    listing = _Page()
    listing.feed(desktops.stdout)
    names = [row[0] for row in listing.tables["desktop-list"][1:]]
    assert names == ["desk00", "desk01", "desk02", "desk03"]
    held = listing.tables["desktop-list"][2]
    assert held[7] == "no (Hyper-V)"
    assert listing.tables["desktop-list"][1][8] == f"{BOINC} (running)"


def test_dashboard_names_a_failing_demand_source(tmp_path: Path) -> None:
    coordinator = _operator_grid(tmp_path)
    Path(coordinator.config.demand.job_ads_file).unlink()
    coordinator.clock.now += 60  # type: ignore[attr-defined]
    coordinator.allocation_round()
    page = _Page()
    page.feed(render_dashboard(coordinator, [], coordinator.clock()))
    coordinator.store.close()
    health = _flat(page.text["demand-health"])
    assert health.startswith("The job queue was last read 60 s ago; the last try failed 0 s ago:")
    assert "jobs.ads" in health
    assert all(row[1].startswith("demand unknown:") for row in page.tables["types"][1:])


def test_screenshot_shows_demand_over_an_equal_supply_and_the_desktops_that_cannot_work(
    tmp_path: Path,
) -> None:
    """Demand equal to supply: demand is drawn last and thinner, so its colour shows along
    the supply line; the bars of desktops that can never work show each reason's colour."""
    _, rows, channels = _screenshot(tmp_path, 800)
    demand_y, demand_len = _longest_row(pixels_of(rows, channels, COLOURS["demand"]))
    assert demand_len >= 500, "the demand line is hidden"
    supply = pixels_of(rows, channels, COLOURS["supply"])
    # Supply's wider line shows above and below demand's, on the same stretch.
    assert sum(1 for _, y in supply if y == demand_y - 2) >= 400
    assert sum(1 for _, y in supply if y == demand_y + 2) >= 400
    for reason, colour in CANNOT_WORK_COLOURS.items():
        assert len(pixels_of(rows, channels, colour)) > 100, reason


def test_narrow_window_keeps_the_chart_whole(tmp_path: Path) -> None:
    """In a 420 px wide window the chart scales down: its demand line ends inside the window
    (the page does not need a horizontal scroll to show "now")."""
    width, rows, channels = _screenshot(tmp_path, 420)
    assert width == 420
    demand_y, demand_len = _longest_row(pixels_of(rows, channels, COLOURS["demand"]))
    line = [x for x, y in pixels_of(rows, channels, COLOURS["demand"]) if y == demand_y]
    assert demand_len >= 200
    assert max(line) < 420 - 16  # inside the page's padding: the chart fits the window


def test_chart_fits_the_data_age_and_downsamples() -> None:
    now = 1_800_000_000.0
    history = [
        (now - 1800 + i * 0.25, {"a": 5}, {"a": 1000 if i == 3333 else 4}, {"a": 3})
        for i in range(7200)
    ]
    assert chart_span(history, now) == 1800
    assert chart_span(history[-10:], now) == 600  # at least ten minutes
    assert chart_span([(now - 86400, {}, {}, {}), *history], now) == 6 * 3600
    svg = series_chart(history, now, chart_span(history, now))
    for name in ("demand", "supply", "running"):
        points = svg.split(f'class="series-{name}"')[1].split('points="')[1].split('"')[0]
        assert 0 < len(points.split()) <= MAX_POINTS
    assert ">-30m<" in svg
    assert ">now<" in svg
    # The one-sample peak survives downsampling: the axis' top label is above it.
    assert ">1104<" in svg  # 1000 * 1.1 + 1, up to a multiple of 4
    # Demand is the last series drawn (on top) and the thinnest.
    assert svg.index("series-demand") > svg.index("series-supply")


def test_make_lab_job_reads_the_types_row_as_rendered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """scripts/lab_job.py (step 5 of `make lab-job`) reads a type's demand and why from the
    dashboard's HTML: it keeps reading them from the page as rendered now."""
    spec = importlib.util.spec_from_file_location(
        "lab_job_script", Path(__file__).resolve().parents[2] / "scripts" / "lab_job.py"
    )
    assert spec is not None
    assert spec.loader is not None
    lab_job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lab_job)
    coordinator = _operator_grid(tmp_path)
    page = render_dashboard(coordinator, [], coordinator.clock())
    coordinator.store.close()
    metrics = f'cvmc_demand_jobs{{vm_name="{BULK}"}} 1.0\n'
    monkeypatch.setattr(
        lab_job, "coordinator_get", lambda _m, path: page if path == "/" else metrics
    )
    assert lab_job.demand_shown({"idle_type": BULK}) == (
        1,
        1,
        f"declined 1 time in the last hour, mostly image_unavailable: {DETAIL}",
    )
