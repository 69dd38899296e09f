"""A desktop's whole Monday, replayed through the real control loop with a fake clock.

Everything but the ports is real: the policy engine, the slot state machine, lease handling,
the heartbeat payloads. The policy is the seed's default (owner-workday, Monday to Friday,
07:00-17:00, for a user present: ``agent_fakes.lab_grid``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging

import jsonschema
import pytest
from agent.agent_fakes import World, make_world

from cvmc.agent.ports import Session
from cvmc.protocol import HEARTBEAT_SCHEMA

MONDAY = dt.datetime(2026, 11, 23, 0, 0)  # a Monday
BOINC = "its-u11-boinc-20120415"
EL9 = "lab-el9-bulk-20261101"


def advance_to(world: World, hhmm: str) -> None:
    hours, minutes = map(int, hhmm.split(":"))
    target = MONDAY.replace(hour=hours, minute=minutes)
    world.run_for((target - world.clock.now()).total_seconds())


def test_a_desktops_monday(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cvmc")
    world = make_world(MONDAY, poll_s=30.0)
    world.agent.startup()

    # 00:00, nobody logged on: load may run at any time. The first lease starts a VM.
    world.lease("l-1", BOINC, memory_mb=512)
    advance_to(world, "00:05")
    assert world.states() == ["running", "idle"]
    vm = world.hypervisor.vms["cvmc-slot0"]
    assert (vm.spec.vm_name, vm.spec.memory_mb, vm.spec.cpus) == (BOINC, 512, 1)
    assert vm.spec.down_bits == 20_000_000  # the "standard" class, from the grid model
    meta, user = world.seeds.seeds[0]
    assert json.loads(meta) == {
        "instance-id": "cvmc-lab-pc01-slot0-l-1",
        "local-hostname": "lab-pc01-vm0",
    }
    assert b"/run/grid/vm_name" in user

    # 02:00 a second lease fills slot 1 (the bulk class caps it at 40mbit).
    advance_to(world, "02:00")
    world.lease("l-2", EL9, memory_mb=768)
    advance_to(world, "02:05")
    assert world.states() == ["running", "running"]
    assert world.hypervisor.vms["cvmc-slot1"].spec.down_bits == 40_000_000

    # 03:00 a third lease: never more than grid_max_vms_per_desktop (2).
    world.lease("l-3", BOINC)
    advance_to(world, "03:05")
    assert ("l-3", "max_vms") in world.declines()
    world.drop_lease("l-3")
    assert world.hypervisor.max_running == 2

    # 07:30 the owner logs on at the console: blackout owner-workday, both VMs vacate.
    advance_to(world, "07:30")
    world.sessions.current = [Session("alice", "console", "active")]
    logon = world.clock.mono
    while True:
        delay = world.agent.tick()
        if world.states() == ["idle", "idle"]:
            break
        world.clock.sleep(delay)
    # The VMs obey their ACPI button after 1 s; the loop polls fast while vacating.
    assert world.clock.mono - logon <= 1.2
    assert ("acpi", "cvmc-slot0") in world.hypervisor.calls
    assert ("destroy", "cvmc-slot0") in world.hypervisor.calls
    assert not world.hypervisor.vms
    assert not world.seeds.seeds

    # 09:00 the coordinator still offers a lease: declined, the policy forbids starts.
    world.drop_lease("l-1")
    world.drop_lease("l-2")
    advance_to(world, "09:00")
    world.lease("l-4", BOINC)
    advance_to(world, "09:05")
    assert ("l-4", "policy") in world.declines()
    world.drop_lease("l-4")

    # 12:00 fast user switching: alice's session stays, bob's is added. Still a blackout.
    world.sessions.current = [
        Session("alice", "switched", "disconnected"),
        Session("bob", "console", "active"),
    ]
    advance_to(world, "12:00")
    # 12:30 everyone logs off: nobody present, load may run again, even at midday.
    world.sessions.current = []
    world.lease("l-5", BOINC)
    advance_to(world, "12:35")
    assert world.states() == ["running", "idle"]

    # 13:00 the coordinator is unreachable: the running VM stays, nothing new starts.
    world.coordinator.reachable = False
    world.lease("l-6", EL9)
    advance_to(world, "15:00")
    assert world.states() == ["running", "idle"]
    assert world.agent.coordinator_ok is False

    # 16:00 the owner logs on over RDP while unreachable: the local policy still stops it.
    advance_to(world, "16:00")
    world.sessions.current = [Session("alice", "rdp", "active")]
    advance_to(world, "16:02")
    assert world.states() == ["idle", "idle"]

    # 17:00 the window is over; the RDP user is still there, the coordinator is back.
    # (Backoff is capped at 15 minutes, so the next heartbeat comes before 17:30.)
    advance_to(world, "17:00")
    world.coordinator.reachable = True
    world.drop_lease("l-5")
    advance_to(world, "17:30")
    assert world.states() == ["running", "idle"]  # l-6 started after 17:00
    assert world.hypervisor.vms["cvmc-slot0"].spec.vm_name == EL9

    # 23:59 the lease is revoked (demand gone): the VM vacates and the slot is idle.
    world.drop_lease("l-6")
    advance_to(world, "23:59")
    assert world.states() == ["idle", "idle"]

    # Every heartbeat matched the documented schema; backoff spaced out the failures.
    validator = jsonschema.Draft202012Validator(HEARTBEAT_SCHEMA)
    for body in world.coordinator.heartbeats:
        validator.validate(body)
    assert 600 < len(world.coordinator.heartbeats) < 1500
    events = [getattr(r, "event", "") for r in caplog.records]
    assert "coordinator.unreachable" in events
    assert events.count("coordinator.unreachable") == 1  # logged once, not every retry
    assert "policy.changed" in events
    # Each start had its own seed; all were deleted on stop.
    assert world.seeds.created == 4
    assert world.hypervisor.max_running == 2


def test_the_loop_sleeps_poll_s_when_idle_and_polls_fast_while_vacating() -> None:
    world = make_world(MONDAY.replace(hour=8), poll_s=1.0)
    assert world.agent.tick() == 1.0
    world.lease("l-1", BOINC)
    world.run_for(65)
    assert world.states() == ["running", "idle"]
    world.sessions.current = [Session("alice", "console", "active")]
    assert world.agent.tick() == 0.2


@pytest.mark.parametrize("offset", [0.0, 0.3, 0.99])
def test_logon_to_vm_stopped_within_the_goal(offset: float) -> None:
    """With poll_s = 1 and a guest that obeys ACPI within 1 s: stopped within 5 s."""
    world = make_world(MONDAY.replace(hour=9), poll_s=1.0)
    world.lease("l-1", BOINC)
    world.run_for(3)
    assert world.states() == ["running", "idle"]
    world.clock.sleep(offset)  # the logon lands somewhere between two ticks
    logon = world.clock.mono
    world.sessions.current = [Session("alice", "console", "active")]
    world.clock.sleep(1.0 - offset)
    while world.states() != ["idle", "idle"]:
        world.clock.sleep(world.agent.tick())
    assert world.clock.mono - logon < 5.0


def test_a_guest_that_ignores_acpi_is_powered_off_at_the_deadline() -> None:
    world = make_world(MONDAY.replace(hour=9), poll_s=1.0, vacate_deadline_s=3.0)
    world.hypervisor.ignore_acpi = True
    world.lease("l-1", BOINC)
    world.run_for(3)
    world.sessions.current = [Session("alice", "console", "active")]
    start = world.clock.mono
    while world.states() != ["idle", "idle"]:
        world.clock.sleep(world.agent.tick())
    calls = [c for c, vm in world.hypervisor.calls if vm == "cvmc-slot0"]
    assert calls[-3:] == ["acpi", "poweroff", "destroy"]
    assert 3.0 <= world.clock.mono - start < 4.5
