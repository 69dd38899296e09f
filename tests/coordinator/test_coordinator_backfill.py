"""Backfill (``grid_backfill``, issue 18 item 3): desktops that no job wants run the backfill
type; real demand preempts it at once; the trim and the departments' fairness ignore it.

The pure ``allocate`` (properties with hypothesis, and the rules one by one), then the real
coordinator on SQLite and PostgreSQL: the heartbeat replies a desktop gets, the dashboard's
counts and ``/metrics``. The agent's side (a backfill VM powered off at once, the real lease
waiting for its slot) runs for real with QEMU in tests/agent/integration/test_agent_qemu.py.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from coordinator.coord_support import (
    BOINC,
    BULK,
    GRID,
    Clock,
    Desk,
    heartbeat,
    make_coordinator,
    scrape,
    set_demand,
    write_setup,
)
from coordinator.test_coordinator_leases import TTL, TYPES, worlds
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from cvmc.coordinator.adapters.web import create_app
from cvmc.coordinator.domain.grid import VmType, parse_grid
from cvmc.coordinator.domain.leases import Allocation, DesktopView, LeaseView, allocate
from cvmc.coordinator.service.coordinator import Coordinator
from cvmc.gridmodel.backfill import Backfill

NOW = 10_000.0
SPARE, REAL = TYPES[0], TYPES[1]  # 512 MB, and 2048 MB


def desk(name: str, dept: str = "dept_a", *, free: int = 8000, **kw: object) -> DesktopView:
    values: dict[str, object] = {
        "id": name,
        "department": dept,
        "online": True,
        "may_start": True,
        "hw_virt": True,
        "max_vms": 2,
        "memory_free_mb": free,
    }
    values.update(kw)
    return DesktopView(**values)  # type: ignore[arg-type]


def lease(
    lease_id: str, desktop: str, vm: str, state: str = "running", *, backfill: bool = False
) -> LeaseView:
    memory = next(t.memory_mb for t in TYPES if t.name == vm)
    return LeaseView(lease_id, desktop, vm, 1, memory, NOW - 60, NOW + 240, state, 0, backfill)


def run(
    desktops: list[DesktopView],
    leases: list[LeaseView],
    demand: dict[str, int] | None = None,
    *,
    backfill: VmType | None = SPARE,
    most: int = 1,
    blocked: frozenset[tuple[str, str]] = frozenset(),
    cap: int = 2,
) -> Allocation:
    ids = itertools.count()
    return allocate(
        demand=demand or {},
        types=TYPES,
        desktops=desktops,
        leases=leases,
        blocked=blocked,
        now=NOW,
        ttl_s=TTL,
        max_vms_per_desktop=cap,
        new_id=lambda: f"l-new-{next(ids)}",
        backfill=backfill,
        backfill_max=most,
    )


def test_with_no_demand_every_desktop_that_may_start_gets_backfill() -> None:
    desktops = [
        desk("d-1"),
        desk("d-2", max_vms=1),
        desk("d-owner", may_start=False),
        desk("d-offline", online=False),
        desk("d-novt", hw_virt=False),
        desk("d-small", free=400),
        desk("d-declined"),
    ]
    out = run(desktops, [], most=2, blocked=frozenset({("d-declined", SPARE.name)}))
    assert out.revoked == {}
    assert all(new.backfill and new.vm_name == SPARE.name for new in out.new)
    # up to max_per_desktop, its own slots and its free memory
    assert Counter(new.desktop_id for new in out.new) == {"d-1": 2, "d-2": 1}
    assert {new.start_by for new in out.new} == {NOW + TTL}


def test_backfill_is_off_by_default_and_its_leases_go_when_it_is_turned_off() -> None:
    assert run([desk("d-1")], [], backfill=None).new == []
    held = [lease("l-b", "d-1", SPARE.name, backfill=True)]
    assert run([desk("d-1")], held, backfill=None).revoked == {"l-b": "backfill_off"}
    # the backfill type changed: the old type's backfill leases go, the new type's come
    out = run([desk("d-1")], held, backfill=TYPES[2])
    assert out.revoked == {"l-b": "backfill_off"}
    assert [(n.vm_name, n.backfill) for n in out.new] == [(TYPES[2].name, True)]


def test_lowering_max_per_desktop_revokes_the_newest_extras() -> None:
    held = [
        lease("l-old", "d-1", SPARE.name, backfill=True),
        replace(lease("l-new", "d-1", SPARE.name, backfill=True), created_at=NOW - 10),
    ]
    out = run([desk("d-1")], held, most=1)
    assert (out.revoked, out.new) == ({"l-new": "backfill_off"}, [])
    assert run([desk("d-1")], held, most=2).revoked == {}


def test_the_trim_never_takes_backfill_for_supply() -> None:
    """No demand for the backfill type, yet its running backfill VMs stay; a real lease of
    that same type beside them is trimmed as usual."""
    held = [
        lease("l-b", "d-1", SPARE.name, backfill=True),
        lease("l-r", "d-2", SPARE.name),
    ]
    out = run([desk("d-1"), desk("d-2")], held, {SPARE.name: 0})
    assert out.revoked == {"l-r": "demand"}
    assert [n.desktop_id for n in out.new] == ["d-2"]  # no real work left there: backfill
    assert out.new[0].backfill


def test_real_demand_preempts_backfill_in_the_same_round() -> None:
    """The desktop that runs backfill is the one picked (fewest VMs: backfill does not count),
    even though its reported free memory leaves out what the backfill VM holds; its backfill
    lease is revoked in the same round, and the other desktop keeps its own."""
    desktops = [desk("d-1", free=1900), desk("d-2", free=1900)]
    held = [
        lease("l-b1", "d-1", SPARE.name, backfill=True),
        lease("l-b2", "d-2", SPARE.name, backfill=True),
    ]
    out = run(desktops, held, {REAL.name: 1})
    (new,) = out.new
    assert (new.vm_name, new.backfill) == (REAL.name, False)
    assert out.revoked == {("l-b1" if new.desktop_id == "d-1" else "l-b2"): "preempted"}


def test_backfill_counts_in_no_departments_share() -> None:
    """dept_a runs backfill on all its desktops; the fair share still sends the first real
    lease to the department with the fewest real leases (ties by name), not away from dept_a."""
    desktops = [desk("d-a1", "dept_a"), desk("d-a2", "dept_a"), desk("d-b1", "dept_b")]
    held = [
        lease("l-a1", "d-a1", SPARE.name, backfill=True),
        lease("l-a2", "d-a2", SPARE.name, backfill=True),
        lease("l-r", "d-b1", REAL.name),
    ]
    out = run(desktops, held, {REAL.name: 2})
    (new,) = out.new
    assert new.desktop_id in {"d-a1", "d-a2"}
    assert out.revoked == {("l-a1" if new.desktop_id == "d-a1" else "l-a2"): "preempted"}


def test_a_desktop_with_real_work_never_keeps_backfill() -> None:
    held = [
        lease("l-r", "d-1", REAL.name),
        lease("l-b", "d-1", SPARE.name, backfill=True),
    ]
    out = run([desk("d-1")], held, {REAL.name: 1}, most=2)
    assert out.revoked == {"l-b": "preempted"}
    assert out.new == []


@settings(max_examples=300, deadline=None)
@given(world=worlds(), spare=st.sampled_from(TYPES), most=st.integers(1, 4), data=st.data())
def test_backfill_never_changes_what_real_demand_gets(
    world: tuple[
        dict[str, int], list[DesktopView], list[LeaseView], frozenset[tuple[str, str]], int
    ],
    spare: VmType,
    most: int,
    data: st.DataObject,
) -> None:
    """Real demand gets the same new leases and the same trim as on the same desktops with no
    backfill at all (the memory the backfill VMs hold free); after the round no desktop holds
    both real and backfill leases, and none holds more backfill leases than ``most``, its
    slots or the grid allow."""
    demand, desktops, leases, blocked, cap = world
    with_spare = [
        LeaseView(
            f"l-b-{i}", d.id, spare.name, 1, spare.memory_mb, NOW - 5, NOW + 5, "running", 0, True
        )
        for i, d in enumerate(desktops)
        if data.draw(st.booleans())
    ]

    # The same desktops without those backfill VMs: the memory they hold is free there.
    freed = Counter({x.desktop_id: x.memory_mb for x in with_spare})
    bare = [replace(d, memory_free_mb=d.memory_free_mb + freed[d.id]) for d in desktops]

    plain = run(bare, leases, demand, backfill=None, blocked=blocked, cap=cap)
    spared = run(
        desktops, leases + with_spare, demand, backfill=spare, most=most, blocked=blocked, cap=cap
    )
    assert [n for n in spared.new if not n.backfill] == plain.new
    assert {k: v for k, v in spared.revoked.items() if not k.startswith("l-b-")} == plain.revoked
    kept = spared.kept(leases + with_spare)
    real_desks = {x.desktop_id for x in kept if not x.backfill}
    spare_desks = Counter(x.desktop_id for x in kept if x.backfill)
    assert not real_desks & spare_desks.keys()
    by_id = {d.id: d for d in desktops}
    for desk_id, count in spare_desks.items():
        assert count <= min(most, cap, by_id[desk_id].max_vms)
    for new in spared.new:
        if new.backfill:
            target = by_id[new.desktop_id]
            assert target.online
            assert target.may_start
            assert not target.revoked
            assert (new.desktop_id, new.vm_name) not in blocked


# -- the real coordinator ------------------------------------------------------------------


@pytest.fixture
def backfilled(tmp_path: Path, db_url: str) -> Iterator[tuple[Coordinator, TestClient, Clock]]:
    """A coordinator whose grid file carries grid_backfill: BOINC, one per desktop."""
    config = write_setup(tmp_path, db_url)
    grid = {**GRID, "backfill": {"vm_type": BOINC, "max_per_desktop": 1}}
    (tmp_path / "grid.json").write_text(json.dumps(grid))
    clock = Clock()
    coordinator = make_coordinator(config, clock)
    assert coordinator.grid.backfill == Backfill(BOINC, 1)
    with TestClient(create_app(coordinator)) as client:
        yield coordinator, client, clock
    coordinator.store.close()


def test_the_coordinator_offers_backfill_and_preempts_it_for_a_job(
    backfilled: tuple[Coordinator, TestClient, Clock],
) -> None:
    coordinator, client, clock = backfilled
    first, second = Desk(client, "desk00.lab.example"), Desk(client, "desk04.lab.example")
    assert first.leases() == []
    assert second.leases() == []
    coordinator.allocation_round()  # no job at all: both desktops get backfill
    (spare,) = first.leases()
    assert (spare["vm_name"], spare["backfill"]) == (BOINC, True)
    assert [x["backfill"] for x in second.leases()] == [True]
    slots = [
        {"slot": 0, "state": "running", "vm_name": BOINC, "lease_id": spare["lease_id"]},
        {"slot": 1, "state": "idle", "vm_name": None, "lease_id": None},
    ]
    assert first.leases(heartbeat(slots=slots)) == [{k: v for k, v in spare.items()}]
    coordinator.allocation_round()
    counts = coordinator.counts
    assert counts.backfill == {"running": 1, "offered": 1}
    assert counts.leases == {}
    assert counts.running == {}
    assert counts.departments == {}
    metrics = scrape(client.get("/metrics").text)
    assert metrics['cvmc_backfill_leases{state="running"}'] == 1
    assert metrics['cvmc_backfill_leases{state="offered"}'] == 1
    assert metrics.get(f'cvmc_leases{{vm_name="{BOINC}"}}', 0) == 0
    page = client.get("/").text
    assert (
        f"Backfill ({BOINC}, when no job wants a desktop): <b>1</b> running, "
        "<b>1</b> offered or starting" in page
    )
    summary = client.get("/admin/v1/summary").json()["backfill"]
    assert summary == {
        "vm_type": BOINC,
        "max_per_desktop": 1,
        "leases": {"offered": 1, "starting": 0, "running": 1},
    }

    # A job for the other type: one desktop's backfill makes way for it, in one round.
    set_demand(coordinator, (BULK, 1))
    clock.now += 2
    result = coordinator.allocation_round()
    assert result is not None
    assert sorted(result.revoked.values()) == ["preempted"]
    (new,) = result.new
    assert (new.vm_name, new.backfill) == (BULK, False)
    winner = first if new.desktop_id == first.id else second
    (real,) = winner.leases(heartbeat(slots=slots) if winner is first else None)
    assert (real["vm_name"], real.get("backfill")) == (BULK, None)
    sample = scrape(client.get("/metrics").text)
    assert sample['cvmc_leases_revoked_total{reason="preempted"}'] == 1
    assert coordinator.counts.leases == {BULK: 1}


def test_a_grid_file_with_bad_backfill_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"grid file: grid_backfill.max_per_desktop: 3 is out"):
        parse_grid({**GRID, "backfill": {"vm_type": BOINC, "max_per_desktop": 3}})
    assert parse_grid(GRID).backfill == Backfill()  # absent: off
