"""The operator's view through the real app and store (SQLite and PostgreSQL): desktops that
can never take work, declines with the agent's detail, jobs naming no known VM type, demand
health, core-hours per department and VM type, the read-only admin API and its /metrics.

Every figure the tests check comes from heartbeats sent through the signed API and job ads read
by the real demand parser; the expected values are worked out from what the test sent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from coordinator.coord_support import (
    BOINC,
    BULK,
    Desk,
    dump,
    heartbeat,
    running,
    scrape,
    set_demand,
)

from cvmc.coordinator.service.coordinator import USAGE_GAP_ROUNDS

TYPO = "its-u11-boinc-2012041"  # BOINC's name with its last digit missing
DETAIL = "image lab-el9-bulk-20261101: the minisign signature does not verify"


def _why(summary: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {t["name"]: (t["status"], t["why"]) for t in summary["vm_types"]}


def test_the_operator_sees_why_each_type_is_not_running(setup: Any) -> None:
    coordinator, client, _ = setup
    good = Desk(client, "desk00")
    held = Desk(client, "desk01")
    absent = Desk(client, "desk02")
    small = Desk(client, "desk03")
    other = Desk(client, "desk04")  # dept_phys
    good.leases(heartbeat(memory_free_mb=600))  # room for one BOINC VM (512), not for BULK
    held.leases(heartbeat(hw_virt=False, hw_virt_held_by="Hyper-V", agent_version="0.0.9"))
    absent.leases(heartbeat(hw_virt=False))
    small.leases(heartbeat(memory_total_mb=400, memory_free_mb=300))
    other.leases()
    set_demand(coordinator, (BOINC, 1), (BULK, 1), (TYPO, 1), (TYPO, 1))
    coordinator.allocation_round()
    (boinc,) = good.leases(heartbeat(memory_free_mb=600))
    assert boinc["vm_name"] == BOINC
    (bulk,) = other.leases()
    assert bulk["vm_name"] == BULK
    busy = running([boinc])
    busy["resources"]["memory_free_mb"] = 100  # no room left for BULK
    good.leases(busy)
    declined = [{"lease_id": bulk["lease_id"], "reason": "image_unavailable", "detail": DETAIL}]
    assert other.leases(heartbeat(declined=declined)) == []
    coordinator.allocation_round()

    summary = client.get("/admin/v1/summary").json()
    assert summary["pool"] | {"states": None, "agent_versions": None} == {
        "desktops": 5,
        "cores": 20,
        "memory_mb": 4 * 16000 + 400,
        "never_enrolled": 5,  # the grid has 10 desktops
        "cores_running": 1,
        "states": None,
        "agent_versions": None,
    }
    assert summary["pool"]["agent_versions"] == {"0.1.0": 4, "0.0.9": 1}
    # The three desktops that can never work are counted apart, not as idle.
    assert summary["pool"]["states"] == {
        "idle": 1,
        "busy": 1,
        "owner_present": 0,
        "offline": 0,
        "revoked": 0,
        "cannot_work": 3,
    }
    assert summary["cannot_work"] == {"hw_virt_held": 1, "no_hw_virt": 1, "too_little_memory": 1}
    assert summary["hw_virt_held_by"] == {"Hyper-V": 1}
    assert summary["demand"]["unknown_vm_names"] == {TYPO: 2}
    assert summary["demand"]["failing"] is False
    why = _why(summary)
    assert why[BOINC] == ("ok", "runs what the jobs ask for")
    # The only desktop with room for BULK declined it: blocked, with the agent's detail.
    assert why[BULK][0] == "blocked"
    assert why[BULK][1] == f"declined 1 time in the last hour, mostly image_unavailable: {DETAIL}"
    (record,) = summary["recent_declines"]
    assert record | {"at": None} == {
        "at": None,
        "desktop": "desk04",
        "department": "dept_phys",
        "vm_name": BULK,
        "reason": "image_unavailable",
        "detail": DETAIL,
    }
    by_dept = {row["department"]: row for row in summary["departments"]}
    assert by_dept["dept_chem"]["states"]["busy"] == 1
    assert by_dept["dept_chem"]["states"]["idle"] == 3
    assert by_dept["dept_phys"]["states"]["idle"] == 1

    desktops = client.get("/admin/v1/desktops", params={"department": "dept_chem"}).json()
    assert [d["name"] for d in desktops] == ["desk00", "desk01", "desk02", "desk03"]
    first, second = desktops[0], desktops[1]
    assert first["vms"] == [{"vm_name": BOINC, "state": "running"}]
    assert (first["state"], first["hw_virt"], first["memory_total_mb"]) == ("busy", True, 16000)
    assert (second["hw_virt"], second["hw_virt_held_by"]) == (False, "Hyper-V")
    (phys,) = client.get("/admin/v1/desktops", params={"department": "dept_phys"}).json()
    assert (phys["name"], phys["recent_declines"]) == ("desk04", 1)
    page = client.get("/admin/v1/desktops", params={"limit": 2, "offset": 3}).json()
    assert [d["name"] for d in page] == ["desk03", "desk04"]
    assert client.get("/admin/v1/declines").json() == summary["recent_declines"]

    samples = scrape(client.get("/metrics").text)
    assert samples['cvmc_desktops_cannot_work{reason="hw_virt_held"}'] == 1
    assert samples['cvmc_desktops_cannot_work{reason="too_little_memory"}'] == 1
    assert samples[f'cvmc_demand_unknown_jobs{{vm_name="{TYPO}"}}'] == 2
    assert samples[f'cvmc_declines_recent{{reason="image_unavailable",vm_name="{BULK}"}}'] == 1
    assert samples["cvmc_desktops_never_enrolled"] == 5
    assert samples["cvmc_pool_cores"] == 20
    assert samples["cvmc_pool_memory_bytes"] == (4 * 16000 + 400) * 1024 * 1024
    assert samples["cvmc_cores_running"] == 1
    assert samples['cvmc_desktops_agent_version{version="0.0.9"}'] == 1
    assert samples["cvmc_demand_failing"] == 0
    assert samples["cvmc_demand_last_read_timestamp_seconds"] == coordinator.clock()
    # summary, two pages of desktops by department, one by offset, declines
    assert samples['cvmc_http_requests_total{route="admin",status="200"}'] == 5


@pytest.mark.parametrize(
    "query",
    [
        {"limit": "0"},
        {"limit": "1001"},
        {"limit": "-1"},
        {"limit": "ten"},
        {"limit": "\uff11\uff10"},  # fullwidth "10": str.isdigit() is true for it
        {"offset": "99999999999"},
        {"department": "dept chem"},
        {"department": "x" * 65},
        {"department": ""},
    ],
)
def test_bad_admin_queries_get_400_and_change_nothing(setup: Any, query: dict[str, str]) -> None:
    coordinator, client, _ = setup
    Desk(client, "desk00").leases()
    before = dump(coordinator.store.engine)
    reply = client.get("/admin/v1/desktops", params=query)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"] == "malformed"
    assert next(iter(query)) in reply.json()["message"]
    assert dump(coordinator.store.engine) == before


def test_core_hours_per_department_and_type(setup: Any) -> None:
    """Each round adds a running VM's CPUs times the time since the last round; a gap longer
    than USAGE_GAP_ROUNDS rounds counts only that long (a paused leader saw nothing)."""
    coordinator, client, clock = setup
    chem, phys = Desk(client, "desk00"), Desk(client, "desk04")
    chem.leases()
    phys.leases()
    set_demand(coordinator, (BOINC, 1), (BULK, 1))
    coordinator.allocation_round()
    chem_leases, phys_leases = chem.leases(), phys.leases()
    chem.leases(running(chem_leases))
    phys.leases(running(phys_leases))
    step = coordinator.config.leases.allocate_s
    for _ in range(4):
        clock.now += step
        coordinator.allocation_round()
    clock.now += 100 * step  # a long pause: counted as USAGE_GAP_ROUNDS rounds
    chem.leases(running(chem_leases))
    phys.leases(running(phys_leases))
    coordinator.allocation_round()
    expected = (4 + USAGE_GAP_ROUNDS) * step  # one CPU each
    got = {
        (row["department"], vm): hours
        for row in client.get("/admin/v1/departments").json()
        for vm, hours in row["core_hours"].items()
    }
    (chem_type,) = {lease["vm_name"] for lease in chem_leases}
    (phys_type,) = {lease["vm_name"] for lease in phys_leases}
    assert {chem_type, phys_type} == {BOINC, BULK}
    assert got == {
        ("dept_chem", chem_type): round(expected / 3600, 3),
        ("dept_phys", phys_type): round(expected / 3600, 3),
    }
    samples = scrape(client.get("/metrics").text)
    key = f'cvmc_core_seconds_total{{department="dept_chem",vm_name="{chem_type}"}}'
    assert samples[key] == pytest.approx(expected)


def test_a_failing_demand_source_shows_on_every_type(setup: Any) -> None:
    coordinator, client, clock = setup
    Desk(client, "desk00").leases()
    set_demand(coordinator, (BOINC, 1))
    coordinator.allocation_round()
    read_at = clock.now
    Path(coordinator.config.demand.job_ads_file).unlink()
    clock.now += 60
    coordinator.allocation_round()
    summary = client.get("/admin/v1/summary").json()
    assert summary["demand"]["failing"] is True
    assert "jobs.ads" in summary["demand"]["last_error"]
    for status, why in _why(summary).values():
        assert status == "blocked"
        assert why.startswith("demand unknown: the job queue was not read for 60 s (")
    samples = scrape(client.get("/metrics").text)
    assert samples["cvmc_demand_failing"] == 1
    assert samples["cvmc_demand_last_read_timestamp_seconds"] == read_at
    set_demand(coordinator, (BOINC, 1))
    clock.now += 5
    coordinator.allocation_round()
    summary = client.get("/admin/v1/summary").json()
    assert summary["demand"]["failing"] is False
    assert summary["demand"]["last_error"] is not None  # still shown, as the last error
    assert _why(summary)[BOINC][0] != "blocked"


def test_no_free_desktop_counts_only_desktops_that_can_work_as_idle(setup: Any) -> None:
    """The owner is at the only able desktop; the idle one's VT-x is held: the why counts no
    idle desktop (that one can never take the work), and the metric's states still list it."""
    coordinator, client, _ = setup
    Desk(client, "desk00").leases(heartbeat(users=1, may_start=False))
    Desk(client, "desk01").leases(heartbeat(hw_virt=False, hw_virt_held_by="Hyper-V"))
    set_demand(coordinator, (BOINC, 1))
    coordinator.allocation_round()
    why = _why(client.get("/admin/v1/summary").json())
    assert why[BOINC] == (
        "waiting",
        "no free desktop for 1 more: 0 idle, 1 with their owner, 0 busy, 0 offline",
    )
    samples = scrape(client.get("/metrics").text)
    assert samples['cvmc_desktops{state="idle"}'] == 1
    assert samples[f'cvmc_declines_recent{{reason="memory",vm_name="{BULK}"}}'] == 0
