"""``/metrics`` through prometheus_client (``cvmc.coordinator.adapters.prometheus``): the whole
exposition parses with prometheus_client's own parser, every family keeps its name, type and
labels, counters print every digit, and the build, process and heartbeat families are there."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from coordinator.coord_support import (
    BOINC,
    BULK,
    Clock,
    Desk,
    make_coordinator,
    scrape,
    set_demand,
    write_setup,
)
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from cvmc import __version__
from cvmc.coordinator.adapters.prometheus import HEARTBEAT_BUCKETS, Exporter
from cvmc.coordinator.adapters.web import create_app
from cvmc.coordinator.service.coordinator import Coordinator

#: Every family the coordinator exposed before prometheus_client, with its type and labels
#: (dashboards and molecule's verify read them): they must not change.
SERVICE_FAMILIES = {
    "cvmc_demand_jobs": ("gauge", {"vm_name"}),
    "cvmc_demand_unfit_jobs": ("gauge", {"vm_name"}),
    "cvmc_leases": ("gauge", {"vm_name"}),
    "cvmc_vms_running": ("gauge", {"vm_name"}),
    "cvmc_desktops": ("gauge", {"state"}),
    "cvmc_unnamed_jobs": ("gauge", set()),
    "cvmc_http_requests_total": ("counter", {"route", "status"}),
    "cvmc_leases_granted_total": ("counter", set()),
    "cvmc_leases_revoked_total": ("counter", {"reason"}),
    "cvmc_leases_declined_total": ("counter", {"reason"}),
    "cvmc_vm_tokens_minted_total": ("counter", set()),
    "cvmc_vm_token_failures_total": ("counter", set()),
    "cvmc_allocation_rounds_total": ("counter", set()),
    "cvmc_allocation_round_seconds": ("gauge", set()),
    "cvmc_rounds_leader": ("gauge", set()),
    "cvmc_demand_errors_total": ("counter", set()),
}


@pytest.fixture
def setup(tmp_path: Path, db_url: str) -> Iterator[tuple[Coordinator, TestClient]]:
    coordinator = make_coordinator(write_setup(tmp_path, db_url), Clock())
    with TestClient(create_app(coordinator)) as client:
        yield coordinator, client
    coordinator.store.close()


def _types(text: str) -> dict[str, str]:
    """Each ``# TYPE`` line's family name and type, as the text says them."""
    return {
        line.split()[2]: line.split()[3] for line in text.splitlines() if line.startswith("# TYPE ")
    }


def test_whole_exposition_parses_and_keeps_every_family(setup: Any) -> None:
    coordinator, client = setup
    desks = [Desk(client, f"desk{i:02d}") for i in range(2)]
    for desk in desks:
        desk.leases()
    set_demand(coordinator, (BOINC, 1), (BULK, 1))
    coordinator.allocation_round()
    for desk in desks:
        desk.leases()
    set_demand(coordinator, (BOINC, 1))  # the bulk job is gone: its lease is revoked
    coordinator.allocation_round()
    reply = client.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = reply.text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    types = _types(text)
    for name, (kind, labels) in SERVICE_FAMILIES.items():
        # The text names a counter with its _total; the parser's family drops it.
        family = families[name.removesuffix("_total") if kind == "counter" else name]
        assert (types[name], family.type) == (kind, kind), name
        assert family.samples, name
        assert all(set(s.labels) == labels for s in family.samples), name
    samples = scrape(text)
    assert samples[f'cvmc_leases{{vm_name="{BOINC}"}}'] == 1
    assert samples[f'cvmc_leases{{vm_name="{BULK}"}}'] == 0
    assert samples["cvmc_leases_granted_total"] == 2
    assert samples['cvmc_leases_revoked_total{reason="demand"}'] == 1
    assert samples["cvmc_allocation_rounds_total"] == 2
    assert samples['cvmc_http_requests_total{route="enrol",status="201"}'] == 2
    assert samples['cvmc_http_requests_total{route="heartbeat",status="200"}'] == 4
    # The build, the process (read from /proc) and the interpreter.
    assert types["cvmc_build_info"] == "gauge"
    assert samples[f'cvmc_build_info{{version="{__version__}"}}'] == 1
    assert samples["process_resident_memory_bytes"] > 0
    assert samples["process_cpu_seconds_total"] > 0
    assert samples["process_open_fds"] > 0
    assert samples["process_start_time_seconds"] > 0
    assert "python_info" in families


def test_heartbeat_histogram_counts_the_heartbeats_answered(setup: Any) -> None:
    _coordinator, client = setup
    desk = Desk(client, "desk00")
    for _ in range(5):
        desk.leases()
    assert desk.beat(seq=1).status_code == 409  # a replay: answered, and timed, too
    text = client.get("/metrics").text
    assert _types(text)["cvmc_heartbeat_duration_seconds"] == "histogram"
    samples = scrape(text)
    name = "cvmc_heartbeat_duration_seconds"
    assert samples[f"{name}_count"] == 6
    assert samples[f'{name}_bucket{{le="+Inf"}}'] == 6
    assert 0 < samples[f"{name}_sum"] < 60
    bounds = [float(b) for b in HEARTBEAT_BUCKETS]
    assert 0.05 in bounds  # the p99 goal is a bucket's bound
    counts = [samples[f'{name}_bucket{{le="{b}"}}'] for b in bounds]
    assert counts == sorted(counts)  # cumulative
    # Enrolments and scrapes are not heartbeats.
    assert samples['cvmc_http_requests_total{route="heartbeat",status="200"}'] == 5


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_counters_above_ten_million_print_every_digit(setup: Any) -> None:
    """``:g`` printed 1.23457e+07 for 12,345,678, and rate() broke. The rounds child's
    cumulative counters arrive through absorb, the web process's own through its requests."""
    coordinator, client = setup
    report = coordinator.round_report()
    big = 12_345_678
    coordinator.absorb(
        type(report)(
            demand=report.demand,
            demand_errors=report.demand_errors,
            counts=report.counts,
            rounds=big + 1,
            round_seconds=0.125,
            granted=2**53 - 1,  # the largest integer a float sample holds exactly
            revoked={"demand": big + 3},
            leader=True,
        )
    )
    coordinator.metrics.requests[("heartbeat", 200)] = 10_000_001
    samples = scrape(client.get("/metrics").text)
    assert samples["cvmc_allocation_rounds_total"] == big + 1
    assert samples["cvmc_leases_granted_total"] == 2**53 - 1
    assert samples['cvmc_leases_revoked_total{reason="demand"}'] == big + 3
    assert samples['cvmc_http_requests_total{route="heartbeat",status="200"}'] == 10_000_001
    assert samples["cvmc_allocation_round_seconds"] == 0.125
    assert samples["cvmc_rounds_leader"] == 1


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_process_metrics_without_proc_stat(setup: Any, tmp_path: Path) -> None:
    """Under systemd's ``ProcSubset=pid`` (the service's sandbox) ``/proc/stat`` is hidden:
    the process families are still there, with a start time near the real one."""
    coordinator, _client = setup
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "self").symlink_to(f"/proc/{os.getpid()}")  # /proc/self, and no /proc/stat
    exporter = Exporter(coordinator, proc=str(proc))
    hidden = scrape(exporter.text().decode())
    real = scrape(Exporter(coordinator).text().decode())
    assert hidden["process_resident_memory_bytes"] > 0
    assert abs(hidden["process_start_time_seconds"] - real["process_start_time_seconds"]) < 2
