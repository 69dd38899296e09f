"""Lease allocation properties (hypothesis) against the pure function ``allocate``."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvmc.coordinator.domain.grid import VmType, parse_grid
from cvmc.coordinator.domain.leases import (
    Allocation,
    DesktopView,
    LeaseView,
    _Filler,
    allocate,
    claimed_leases,
)

TYPES = parse_grid(
    {
        "name": "props",
        "max_vms_per_desktop": 4,
        "desktops": [],
        "vm_types": [
            {"name": n, "image": f"{n}.qcow2", "cpus": c, "memory_mb": m, "os": "LINUX"}
            for n, c, m in [
                ("its-u11-boinc-20120415", 1, 512),
                ("lab-el9-bulk-20261101", 2, 2048),
                ("gpu-sim-2026", 4, 4096),
            ]
        ],
    }
).vm_types
NOW = 10_000.0
TTL = 300.0
DEPTS = ["dept_a", "dept_b", "dept_c", "default"]


@st.composite
def worlds(
    draw: st.DrawFn,
) -> tuple[dict[str, int], list[DesktopView], list[LeaseView], frozenset[tuple[str, str]], int]:
    n = draw(st.integers(0, 25))
    desktops = [
        DesktopView(
            id=f"d-{i}",
            department=draw(st.sampled_from(DEPTS)),
            online=draw(st.booleans()) or draw(st.booleans()),
            may_start=draw(st.booleans()) or draw(st.booleans()),
            hw_virt=draw(st.booleans()) or draw(st.booleans()),
            max_vms=draw(st.integers(1, 4)),
            memory_free_mb=draw(st.integers(0, 16000)),
            revoked=draw(st.integers(0, 9)) == 0,
            unleased_vms=draw(st.integers(0, 1)),
        )
        for i in range(n)
    ]
    names = [t.name for t in TYPES] + ["retired-type-1"]
    leases = []
    for j in range(draw(st.integers(0, 30)) if n else 0):
        spec = draw(st.sampled_from(names))
        created = draw(st.floats(NOW - 1000, NOW))
        leases.append(
            LeaseView(
                id=f"l-old-{j}",
                desktop_id=draw(st.sampled_from([d.id for d in desktops] + ["d-gone"])),
                vm_name=spec,
                cpus=1,
                memory_mb=512,
                created_at=created,
                start_by=created + draw(st.sampled_from([10.0, TTL, 2 * TTL])),
                state=draw(st.sampled_from(["offered", "starting", "running"])),
            )
        )
    demand = {t.name: draw(st.integers(0, 30)) for t in TYPES}
    blocked = frozenset(
        (d.id, t.name) for d in desktops for t in TYPES if draw(st.integers(0, 15)) == 0
    )
    return demand, desktops, leases, blocked, draw(st.integers(1, 3))


def run(
    world: tuple[
        dict[str, int], list[DesktopView], list[LeaseView], frozenset[tuple[str, str]], int
    ],
    claimed: frozenset[str] = frozenset(),
) -> tuple[Allocation, list[LeaseView]]:
    demand, desktops, leases, blocked, cap = world
    counter = itertools.count()
    result = allocate(
        demand=demand,
        types=TYPES,
        desktops=desktops,
        leases=leases,
        blocked=blocked,
        now=NOW,
        ttl_s=TTL,
        max_vms_per_desktop=cap,
        new_id=lambda: f"l-new-{next(counter)}",
        claimed=claimed,
    )
    return result, result.kept(leases)


@given(worlds())
def test_supply_never_exceeds_demand(world: tuple) -> None:  # type: ignore[type-arg]
    _, kept = run(world)
    supply = Counter(lease.vm_name for lease in kept)
    for t in TYPES:
        assert supply[t.name] <= world[0][t.name]
    assert set(supply) <= {t.name for t in TYPES}


@given(worlds())
def test_offline_revoked_and_expired_leases_go(world: tuple) -> None:  # type: ignore[type-arg]
    _, desktops, leases, _, _ = world
    result, kept = run(world)
    by_id = {d.id: d for d in desktops}
    for lease in kept:
        desk = by_id[lease.desktop_id]
        assert desk.online
        assert not desk.revoked
        assert lease.state != "offered" or lease.start_by > NOW
    for lease in leases:
        desk = by_id.get(lease.desktop_id)
        if desk is None or not desk.online or desk.revoked:
            assert lease.id in result.revoked


@given(worlds())
def test_new_leases_only_where_they_fit(world: tuple) -> None:  # type: ignore[type-arg]
    _, desktops, _, blocked, cap = world
    result, kept = run(world)
    by_id = {d.id: d for d in desktops}
    spec = {t.name: t for t in TYPES}
    per_desk = Counter(lease.desktop_id for lease in kept)
    for lease in result.new:
        desk = by_id[lease.desktop_id]
        assert desk.online
        assert desk.may_start
        assert desk.hw_virt
        assert not desk.revoked
        assert (desk.id, lease.vm_name) not in blocked
        assert (lease.cpus, lease.memory_mb) == (
            spec[lease.vm_name].cpus,
            spec[lease.vm_name].memory_mb,
        )
        assert lease.start_by == NOW + TTL
    for desk_id, count in per_desk.items():
        if any(lease.desktop_id == desk_id for lease in result.new):
            desk = by_id[desk_id]
            assert count + desk.unleased_vms <= min(desk.max_vms, cap)
            pending = sum(
                lease.memory_mb
                for lease in kept
                if lease.desktop_id == desk_id and lease.state == "offered"
            )
            assert pending <= desk.memory_free_mb


@given(worlds())
def test_allocation_is_work_conserving(world: tuple) -> None:  # type: ignore[type-arg]
    """Demand left unmet means no eligible desktop could take one more lease of that type."""
    demand, desktops, _, blocked, cap = world
    _, kept = run(world)
    supply = Counter(lease.vm_name for lease in kept)
    used = Counter(lease.desktop_id for lease in kept)
    pending: Counter[str] = Counter()
    for lease in kept:
        if lease.state == "offered":
            pending[lease.desktop_id] += lease.memory_mb
    for t in TYPES:
        if supply[t.name] < demand[t.name]:
            for d in desktops:
                fits = (
                    d.online
                    and not d.revoked
                    and d.may_start
                    and d.hw_virt
                    and (d.id, t.name) not in blocked
                    and min(d.max_vms, cap) - used[d.id] - d.unleased_vms > 0
                    and d.memory_free_mb - pending[d.id] >= t.memory_mb
                )
                assert not fits, (t.name, d)


def _pick_by_scan(filler: _Filler, vm: VmType) -> DesktopView | None:
    """Rule 3 read literally, scanning every desktop: the least-loaded department (ties by
    name) that has an eligible desktop, and in it the desktop with the fewest VMs, then the
    most free memory, then the smallest id."""
    eligible = [d for d in filler.by_id.values() if vm.name in filler.heaps and filler._fits(d, vm)]
    if not eligible:
        return None
    dept = min({d.department for d in eligible}, key=lambda n: (filler.dept_load[n], n))
    return min(
        (d for d in eligible if d.department == dept),
        key=lambda d: (filler.used[d.id] + d.unleased_vms, -filler.free_mem(d), d.id),
    )


@given(worlds())
def test_pick_matches_a_scan_of_every_desktop(world: tuple) -> None:  # type: ignore[type-arg]
    """The heaps' pick (departments in load order, stale entries dropped lazily) chooses what
    a full scan chooses, lease after lease: the same leases on the same desktops."""
    fast, _ = run(world)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_Filler, "pick", _pick_by_scan)
        slow, _ = run(world)
    assert [(lease.desktop_id, lease.vm_name) for lease in fast.new] == [
        (lease.desktop_id, lease.vm_name) for lease in slow.new
    ]
    assert fast.revoked == slow.revoked


@given(st.integers(1, 6), st.integers(0, 60))
def test_fair_across_departments(departments: int, jobs: int) -> None:
    """Equal departments with room to spare: new leases differ by at most one between them."""
    desktops = [
        DesktopView(
            id=f"d-{dept}-{i}",
            department=f"dept_{dept}",
            online=True,
            may_start=True,
            hw_virt=True,
            max_vms=2,
            memory_free_mb=16000,
        )
        for dept in range(departments)
        for i in range(40)
    ]
    counter = itertools.count()
    result = allocate(
        demand={TYPES[0].name: jobs},
        types=TYPES,
        desktops=desktops,
        leases=[],
        now=NOW,
        ttl_s=TTL,
        max_vms_per_desktop=2,
        new_id=lambda: f"l-{next(counter)}",
    )
    assert len(result.new) == jobs
    per_dept = Counter(lease.desktop_id.rsplit("-", 1)[0] for lease in result.new)
    counts = [per_dept.get(f"d-{dept}", 0) for dept in range(departments)]
    assert max(counts) - min(counts) <= 1
    # Spread inside a department too: nobody gets a second VM while a peer has none.
    per_desk = Counter(lease.desktop_id for lease in result.new)
    assert max(per_desk.values(), default=0) <= 1 or len(result.new) > departments * 40


def test_revocation_takes_offers_before_running_vms() -> None:
    desk = DesktopView(
        id="d-1",
        department="dept_a",
        online=True,
        may_start=True,
        hw_virt=True,
        max_vms=4,
        memory_free_mb=16000,
    )
    name = TYPES[0].name
    leases = [
        LeaseView(f"l-{state}", "d-1", name, 1, 512, NOW - 5, NOW + 100, state)
        for state in ("running", "offered", "starting")
    ]
    result = allocate(
        demand={name: 1},
        types=TYPES,
        desktops=[desk],
        leases=leases,
        now=NOW,
        ttl_s=TTL,
        max_vms_per_desktop=4,
        new_id=lambda: "x",
    )
    assert result.revoked == {"l-offered": "demand", "l-starting": "demand"}
    assert result.new == []


@given(worlds(), st.data())
def test_a_vm_that_runs_a_job_is_revoked_last(
    world: tuple,  # type: ignore[type-arg]
    data: st.DataObject,
) -> None:
    """Trimming for demand takes every running VM without a job of a type before one that
    runs a job (``claimed``), whatever their age and department."""
    leases = world[2]
    running = [lease.id for lease in leases if lease.state == "running"]
    claimed = (
        frozenset(data.draw(st.lists(st.sampled_from(running), unique=True)))
        if running
        else frozenset()
    )
    result, _ = run(world, claimed)
    trimmed = {lid for lid, why in result.revoked.items() if why == "demand"}
    for lease in leases:
        if lease.id in trimmed and lease.id in claimed:
            unclaimed_kept = [
                other.id
                for other in leases
                if other.vm_name == lease.vm_name
                and other.id not in claimed
                and other.id not in result.revoked
            ]
            assert unclaimed_kept == [], (lease.id, unclaimed_kept)


def test_demand_drop_keeps_the_vm_the_negotiator_just_matched() -> None:
    """The lab's race: two VMs run, a job is matched to the newer one, demand drops to 1. The
    round revokes the older VM, which runs nothing, and keeps the one with the job."""
    desktops = [
        DesktopView(f"d-{i}", "dept_a", True, True, True, 2, 8000, name=f"pc-{i}") for i in (1, 2)
    ]
    name = TYPES[0].name
    older = LeaseView("l-older", "d-1", name, 1, 512, NOW - 60, NOW, "running", slot=1)
    newer = LeaseView("l-newer", "d-2", name, 1, 512, NOW - 30, NOW, "running", slot=0)
    claimed = claimed_leases([older, newer], desktops, {("pc-2", 0)})
    assert claimed == {"l-newer"}

    def trim(claimed: frozenset[str]) -> dict[str, str]:
        return allocate(
            demand={name: 1},
            types=TYPES,
            desktops=desktops,
            leases=[older, newer],
            now=NOW,
            ttl_s=TTL,
            max_vms_per_desktop=2,
            new_id=lambda: "x",
            claimed=claimed,
        ).revoked

    assert trim(claimed) == {"l-older": "demand"}
    assert trim(frozenset()) == {"l-newer": "demand"}  # blind to jobs: the newest goes


def test_claimed_leases_match_desktop_name_and_slot() -> None:
    desktops = [DesktopView("d-1", "default", True, True, True, 2, 8000, name="pc-1")]
    leases = [
        LeaseView("l-a", "d-1", "t", 1, 512, NOW, NOW, "running", slot=0),
        LeaseView("l-b", "d-1", "t", 1, 512, NOW, NOW, "running", slot=1),
        LeaseView("l-c", "d-1", "t", 1, 512, NOW, NOW, "offered"),  # no slot yet
        LeaseView("l-d", "d-gone", "t", 1, 512, NOW, NOW, "running", slot=0),
    ]
    assert claimed_leases(leases, desktops, {("pc-1", 1), ("pc-9", 0)}) == {"l-b"}
    assert claimed_leases(leases, desktops, set()) == frozenset()


@pytest.mark.parametrize("required", [True, False])
def test_hw_virtualization_is_required_only_when_the_policy_says_so(required: bool) -> None:
    """grid_policy.require_hw_virtualization: false lets desktops without VT-x take leases."""
    desk = DesktopView(
        id="d-1",
        department="dept_a",
        online=True,
        may_start=True,
        hw_virt=False,
        max_vms=2,
        memory_free_mb=16000,
    )
    result = allocate(
        demand={TYPES[0].name: 1},
        types=TYPES,
        desktops=[desk],
        leases=[],
        now=NOW,
        ttl_s=TTL,
        max_vms_per_desktop=2,
        new_id=lambda: "l-1",
        require_hw_virt=required,
    )
    assert [lease.desktop_id for lease in result.new] == ([] if required else ["d-1"])


def test_grid_file_reads_the_hw_virtualization_policy() -> None:
    raw = {
        "name": "g",
        "vm_types": [
            {
                "name": "its-u11-boinc-20120415",
                "image": "x.qcow2",
                "cpus": 1,
                "memory_mb": 512,
                "os": "LINUX",
                "arch": "X86_64",
                "disk_gb": 5,
            }
        ],
        "max_vms_per_desktop": 2,
        "desktops": [],
    }
    assert parse_grid(raw).require_hw_virtualization is True
    assert (
        parse_grid({**raw, "require_hw_virtualization": False}).require_hw_virtualization is False
    )
    with pytest.raises(
        ValueError, match=r"^grid file: grid_policy\.require_hw_virtualization: 'no' is not true"
    ):
        parse_grid({**raw, "require_hw_virtualization": "no"})
