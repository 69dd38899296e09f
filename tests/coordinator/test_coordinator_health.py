"""The operator's rules as pure functions (``cvmc.coordinator.domain.health``): which desktops
can never take work, and the one sentence that says why a VM type runs fewer VMs than wanted."""

from __future__ import annotations

import pytest

from cvmc.coordinator.domain.demand import (
    IDLE,
    UNKNOWN_NAME_CHARS,
    UNKNOWN_NAMES,
    JobView,
    count_demand,
)
from cvmc.coordinator.domain.health import (
    DemandHealth,
    HardwareGroup,
    TypeFacts,
    able_to_hold,
    cannot_work,
    cannot_work_counts,
    held_by_counts,
    pool_size,
    states_of_able,
    why_not_running,
)

GROUPS = (
    HardwareGroup(hw_virt=True, held_by=None, memory_total_mb=16000, cpus=8, desktops=10),
    HardwareGroup(hw_virt=False, held_by="Hyper-V", memory_total_mb=16000, cpus=8, desktops=3),
    HardwareGroup(
        hw_virt=False, held_by="VBS/memory integrity", memory_total_mb=8000, cpus=4, desktops=1
    ),
    HardwareGroup(hw_virt=False, held_by=None, memory_total_mb=4000, cpus=2, desktops=2),
    HardwareGroup(hw_virt=True, held_by=None, memory_total_mb=1000, cpus=2, desktops=4),
    HardwareGroup(hw_virt=True, held_by=None, memory_total_mb=0, cpus=2, desktops=5),  # unknown
)


def test_cannot_work_counts_each_desktop_once_by_its_first_reason() -> None:
    assert cannot_work_counts(GROUPS, 2048, require_hw_virt=True) == {
        "hw_virt_held": 4,
        "no_hw_virt": 2,
        "too_little_memory": 4,  # the 0 MB group has not reported: not counted
    }
    # Without the requirement, software emulation runs anywhere with the memory.
    assert cannot_work_counts(GROUPS, 2048, require_hw_virt=False) == {
        "hw_virt_held": 0,
        "no_hw_virt": 0,
        "too_little_memory": 4,
    }
    assert cannot_work(GROUPS[3], 8000, require_hw_virt=True) == "no_hw_virt"
    assert held_by_counts(GROUPS) == {"Hyper-V": 3, "VBS/memory integrity": 1}


def test_desktops_that_cannot_work_leave_their_state() -> None:
    groups = (
        HardwareGroup(True, None, 16000, 8, 10, "idle"),
        HardwareGroup(False, "Hyper-V", 16000, 8, 3, "idle"),
        HardwareGroup(False, None, 16000, 8, 2, "offline"),
        HardwareGroup(True, None, 1000, 2, 1, "owner_present"),
    )
    states = {"idle": 13, "busy": 0, "owner_present": 1, "offline": 2, "revoked": 4}
    assert states_of_able(groups, states, 2048, require_hw_virt=True) == {
        "idle": 10,
        "busy": 0,
        "owner_present": 0,
        "offline": 0,
        "revoked": 4,
        "cannot_work": 6,
    }


def test_able_to_hold_and_pool_size() -> None:
    assert able_to_hold(GROUPS, 2048, require_hw_virt=True) == 15
    assert able_to_hold(GROUPS, 32000, require_hw_virt=True) == 5  # only the unknown ones
    size = pool_size(GROUPS)
    assert (size.desktops, size.cores) == (25, 80 + 24 + 4 + 4 + 8 + 10)
    assert size.memory_mb == 160000 + 48000 + 8000 + 8000 + 4000


def facts(**changes: object) -> TypeFacts:
    base: dict[str, object] = {
        "name": "t",
        "cpus": 2,
        "memory_mb": 2048,
        "demand": 10,
        "unfit": 0,
        "leases": 0,
        "running": 0,
        "able": 50,
    }
    base.update(changes)
    return TypeFacts(**base)  # type: ignore[arg-type]


STATES = {"idle": 0, "busy": 12, "owner_present": 30, "offline": 8, "revoked": 1}
NOW = 10_000.0
OK = DemandHealth(read_at=NOW - 5)


@pytest.mark.parametrize(
    ("given", "health", "status", "why"),
    [
        (
            facts(running=3),
            DemandHealth(read_at=NOW - 600, error="condor_q: timed out", error_at=NOW - 5),
            "blocked",
            "demand unknown: the job queue was not read for 10 min (condor_q: timed out)",
        ),
        (
            facts(),
            DemandHealth(error="no schedd", error_at=NOW - 5),
            "blocked",
            "demand unknown: the job queue was never read (no schedd)",
        ),
        (facts(demand=0), OK, "ok", "no job asks for it"),
        (
            facts(demand=0, unfit=3),
            OK,
            "blocked",
            "no job it can hold; 3 jobs too big for one VM of it (2 CPUs, 2048 MB)",
        ),
        (facts(running=10, leases=10), OK, "ok", "runs what the jobs ask for"),
        (
            facts(able=0),
            OK,
            "blocked",
            "no enrolled desktop's hardware can hold it (it needs 2048 MB; see the desktops "
            "that can never take work)",
        ),
        (
            facts(declined={"memory": 2, "image_unavailable": 5}, detail="bad signature"),
            OK,
            "blocked",
            "declined 7 times in the last hour, mostly image_unavailable: bad signature",
        ),
        (
            facts(leases=4, running=1, declined={"memory": 1}),
            OK,
            "waiting",
            "declined 1 time in the last hour, mostly memory",
        ),
        (facts(leases=4, running=1), OK, "waiting", "3 VMs offered or starting"),
        (
            facts(leases=2, running=2, unfit=1),
            OK,
            "waiting",
            "no free desktop for 8 more: 0 idle, 30 with their owner, 12 busy, 8 offline; "
            "1 job too big for one VM of it (2 CPUs, 2048 MB)",
        ),
    ],
)
def test_why_not_running_takes_the_first_rule_that_applies(
    given: TypeFacts, health: DemandHealth, status: str, why: str
) -> None:
    got = why_not_running(given, health, STATES, NOW)
    assert (got.status, got.why) == (status, why)


def test_a_demand_error_older_than_the_last_read_is_not_failing() -> None:
    assert not DemandHealth(read_at=NOW, error="x", error_at=NOW - 1).failing
    assert DemandHealth(read_at=NOW - 1, error="x", error_at=NOW).failing
    assert not DemandHealth().failing


def test_unknown_vm_names_are_bounded() -> None:
    """A job's vm_name is the researcher's text: at most UNKNOWN_NAMES distinct names are
    kept, each cut, while every such job is still counted."""
    jobs = [JobView(IDLE, f"typo-{i:03d}-" + "x" * 200) for i in range(3 * UNKNOWN_NAMES)]
    jobs += [JobView(IDLE, "typo-000-" + "x" * 200)] * 4
    demand = count_demand(jobs, ["real"], count_running=False)
    assert demand.unknown == 3 * UNKNOWN_NAMES + 4
    assert len(demand.unknown_names) == UNKNOWN_NAMES
    assert all(len(name) == UNKNOWN_NAME_CHARS for name in demand.unknown_names)
    assert demand.unknown_names[("typo-000-" + "x" * 200)[:UNKNOWN_NAME_CHARS]] == 5
