"""Suspend instead of shut down (grid_policy.suspend_minutes, issue 18 item 7), on fakes: the
agent's loop saves a running VM when its owner comes back, resumes it when they leave, and
falls back to the ordinary vacate wherever a save is not allowed or does not work. The real
save and resume through QEMU are tests/agent/integration/test_agent_qemu.py's."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import jsonschema
import pytest
from agent.agent_fakes import World, lab_config_dict, make_world

from cvmc.agent.domain.config import parse_config
from cvmc.agent.domain.engine import HostState, HwVirt, Verdict
from cvmc.agent.domain.planner import DiscardVm, ResumeVm, SuspendVm, VacateVm, plan
from cvmc.agent.domain.slots import Slot, SlotState
from cvmc.agent.domain.suspend import KEEP_FREE_MB, state_fits, state_limit_bytes
from cvmc.agent.ports import Session
from cvmc.protocol import HEARTBEAT_SCHEMA
from cvmc.protocol.leases import Lease

MONDAY_10 = dt.datetime(2026, 11, 23, 10, 0)  # in the seed's owner-workday blackout
BOINC = "its-u11-boinc-20120415"
ALICE = Session("alice", "console", "active")


def world_with(minutes: int = 10, **policy: Any) -> World:
    raw = lab_config_dict()
    raw["grid"]["policy"] = {**raw["grid"]["policy"], "suspend_minutes": minutes, **policy}
    return make_world(MONDAY_10, parse_config(raw))


def running(world: World) -> None:
    world.lease("l-1", BOINC)
    world.run_for(70)
    assert world.states() == ["running", "idle"]


def events(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [getattr(r, "event", "") for r in caplog.records]


def test_the_owners_return_saves_the_vm_and_their_leaving_resumes_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="cvmc")
    world = world_with(10)
    running(world)
    world.sessions.current = [ALICE]
    world.run_for(5)
    assert world.states() == ["suspended", "idle"]
    vm = world.hypervisor.vms["cvmc-slot0"]
    assert vm.saved
    assert not vm.running
    assert ("acpi", "cvmc-slot0") not in world.hypervisor.calls  # saved, not shut down
    assert world.agent.slots[0].lease is not None  # the slot keeps its lease, disk and seed
    assert 0 in world.seeds.seeds
    world.run_for(120)  # a heartbeat reports the saved VM with its lease
    beat = world.coordinator.heartbeats[-1]
    jsonschema.validate(beat, HEARTBEAT_SCHEMA)
    assert beat["slots"][0]["state"] == "suspended"
    assert beat["slots"][0]["lease_id"] == "l-1"
    assert not world.inhibitor.held  # a saved VM needs no power: the desktop may sleep

    world.sessions.current = []
    world.run_for(5)
    assert world.states() == ["running", "idle"]
    assert world.hypervisor.vms["cvmc-slot0"].running
    assert [c for c in world.hypervisor.calls if c[0] in ("create", "start")] == [
        ("create", "cvmc-slot0"),
        ("start", "cvmc-slot0"),
    ]  # the same VM, not a new one
    history = [(str(a), str(b)) for a, b, _ in world.agent.slots[0].history]
    assert ("running", "suspending") in history
    assert ("suspended", "resuming") in history
    assert ("resuming", "running") in history
    assert [e for e in events(caplog) if e.startswith(("vm.suspend", "vm.resume"))] == [
        "vm.suspend",
        "vm.suspended",
        "vm.resume",
        "vm.resumed",
    ]


def test_a_vm_saved_past_its_deadline_is_discarded() -> None:
    world = world_with(10)
    running(world)
    world.sessions.current = [ALICE]
    world.run_for(9 * 60)
    assert world.states() == ["suspended", "idle"]
    world.run_for(2 * 60)
    assert world.states() == ["idle", "idle"]
    assert world.hypervisor.vms == {}  # its disk, and the saved state with it, removed
    assert world.seeds.seeds == {}
    reasons = [reason for _, _, reason in world.agent.slots[0].history]
    assert any("grid_policy.suspend_minutes (10 min)" in r for r in reasons)


def test_a_revoked_lease_discards_the_saved_vm() -> None:
    world = world_with(10)
    running(world)
    world.sessions.current = [ALICE]
    world.run_for(5)
    world.drop_lease("l-1")
    world.run_for(70)
    assert world.states() == ["idle", "idle"]
    assert world.hypervisor.vms == {}
    assert ("resume", "cvmc-slot0") not in world.hypervisor.calls


def test_off_by_default_the_owners_return_shuts_the_vm_down() -> None:
    world = make_world(MONDAY_10)
    assert world.agent.config.policy.windows.suspend_minutes == 0
    running(world)
    world.sessions.current = [ALICE]
    world.run_for(10)
    assert world.states() == ["idle", "idle"]
    assert ("acpi", "cvmc-slot0") in world.hypervisor.calls
    assert ("save", "cvmc-slot0") not in world.hypervisor.calls


@pytest.mark.parametrize(
    ("setup", "why"),
    [
        (lambda w: setattr(w.hypervisor, "saves_state", False), "qemu cannot save"),
        (lambda w: setattr(w.resources, "disk_mb", 1200), "saving a 512 MB VM needs 1600 MiB"),
    ],
    ids=["hypervisor-cannot-save", "disk-too-small"],
)
def test_where_a_save_is_not_possible_the_vm_is_vacated_as_before(
    setup: Any, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cvmc")
    world = world_with(10)
    running(world)
    setup(world)
    world.sessions.current = [ALICE]
    world.run_for(10)
    assert world.states() == ["idle", "idle"]
    assert ("acpi", "cvmc-slot0") in world.hypervisor.calls
    assert ("save", "cvmc-slot0") not in world.hypervisor.calls
    skipped = [
        r.getMessage() for r in caplog.records if getattr(r, "event", "") == "vm.suspend_skipped"
    ]
    assert len(skipped) == 1
    assert why in skipped[0]


def test_a_failed_save_vacates_the_vm_that_runs_on() -> None:
    world = world_with(10)
    running(world)
    world.hypervisor.fail_save = True
    world.sessions.current = [ALICE]
    world.run_for(10)
    assert world.states() == ["idle", "idle"]
    calls = world.hypervisor.calls
    assert calls.index(("save", "cvmc-slot0")) < calls.index(("acpi", "cvmc-slot0"))


def test_a_failed_resume_cleans_the_slot_up() -> None:
    world = world_with(10)
    running(world)
    world.sessions.current = [ALICE]
    world.run_for(5)
    world.hypervisor.fail_resume = True
    world.sessions.current = []
    world.run_for(5)
    assert world.states() == ["idle", "idle"]
    assert world.hypervisor.vms == {}


def test_an_always_blackout_never_saves() -> None:
    world = world_with(
        10,
        blackouts=[
            {
                "name": "owner",
                "applies": "user_present",
                "days": ["sun"],
                "start": "07:00",
                "end": "08:00",
            },
            {
                "name": "backup",
                "applies": "always",
                "days": ["mon"],
                "start": "10:02",
                "end": "11:00",
            },
        ],
    )
    running(world)
    world.run_for(120)  # 10:02: the always blackout
    assert world.states() == ["idle", "idle"]
    assert ("save", "cvmc-slot0") not in world.hypervisor.calls


def test_the_agent_stopping_discards_a_saved_vm() -> None:
    world = world_with(10)
    running(world)
    world.sessions.current = [ALICE]
    world.run_for(5)
    assert world.states() == ["suspended", "idle"]
    world.agent.drain(30)
    assert world.states() == ["idle", "idle"]
    assert world.hypervisor.vms == {}


# -- the pure parts -----------------------------------------------------------------------


def _host(free_mb: int) -> HostState:
    return HostState(
        users=0, cpus=4, memory_total_mb=16384, memory_free_mb=free_mb, hw_virt=HwVirt(True)
    )


def test_a_saved_vm_resumes_only_when_its_memory_is_free() -> None:
    raw = lab_config_dict()
    raw["grid"]["policy"] = {**raw["grid"]["policy"], "suspend_minutes": 5}
    config = parse_config(raw)
    lease = Lease("l-1", BOINC, 1, 2048, 300.0, 0.0)
    slot = Slot(0, SlotState.SUSPENDED, lease=lease, vm_name=BOINC, memory_mb=2048, cpus=1)
    slot.deadline = 1000.0
    allowed = Verdict(True, True, False, "allowed")
    reserve = config.policy.reserve_mb

    def actions(free_mb: int, now: float = 10.0) -> list[Any]:
        return plan(
            config.policy,
            config.vm_types,
            allowed,
            _host(free_mb),
            slots=[slot],
            leases=[lease],
            fresh=False,
            handled=set(),
            now=now,
        )

    assert actions(reserve + 2048) == [ResumeVm(0)]
    assert actions(reserve + 2047) == []  # it waits (and resumes with all its memory)
    assert actions(reserve + 4096, now=1000.0) == [
        DiscardVm(0, "saved for grid_policy.suspend_minutes (5 min)")
    ]


def test_the_planner_saves_only_running_vms_on_an_owners_return() -> None:
    raw = lab_config_dict()
    raw["grid"]["policy"] = {**raw["grid"]["policy"], "suspend_minutes": 5}
    config = parse_config(raw)
    lease = Lease("l-1", BOINC, 1, 512, 300.0, 0.0)
    slots = [
        Slot(0, SlotState.RUNNING, lease=lease, vm_name=BOINC, memory_mb=512, cpus=1),
        Slot(1, SlotState.FETCHING, lease=Lease("l-2", BOINC, 1, 512, 300.0, 0.0)),
    ]
    owner = Verdict(
        False, False, False, "blackout owner-workday", "owner-workday", owner_present=True
    )
    out = plan(
        config.policy,
        config.vm_types,
        owner,
        _host(8000),
        slots=slots,
        leases=[],
        fresh=False,
        handled=set(),
        now=1.0,
    )
    assert out == [
        SuspendVm(0, "blackout owner-workday"),
        VacateVm(1, "blackout owner-workday", False),  # nothing to save yet
    ]


def test_a_saved_state_is_bounded_and_must_fit_the_disk() -> None:
    assert state_limit_bytes(512) == (512 + 64) << 20
    assert state_fits(512 + 64 + KEEP_FREE_MB, 512) is None
    why = state_fits(100, 512)
    assert why is not None
    assert "100 MiB free" in why
