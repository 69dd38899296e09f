"""The control loop's edges: orphans, failures, bad input, clock jumps, cancel, hard stop."""

from __future__ import annotations

import datetime as dt
import logging
import threading

import jsonschema
import pytest
from agent.agent_fakes import FakeVm, lab_config_dict, lab_grid, make_world

from cvmc.agent.domain.config import parse_config
from cvmc.agent.ports import ImageError, Session, VmSpec
from cvmc.agent.service.agent import MAX_TICK_FAILURES, AgentFailedError, tick_backoff
from cvmc.protocol import HEARTBEAT_SCHEMA

MONDAY_NIGHT = dt.datetime(2026, 11, 23, 2, 0)
BOINC = "its-u11-boinc-20120415"


def events(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [getattr(r, "event", "") for r in caplog.records]


def test_startup_removes_vms_and_seeds_orphaned_by_a_crash() -> None:
    world = make_world(MONDAY_NIGHT)
    spec = VmSpec("cvmc-slot1", 1, BOINC, "a" * 64, "qcow2", 1, 512, 1000, 1000, "/s.iso", 20)
    world.hypervisor.vms["cvmc-slot1"] = FakeVm(spec, running=True)
    world.seeds.leftovers = ["/seeds/slot1.iso"]
    removed = world.agent.startup()
    assert removed == ["cvmc-slot1", "/seeds/slot1.iso"]
    assert ("poweroff", "cvmc-slot1") in world.hypervisor.calls
    assert world.hypervisor.vms == {}


@pytest.mark.parametrize(
    ("reason", "message"),
    [
        ("signature_invalid", "manifest signature does not verify with any trusted key"),
        ("disk_full", "no space left on device while downloading"),
        ("image_unavailable", "HTTP 404"),
        ("image_rollback", "an image never goes back to an older one"),
    ],
)
def test_an_image_failure_declines_the_lease_and_leaves_nothing(
    reason: str, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cvmc")
    world = make_world(MONDAY_NIGHT)
    world.store.fail[BOINC] = ImageError(reason, message)
    world.lease("l-1", BOINC)
    world.run_for(70)
    assert world.states() == ["idle", "idle"]
    assert ("l-1", reason) in world.declines()
    assert world.hypervisor.vms == {}
    assert world.seeds.seeds == {}
    assert world.store.ensured == [BOINC]  # declined once, never retried
    assert any(message in r.getMessage() for r in caplog.records)
    assert "vm.launch_failed" in events(caplog)
    for beat in world.coordinator.heartbeats:  # the reason is one the protocol documents
        jsonschema.validate(beat, HEARTBEAT_SCHEMA)


def test_a_failed_start_is_declined_and_the_vm_removed() -> None:
    world = make_world(MONDAY_NIGHT)
    world.hypervisor.fail_start = True
    world.lease("l-1", BOINC)
    world.run_for(70)
    assert ("l-1", "start_failed") in world.declines()
    assert world.hypervisor.vms == {}
    assert world.seeds.seeds == {}
    assert world.states() == ["idle", "idle"]


def test_no_identity_for_the_slot_declines_before_any_download() -> None:
    world = make_world(MONDAY_NIGHT)
    world.identities.missing = {0, 1}
    world.lease("l-1", BOINC)
    world.run_for(70)
    assert ("l-1", "no_identity") in world.declines()
    assert world.store.ensured == []


def test_unknown_vm_type_and_malformed_leases_are_declined(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="cvmc")
    world = make_world(MONDAY_NIGHT)
    world.lease("l-1", "not-in-the-catalogue")
    world.coordinator.leases.append({"lease_id": "l-2", "vm_name": BOINC, "cpus": "many"})
    world.run_for(70)
    assert sorted(world.declines()) == [("l-1", "unknown_vm_type"), ("l-2", "malformed")]
    assert world.states() == ["idle", "idle"]
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "'not-in-the-catalogue' is not in grid_vm_types" in messages
    assert "lease l-2.ttl_s: None is not a number" in messages
    assert messages.count("lease l-2 declined") == 1


def test_a_logon_during_the_download_cancels_the_launch() -> None:
    world = make_world(MONDAY_NIGHT.replace(hour=10))
    # The owner logs on while the image downloads (the fake store runs inline).
    world.store.on_ensure = lambda: world.sessions.current.append(
        Session("alice", "console", "active")
    )
    world.sessions.current = []
    world.lease("l-1", BOINC)
    world.agent.tick()  # heartbeat
    world.agent.tick()  # lease -> fetching -> the launch checks its cancel flag... after
    world.run_for(5)
    assert world.states() == ["idle", "idle"]
    assert world.hypervisor.vms == {}


def test_an_idle_owner_lets_a_vm_run_in_the_workday_and_their_return_vacates_it() -> None:
    raw = lab_config_dict()
    raw["grid"]["policy"] = {**raw["grid"]["policy"], "owner_idle_minutes": 15}
    world = make_world(MONDAY_NIGHT.replace(hour=10), parse_config(raw))
    world.sessions.current = [Session("alice", "console", "active", idle_s=14 * 60.0)]
    world.lease("l-1", BOINC)
    world.run_for(70)
    assert world.states() == ["idle", "idle"]  # idle 14 min < 15: the blackout holds
    world.sessions.current = [Session("alice", "console", "active", idle_s=16 * 60.0)]
    world.lease("l-2", BOINC)  # the coordinator's next lease, now that the desktop may start
    world.run_for(70)
    assert world.states()[0] == "running"
    assert world.agent.verdict is not None
    assert "owner_idle_minutes" in world.agent.verdict.reason
    world.sessions.current = [Session("alice", "console", "active", idle_s=1.0)]  # back
    world.run_for(70)
    assert world.states() == ["idle", "idle"]
    assert world.agent.verdict is not None
    assert world.agent.verdict.blackout == "owner-workday"


def test_a_cancel_seen_by_the_launch_creates_no_vm() -> None:
    world = make_world(MONDAY_NIGHT)
    world.lease("l-1", BOINC)
    world.agent.tick()

    def cancel_during_download() -> None:
        for launch in world.agent._launches.values():
            launch.cancel.set()

    world.store.on_ensure = cancel_during_download
    world.run_for(5)
    assert ("create", "cvmc-slot0") not in world.hypervisor.calls
    assert world.states() == ["idle", "idle"]
    assert world.declines() == []  # a cancel is not a decline


def test_low_battery_powers_off_at_once() -> None:
    world = make_world(MONDAY_NIGHT)
    world.lease("l-1", BOINC)
    world.run_for(5)
    assert world.states() == ["running", "idle"]
    snap = world.resources.snap
    world.resources.snap = type(snap)(
        snap.cpus, snap.memory_total_mb, snap.memory_free_mb, 20, False
    )
    world.agent.tick()
    calls = [c for c, _ in world.hypervisor.calls]
    assert "acpi" not in calls
    assert calls[-2:] == ["poweroff", "destroy"]
    assert world.states() == ["idle", "idle"]


def test_a_clock_jump_is_logged_and_the_policy_follows_the_new_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="cvmc")
    world = make_world(MONDAY_NIGHT)
    world.sessions.current = [Session("alice", "console", "active")]
    world.lease("l-1", BOINC)
    world.run_for(5)
    assert world.states() == ["running", "idle"]  # 02:00: no blackout even with a user
    world.clock.jump(6 * 3600)  # 08:00: the owner-workday blackout applies
    world.run_for(3)
    assert "clock.jump" in events(caplog)
    assert world.states() == ["idle", "idle"]
    jump = next(r for r in caplog.records if getattr(r, "event", "") == "clock.jump")
    assert "+21600 s" in jump.getMessage()


def test_a_clock_jump_does_not_stretch_a_lease() -> None:
    world = make_world(MONDAY_NIGHT)
    world.agent.tick()
    world.agent.tick()
    world.coordinator.leases.append(
        {"lease_id": "l-1", "vm_name": BOINC, "cpus": 1, "memory_mb": 512, "ttl_s": 30}
    )
    world.clock.jump(-3600)  # backwards: a wall-clock expiry would now look far away
    world.hypervisor.fail_start = False
    world.run_for(70)
    # The lease arrived with ttl 30 s and was started at once (monotonic receipt time).
    assert world.states() == ["running", "idle"]


def test_drain_stops_every_vm_when_the_agent_stops() -> None:
    world = make_world(MONDAY_NIGHT)
    world.lease("l-1", BOINC)
    world.lease("l-2", "lab-el9-bulk-20261101", memory_mb=768)
    world.run_for(5)
    assert world.states() == ["running", "running"]
    world.hypervisor.ignore_acpi = True
    world.agent.drain(timeout_s=10)
    assert world.states() == ["idle", "idle"]
    assert world.hypervisor.vms == {}


def test_status_sink_reports_changes() -> None:
    world = make_world(MONDAY_NIGHT)
    world.lease("l-1", BOINC)
    world.run_for(5)
    last = world.statuses[-1]
    assert last["slots"][0]["state"] == "running"
    assert last["slots"][0]["vm_name"] == BOINC
    assert last["coordinator_ok"] is True


def test_a_failing_tick_is_retried_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    """Issue 15, finding 4: an unexpected error in one tick is logged and retried."""
    caplog.set_level(logging.INFO, logger="cvmc")
    world = make_world(MONDAY_NIGHT)
    world.lease("l-1", BOINC)
    real_tick = world.agent.tick
    calls = {"n": 0}
    stop = threading.Event()

    def tick() -> float:
        calls["n"] += 1
        if calls["n"] in (3, 4, 5):
            raise RecursionError("maximum recursion depth exceeded (test)")
        if calls["n"] >= 40:
            stop.set()
        return real_tick()

    world.agent.tick = tick  # type: ignore[method-assign]
    world.agent.run(stop)
    assert events(caplog).count("agent.tick_failed") == 3
    assert "agent.failed" not in events(caplog)
    assert world.states() == ["idle", "idle"]  # drained at the end, as always
    assert any("running" in [s["state"] for s in st["slots"]] for st in world.statuses)


def test_ten_failing_ticks_in_a_row_stop_every_vm_and_raise(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="cvmc")
    world = make_world(MONDAY_NIGHT)
    world.lease("l-1", BOINC)
    world.run_for(5)
    assert world.states()[0] == "running"
    assert [vm.running for vm in world.hypervisor.vms.values()] == [True]
    before = world.clock.mono

    def tick() -> float:
        raise KeyError("boom (test)")

    world.agent.tick = tick  # type: ignore[method-assign]
    with pytest.raises(AgentFailedError, match=r"10 ticks in a row failed.*KeyError"):
        world.agent.run(threading.Event())
    assert world.hypervisor.vms == {}
    assert ("poweroff", "cvmc-slot0") in world.hypervisor.calls
    assert events(caplog).count("agent.tick_failed") == MAX_TICK_FAILURES - 1
    assert "agent.failed" in events(caplog)
    # It backed off: the pauses doubled up to the cap.
    waited = world.clock.mono - before
    assert waited == sum(tick_backoff(1.0, n) for n in range(1, MAX_TICK_FAILURES))
    assert [tick_backoff(1.0, n) for n in (1, 2, 3, 7, 8, 30)] == [1, 2, 4, 60, 60, 60]


def test_a_heartbeat_reply_that_breaks_anything_is_a_failed_heartbeat(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="cvmc")
    world = make_world(MONDAY_NIGHT)

    def hostile(body: object) -> object:
        raise RecursionError("maximum recursion depth exceeded while decoding (test)")

    world.coordinator.heartbeat = hostile  # type: ignore[method-assign,assignment]
    world.run_for(30)
    assert "coordinator.unreachable" in events(caplog)
    assert not world.agent.coordinator_ok


# -- grid_policy.keep_awake -----------------------------------------------------------------


def test_the_desktop_is_kept_awake_exactly_while_a_vm_works() -> None:
    idle = make_world(MONDAY_NIGHT)
    idle.run_for(3)
    assert not idle.inhibitor.held  # nothing runs: the desktop may sleep
    world = make_world(MONDAY_NIGHT)
    world.lease("l-1", BOINC)
    world.run_for(5)
    assert world.states() == ["running", "idle"]
    assert world.inhibitor.held
    assert f"hold research VM {BOINC} on this desktop" in world.inhibitor.calls
    world.drop_lease("l-1")
    world.run_for(70)  # the next heartbeat no longer carries the lease: the VM is vacated
    assert world.states() == ["idle", "idle"]
    assert not world.inhibitor.held
    assert world.inhibitor.calls[-1] == "release"


def test_keep_awake_off_never_touches_the_inhibitor() -> None:
    grid = lab_grid()
    grid["policy"] = {**grid["policy"], "keep_awake": False}
    world = make_world(MONDAY_NIGHT, config=parse_config({**lab_config_dict(), "grid": grid}))
    world.lease("l-1", BOINC)
    world.run_for(5)
    assert world.states() == ["running", "idle"]
    assert world.inhibitor.calls == []


def test_a_refused_inhibitor_does_not_stop_the_vm() -> None:
    world = make_world(MONDAY_NIGHT)
    world.inhibitor.refuse = True
    world.lease("l-1", BOINC)
    world.run_for(5)
    assert world.states() == ["running", "idle"]
    assert not world.inhibitor.held


def test_an_agent_that_fails_and_one_that_stops_let_the_desktop_sleep() -> None:
    world = make_world(MONDAY_NIGHT)
    world.lease("l-1", BOINC)
    world.run_for(5)
    assert world.inhibitor.held
    world.hypervisor.ignore_acpi = True
    world.agent.drain(timeout_s=10)
    stop = threading.Event()
    stop.set()
    world.agent.run(stop)  # stops at once: drains, then releases
    assert not world.inhibitor.held
    assert world.inhibitor.calls[-1] == "release"
