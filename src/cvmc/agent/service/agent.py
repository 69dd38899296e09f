"""The control loop: sense, decide (pure domain), act (through the ports), report.

One tick, every ``poll_s`` (faster while a VM is being vacated):

1. Read the clock (a wall-clock jump is logged and the policy re-evaluated at once), the
   sessions and the resources, and evaluate the policy.
2. Advance every slot's life cycle: launches in flight, VMs being vacated, saved or
   resumed (``grid_policy.suspend_minutes``), cleanup.
3. Take in the coordinator's last reply, if one arrived, and let :func:`plan` decide.
4. Carry out the actions; send the next heartbeat when it is due.

Slow work (heartbeats, downloads, base import, VM creation, saving and resuming a VM) runs
on the executor, so a logon
is seen within one tick even during a download. A launch checks its cancel flag between
steps and the download checks it between chunks. Unit tests pass an executor that runs
work inline and a fake clock, and replay a desktop's whole day.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import errno
import logging
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

from cvmc import __version__, protocol
from cvmc.agent.domain import heartbeat
from cvmc.agent.domain.config import AgentConfig
from cvmc.agent.domain.engine import HostState, HwVirt, Verdict, evaluate
from cvmc.agent.domain.planner import (
    DeclineLease,
    DiscardVm,
    ResumeVm,
    StartVm,
    SuspendVm,
    VacateVm,
    plan,
)
from cvmc.agent.domain.seed import seed_files
from cvmc.agent.domain.slots import Slot, SlotState, transition
from cvmc.agent.domain.suspend import state_fits
from cvmc.agent.logs import log_event
from cvmc.agent.ports import (
    Clock,
    CoordinatorClient,
    CoordinatorError,
    HostProbe,
    Hypervisor,
    HypervisorError,
    Identities,
    ImageError,
    ImageStore,
    Resources,
    SeedFactory,
    Sessions,
    SleepInhibitor,
    VmSpec,
    Waker,
)
from cvmc.gridmodel.policy import counts_as_present
from cvmc.protocol import Decline, Lease

__all__ = [
    "MAX_TICK_FAILURES",
    "Agent",
    "AgentFailedError",
    "InlineExecutor",
    "LaunchCancelledError",
    "remove_leftovers",
    "tick_backoff",
]

LOG = logging.getLogger("cvmc.agent")
#: Slot states that the loop watches at FAST_POLL_S.
_FAST = (SlotState.VACATING, SlotState.STOPPED, SlotState.SUSPENDING, SlotState.RESUMING)
P = ParamSpec("P")
T = TypeVar("T")
S = SlotState
CLOCK_JUMP_S = 60.0
FAST_POLL_S = 0.2
#: How often the MAC address a heartbeat reports is looked up again (Wake-on-LAN).
MAC_CHECK_S = 600.0
VM_CHECK_S = 10.0
HW_VIRT_REFRESH_S = 600.0
MAX_TICK_FAILURES = 10
TICK_BACKOFF_MAX_S = 60.0


class AgentFailedError(RuntimeError):
    """The control loop failed ``MAX_TICK_FAILURES`` times in a row."""


def tick_backoff(poll_s: float, failures: int) -> float:
    """The pause after the ``failures``-th failed tick in a row: doubling, at most a minute."""
    return min(TICK_BACKOFF_MAX_S, max(poll_s, 1.0) * 2.0 ** min(failures - 1, 16))


def remove_leftovers(hypervisor: Hypervisor, seeds: SeedFactory) -> list[str]:
    """Power off and remove every VM the hypervisor driver's state lists, and every seed;
    returns what was removed. Idempotent. The agent runs it at start, when its loop dies, and
    ``cvmc agent cleanup`` runs it after the service stopped (systemd's ``ExecStopPost=``)."""
    removed: list[str] = []
    for vm in hypervisor.list_vms():
        try:
            if hypervisor.is_running(vm):
                hypervisor.power_off(vm)
            hypervisor.destroy(vm)
            removed.append(vm)
        except HypervisorError as exc:
            log_event(LOG, logging.ERROR, "orphan.failed", f"could not remove {vm}: {exc}", vm=vm)
    removed.extend(seeds.remove_all())
    if removed:
        log_event(
            LOG,
            logging.WARNING,
            "orphan.removed",
            f"removed {len(removed)} VM(s) and seed(s) an earlier or failed run left",
            items=removed,
        )
    return removed


#: Free space a VM start needs in the state directory beyond its image (the overlay disk's
#: first writes, the seed, the index and status files); below it the lease is declined
#: (``disk_full``) before anything is fetched or written.
START_MIN_FREE_MB = 64


class LaunchCancelledError(Exception):
    """A launch was cancelled because its slot is being vacated."""


class InlineExecutor(concurrent.futures.Executor):
    """Runs each submitted call at once, in the caller's thread (unit tests, ``cvmc check``)."""

    def submit(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


@dataclass
class _Launch:
    start: StartVm
    cancel: threading.Event = field(default_factory=threading.Event)
    phase: str = "fetching"  # fetching -> starting -> started
    future: concurrent.futures.Future[None] | None = None
    hard: bool = False
    sha256: str | None = None


@dataclass
class _Ports:
    clock: Clock
    sessions: Sessions
    resources: Resources
    probe: HostProbe
    hypervisor: Hypervisor
    store: ImageStore
    coordinator: CoordinatorClient
    seeds: SeedFactory
    identities: Identities


class Agent:
    """The agent's control loop. All state lives here; every decision is in the domain."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        desktop: str,
        clock: Clock,
        sessions: Sessions,
        resources: Resources,
        probe: HostProbe,
        hypervisor: Hypervisor,
        store: ImageStore,
        coordinator: CoordinatorClient,
        seeds: SeedFactory,
        identities: Identities,
        executor: concurrent.futures.Executor,
        rand: Callable[[], float] = random.random,
        status_sink: Callable[[dict[str, Any]], None] | None = None,
        inhibitor: SleepInhibitor | None = None,
        waker: Waker | None = None,
    ) -> None:
        self.config = config
        self.desktop = desktop
        self.p = _Ports(
            clock, sessions, resources, probe, hypervisor, store, coordinator, seeds, identities
        )
        self.executor = executor
        self.rand = rand
        self.status_sink = status_sink
        # grid_policy.keep_awake: held while any slot is busy, released when all are idle.
        self.inhibitor = inhibitor if config.policy.windows.keep_awake else None
        # grid_wake_on_lan: this desktop's MAC in heartbeats, and magic packets on request.
        self.waker = waker
        self._mac: tuple[str | None, float] | None = None
        self.slots = [Slot(i) for i in range(config.policy.max_vms)]
        self.leases: tuple[Lease, ...] = ()
        self.verdict: Verdict | None = None
        self.host: HostState | None = None
        self.coordinator_ok = False
        self._handled: set[str] = set()
        self._declines: list[Decline] = []
        self._inflight: list[Decline] = []
        self._hb: concurrent.futures.Future[Any] | None = None
        self._hb_failures = 0
        self._next_hb = 0.0
        self._launches: dict[int, _Launch] = {}
        #: A save or resume in flight, per slot (grid_policy.suspend_minutes): its result, and
        #: when it began.
        self._work: dict[int, tuple[concurrent.futures.Future[Any], float]] = {}
        self._next_check: dict[int, float] = {}
        self._last_clock: tuple[dt.datetime, float] | None = None
        self._hw_virt: tuple[HwVirt, float] | None = None
        self._base_lock = threading.Lock()
        self._status: dict[str, Any] = {}
        self._status_unwritten = False

    # -- startup and shutdown ---------------------------------------------------------------

    def startup(self) -> list[str]:
        """Remove VMs, slot disks and seeds left by a crash. Returns what was removed."""
        return remove_leftovers(self.p.hypervisor, self.p.seeds)

    def drain(self, timeout_s: float) -> None:
        """Vacate every VM (the service is stopping) and wait until all slots are idle."""
        end = self.p.clock.monotonic() + timeout_s
        while True:
            now = self.p.clock.monotonic()
            # A save or resume in flight finishes first; a saved VM is discarded (its key
            # lives only in this process).
            for slot in self.slots:
                if slot.state in (S.FETCHING, S.STARTING, S.RUNNING):
                    self._vacate(slot, "the agent is stopping", hard=False, now=now)
                elif slot.state is S.SUSPENDED:
                    self._discard(slot, "the agent is stopping", now)
            if all(slot.state is S.IDLE for slot in self.slots):
                break
            if now >= end:
                for slot in self.slots:
                    if slot.state is S.VACATING:
                        launch = self._launches.get(slot.index)
                        if launch:
                            launch.hard = True
            self._advance(now)
            if any(slot.state is not S.IDLE for slot in self.slots):
                self.p.clock.sleep(FAST_POLL_S)

    def run(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set, then drain.

        A tick that raises is logged and retried with backoff; after ``MAX_TICK_FAILURES``
        in a row, or anything else that ends the loop unexpectedly, every VM is powered off
        and removed before the error goes up (the caller exits non-zero): an agent that dies
        leaves no VM running (issue 15, finding 4)."""
        self.startup()
        failures = 0
        try:
            while not stop.is_set():
                try:
                    delay = self.tick()
                except Exception as exc:
                    failures += 1
                    if failures >= MAX_TICK_FAILURES:
                        raise AgentFailedError(
                            f"{failures} ticks in a row failed; the last: "
                            f"{type(exc).__name__}: {exc}"
                        ) from exc
                    delay = tick_backoff(self.config.agent.poll_s, failures)
                    log_event(
                        LOG,
                        logging.ERROR,
                        "agent.tick_failed",
                        f"{type(exc).__name__}: {exc}; retrying in {delay:.0f} s",
                        failures=failures,
                    )
                else:
                    failures = 0
                self.p.clock.sleep(delay, stop)
        except BaseException as exc:
            log_event(
                LOG,
                logging.CRITICAL,
                "agent.failed",
                f"{type(exc).__name__}: {exc}; powering off and removing every VM",
            )
            for launch in self._launches.values():
                launch.cancel.set()
            try:
                remove_leftovers(self.p.hypervisor, self.p.seeds)
            except Exception as again:
                log_event(LOG, logging.CRITICAL, "orphan.failed", f"cleanup failed: {again}")
            if self.inhibitor is not None:
                self.inhibitor.release()
            raise
        self.drain(self.config.agent.vacate_deadline_s + 30.0)
        self._keep_awake()
        log_event(LOG, logging.INFO, "agent.stopped", "all slots idle; the agent stops")

    # -- one tick -------------------------------------------------------------------------

    def sense(self) -> HostState:
        """A host snapshot (hardware virtualisation is re-probed every ten minutes)."""
        now = self.p.clock.monotonic()
        if self._hw_virt is None or now - self._hw_virt[1] >= HW_VIRT_REFRESH_S:
            self._hw_virt = (self.p.probe.hw_virt(), now)
        res = self.p.resources.snapshot()
        sessions = self.p.sessions.sessions()
        return HostState(
            users=len(sessions),
            present=sum(counts_as_present(self.config.policy.windows, s.idle_s) for s in sessions),
            cpus=res.cpus,
            memory_total_mb=res.memory_total_mb,
            memory_free_mb=res.memory_free_mb,
            hw_virt=self._hw_virt[0],
            battery_percent=res.battery_percent,
            on_ac=res.on_ac,
        )

    def tick(self) -> float:
        """One pass of the loop; returns how long to sleep before the next one."""
        mono = self.p.clock.monotonic()
        wall = self.p.clock.now()
        self._check_clock(wall, mono)
        host = self.sense()
        verdict = evaluate(self.config.policy, wall, host)
        if self.verdict is None or verdict.reason != self.verdict.reason:
            log_event(
                LOG,
                logging.INFO,
                "policy.changed",
                verdict.reason,
                may_run=verdict.may_run,
                may_start=verdict.may_start,
                users=host.users,
            )
        self.host, self.verdict = host, verdict
        self._advance(mono)
        fresh = self._collect_heartbeat(mono)
        actions = plan(
            self.config.policy,
            self.config.vm_types,
            verdict,
            host,
            slots=self.slots,
            leases=self.leases,
            fresh=fresh,
            handled=self._handled,
            now=mono,
        )
        for action in actions:
            if isinstance(action, VacateVm):
                self._vacate(self.slots[action.slot], action.reason, action.hard, mono)
            elif isinstance(action, StartVm):
                self._start(action, mono)
            elif isinstance(action, DeclineLease):
                self._decline(action.decline)
            elif isinstance(action, SuspendVm):
                self._suspend(self.slots[action.slot], action.reason, mono)
            elif isinstance(action, ResumeVm):
                self._resume(self.slots[action.slot], mono)
            elif isinstance(action, DiscardVm):
                self._discard(self.slots[action.slot], action.reason, mono)
        if actions:
            self._advance(mono)
        self._send_heartbeat(mono, wall, host, verdict)
        self._publish(mono)
        self._keep_awake()
        busy = any(s.state in _FAST for s in self.slots)
        return FAST_POLL_S if busy or actions else self.config.agent.poll_s

    def _keep_awake(self) -> None:
        """Hold the sleep inhibitor while a slot works (fetching, starting, running, vacating,
        saving or resuming a VM), and release it once every slot is idle, stopped or holds a
        saved VM (which needs no power)."""
        if self.inhibitor is None:
            return
        busy = [s for s in self.slots if s.state not in (S.IDLE, S.STOPPED, S.SUSPENDED)]
        if busy:
            names = sorted({s.vm_name for s in busy if s.vm_name})
            self.inhibitor.hold(f"research VM {', '.join(names) or 'starting'} on this desktop")
        else:
            self.inhibitor.release()

    def _check_clock(self, wall: dt.datetime, mono: float) -> None:
        if self._last_clock is not None:
            last_wall, last_mono = self._last_clock
            jump = (wall - last_wall).total_seconds() - (mono - last_mono)
            if abs(jump) > CLOCK_JUMP_S:
                log_event(
                    LOG,
                    logging.WARNING,
                    "clock.jump",
                    f"the wall clock jumped by {jump:+.0f} s; policy re-evaluated at the "
                    "new time, leases keep their monotonic expiry",
                    jump_s=round(jump),
                )
                self._next_hb = mono
        self._last_clock = (wall, mono)

    # -- slots ----------------------------------------------------------------------------

    def _start(self, action: StartVm, now: float) -> None:
        slot = self.slots[action.slot]
        slot.lease = action.lease
        slot.vm_name = action.vm_type.name
        slot.memory_mb = action.memory_mb
        slot.cpus = action.cpus
        transition(slot, S.FETCHING, now, f"lease {action.lease.lease_id}")
        self._handled.add(action.lease.lease_id)
        launch = _Launch(action)
        self._launches[slot.index] = launch
        log_event(
            LOG,
            logging.INFO,
            "vm.launch",
            f"slot {slot.index}: starting {slot.vm_name} ({slot.cpus} cpus, {slot.memory_mb} MB)",
            slot=slot.index,
            vm_name=slot.vm_name,
            lease_id=action.lease.lease_id,
        )
        launch.future = self.executor.submit(self._launch, launch)

    def _vacate(self, slot: Slot, reason: str, hard: bool, now: float) -> None:
        launch = self._launches.get(slot.index)
        if launch is not None:
            launch.cancel.set()
            launch.hard = launch.hard or hard
        transition(slot, S.VACATING, now, reason)
        log_event(
            LOG,
            logging.INFO,
            "vm.vacate",
            f"slot {slot.index}: vacating ({reason})",
            slot=slot.index,
            vm_name=slot.vm_name,
            hard=hard,
        )

    def _suspend(self, slot: Slot, reason: str, now: float) -> None:
        """Save the slot's VM (grid_policy.suspend_minutes), or vacate it as before where the
        hypervisor cannot save or the disk would not hold the state."""
        why = None if self.p.hypervisor.saves_state else f"{self.p.hypervisor.name} cannot save"
        if why is None:
            free_mb = self.p.resources.disk_free_mb(self.config.agent.state_dir)
            why = state_fits(free_mb, slot.memory_mb)
        if why is not None:
            log_event(
                LOG,
                logging.INFO,
                "vm.suspend_skipped",
                f"slot {slot.index}: not saved ({why}); vacating",
                slot=slot.index,
            )
            self._vacate(slot, reason, hard=False, now=now)
            return
        self._begin(slot, S.SUSPENDING, reason, self.p.hypervisor.save, now)

    def _resume(self, slot: Slot, now: float) -> None:
        self._begin(slot, S.RESUMING, "the owner left", self.p.hypervisor.resume, now)

    def _begin(
        self, slot: Slot, state: SlotState, reason: str, work: Callable[[str], Any], now: float
    ) -> None:
        """Move ``slot`` to ``state`` and run the save or resume ``work`` on the executor."""
        transition(slot, state, now, reason)
        verb = "saving" if state is S.SUSPENDING else "resuming"
        log_event(
            LOG,
            logging.INFO,
            "vm.suspend" if state is S.SUSPENDING else "vm.resume",
            f"slot {slot.index}: {verb} {slot.vm_name} ({reason})",
            slot=slot.index,
            vm_name=slot.vm_name,
        )
        self._work[slot.index] = (self.executor.submit(work, slot.vm_id), now)

    def _discard(self, slot: Slot, reason: str, now: float) -> None:
        """Drop a saved VM: the slot is cleaned up like any stopped one (its state with it)."""
        transition(slot, S.STOPPED, now, f"{reason}; the saved VM is discarded")
        self._released(slot, slot.reason)

    def _advance_saved(self, slot: Slot, now: float) -> None:
        """A save or resume that finished."""
        work = self._work.get(slot.index)
        if work is None or not work[0].done():
            return
        future, began = self._work.pop(slot.index)
        exc = future.exception()
        seconds = round(now - began, 2)
        if slot.state is S.SUSPENDING and exc is None:
            minutes = self.config.policy.windows.suspend_minutes
            transition(slot, S.SUSPENDED, now, f"{slot.reason}; saved")
            slot.deadline = now + minutes * 60.0
            log_event(
                LOG,
                logging.INFO,
                "vm.suspended",
                f"slot {slot.index}: {slot.vm_name} saved ({future.result() >> 20} MiB in "
                f"{seconds} s); kept up to {minutes} min",
                slot=slot.index,
                vm_name=slot.vm_name,
                bytes=future.result(),
                seconds=seconds,
            )
        elif slot.state is S.SUSPENDING:
            log_event(
                LOG,
                logging.ERROR,
                "vm.suspend_failed",
                f"slot {slot.index}: not saved ({exc}); vacating",
                slot=slot.index,
            )
            if self._running(slot.vm_id):
                self._vacate(slot, slot.reason, hard=False, now=now)
            else:
                transition(slot, S.STOPPED, now, f"{slot.reason}; the save failed: {exc}"[:300])
                self._released(slot, slot.reason)
        elif exc is None:
            transition(slot, S.RUNNING, now, "resumed")
            self._next_check[slot.index] = now + VM_CHECK_S
            log_event(
                LOG,
                logging.INFO,
                "vm.resumed",
                f"slot {slot.index}: {slot.vm_name} runs again (resumed in {seconds} s)",
                slot=slot.index,
                vm_name=slot.vm_name,
                seconds=seconds,
            )
        else:
            log_event(
                LOG,
                logging.ERROR,
                "vm.resume_failed",
                f"slot {slot.index}: {slot.vm_name} did not resume ({exc}); discarding it",
                slot=slot.index,
            )
            transition(slot, S.STOPPED, now, f"the resume failed: {exc}"[:300])
            self._released(slot, slot.reason)

    def _decline(self, decline: Decline) -> None:
        self._declines.append(decline)
        self._handled.add(decline.lease_id)  # declined once; forgotten when the reply drops it
        log_event(
            LOG,
            logging.WARNING,
            "lease.declined",
            f"lease {decline.lease_id} declined: {decline.reason}: {decline.detail}",
            lease_id=decline.lease_id,
            reason=decline.reason,
        )

    def _advance(self, now: float) -> None:
        for slot in self.slots:
            launch = self._launches.get(slot.index)
            if slot.state is S.FETCHING and launch and launch.phase != "fetching":
                transition(slot, S.STARTING, now, "image ready")
            done = launch is not None and launch.future is not None and launch.future.done()
            if slot.state in (S.FETCHING, S.STARTING) and launch is not None and done:
                self._launch_done(slot, launch, now)
            if slot.state is S.RUNNING and now >= self._next_check.get(slot.index, 0.0):
                self._next_check[slot.index] = now + VM_CHECK_S
                if not self._running(slot.vm_id):
                    transition(slot, S.STOPPED, now, "the VM stopped by itself")
                    self._released(slot, "the VM stopped by itself")
            if slot.state in (S.SUSPENDING, S.RESUMING):
                self._advance_saved(slot, now)
            if slot.state is S.VACATING:
                self._advance_vacating(slot, launch, now)
            if slot.state is S.STOPPED:
                self._clean(slot, now)

    def _launch_done(self, slot: Slot, launch: _Launch, now: float) -> None:
        assert launch.future is not None
        exc = launch.future.exception()
        if exc is None:
            if slot.state is S.FETCHING:
                transition(slot, S.STARTING, now, "image ready")
            transition(slot, S.RUNNING, now, "VM started")
            self._next_check[slot.index] = now + VM_CHECK_S
            log_event(
                LOG,
                logging.INFO,
                "vm.running",
                f"slot {slot.index}: {slot.vm_name} runs",
                slot=slot.index,
                vm_name=slot.vm_name,
            )
            return
        if launch.cancel.is_set():
            transition(slot, S.STOPPED, now, f"{slot.reason or 'cancelled'}; launch cancelled")
            return
        reason = exc.reason if isinstance(exc, ImageError) else "start_failed"
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            reason = "disk_full"
        log_event(
            LOG,
            logging.ERROR,
            "vm.launch_failed",
            f"slot {slot.index}: {slot.vm_name} did not start: {reason}: {exc}",
            slot=slot.index,
            vm_name=slot.vm_name,
            reason=reason,
        )
        if slot.lease is not None:
            self._decline(Decline(slot.lease.lease_id, reason, str(exc)[:300]))
        transition(slot, S.STOPPED, now, f"{reason}: {exc}"[:300])

    def _advance_vacating(self, slot: Slot, launch: _Launch | None, now: float) -> None:
        if launch is not None and launch.future is not None and not launch.future.done():
            return  # the launch sees its cancel flag at its next step
        hard = launch.hard if launch else False
        hv = self.p.hypervisor
        try:
            if not self._running(slot.vm_id):
                transition(slot, S.STOPPED, now, f"{slot.reason}; the VM is off")
            elif hard:
                hv.power_off(slot.vm_id)
                transition(slot, S.STOPPED, now, f"{slot.reason}; powered off at once")
            elif slot.deadline is None:
                hv.request_shutdown(slot.vm_id)
                slot.deadline = now + self.config.agent.vacate_deadline_s
            elif now >= slot.deadline:
                hv.power_off(slot.vm_id)
                transition(slot, S.STOPPED, now, f"{slot.reason}; powered off at the deadline")
        except HypervisorError as exc:
            log_event(
                LOG,
                logging.ERROR,
                "vm.stop_failed",
                f"slot {slot.index}: graceful stop failed ({exc}); powering off",
                slot=slot.index,
            )
            try:
                hv.power_off(slot.vm_id)
                transition(slot, S.STOPPED, now, f"{slot.reason}; powered off after an error")
            except HypervisorError as again:
                log_event(
                    LOG,
                    logging.ERROR,
                    "vm.poweroff_failed",
                    f"slot {slot.index}: power off failed ({again}); retrying",
                    slot=slot.index,
                )
        if slot.state is S.STOPPED:
            self._released(slot, slot.reason)

    def _released(self, slot: Slot, reason: str) -> None:
        log_event(
            LOG,
            logging.INFO,
            "vm.stopped",
            f"slot {slot.index}: stopped ({reason})",
            slot=slot.index,
            vm_name=slot.vm_name,
        )

    def _clean(self, slot: Slot, now: float) -> None:
        try:
            self.p.hypervisor.destroy(slot.vm_id)
            self.p.seeds.remove(slot.index)
        except (HypervisorError, OSError) as exc:
            log_event(
                LOG,
                logging.ERROR,
                "slot.cleanup_failed",
                f"slot {slot.index}: cleanup failed ({exc}); retrying",
                slot=slot.index,
            )
            return
        self._launches.pop(slot.index, None)
        self._next_check.pop(slot.index, None)
        transition(slot, S.IDLE, now, "slot disk and seed discarded, lease released")
        held = {s.lease.lease_id for s in self.slots if s.lease is not None}
        if any(x.lease_id not in self._handled and x.lease_id not in held for x in self.leases):
            # A lease waits for this slot (one that real demand sent as it preempted a
            # backfill VM): ask now, as only a fresh reply starts a VM.
            self._next_hb = min(self._next_hb, now)

    def _running(self, vm_id: str) -> bool:
        try:
            return self.p.hypervisor.is_running(vm_id)
        except HypervisorError as exc:
            log_event(
                LOG,
                logging.ERROR,
                "vm.state_unknown",
                f"{vm_id}: state unknown ({exc}); taken as running",
                vm=vm_id,
            )
            return True

    # -- the launch, on the executor ------------------------------------------------------------

    def _check(self, launch: _Launch) -> None:
        if launch.cancel.is_set():
            raise LaunchCancelledError("the slot is being vacated")

    def _launch(self, launch: _Launch) -> None:
        action = launch.start
        slot, vm_type = action.slot, action.vm_type
        identity = self.p.identities.for_slot(slot)
        if identity is None:
            raise ImageError("no_identity", f"no VPN identity for slot {slot}")
        # The lease's own token (minted for this start) before the desktop's static, wider one;
        # written as one line of a token file, ending in a newline.
        lease_token = action.lease.condor_token
        condor_token = (
            f"{lease_token}\n".encode() if lease_token is not None else identity.condor_token
        )
        if condor_token is None:
            raise ImageError(
                "no_identity",
                f"lease {action.lease.lease_id} carried no HTCondor token and the desktop has "
                f"none for slot {slot} (no condor.token)",
            )
        free_mb = self.p.resources.disk_free_mb(self.config.agent.state_dir)
        if free_mb < START_MIN_FREE_MB:
            raise ImageError(
                "disk_full",
                f"{max(free_mb, 0)} MiB free in {self.config.agent.state_dir}; a VM start needs "
                f"at least {START_MIN_FREE_MB} MiB",
            )
        try:
            entries = protocol.parse_catalogue(self.p.coordinator.catalogue())
        except (CoordinatorError, ValueError, OSError) as exc:
            raise ImageError("image_unavailable", f"catalogue: {exc}") from exc
        entry = next((e for e in entries if e.vm_name == vm_type.name), None)
        if entry is None:
            raise ImageError("image_unavailable", f"the catalogue has no image for {vm_type.name}")
        self._check(launch)
        manifest = self.p.store.ensure(
            entry,
            expect_vm_name=vm_type.name,
            expect_file=vm_type.image,
            progress=_progress_logger(slot, vm_type.name),
            cancel=launch.cancel,
        )
        launch.sha256 = manifest.sha256
        self._check(launch)
        with self._base_lock:
            if not self.p.hypervisor.has_base(manifest.sha256):
                source = self.p.store.open(manifest.sha256)
                try:
                    self.p.hypervisor.prepare_base(manifest.sha256, manifest.disk_format, source)
                finally:
                    source.close()
        self.p.store.touch(manifest.sha256)
        self._check(launch)
        launch.phase = "starting"
        lease_id = action.lease.lease_id
        try:
            meta, user = seed_files(
                desktop=self.desktop,
                slot=slot,
                vm_name=vm_type.name,
                lease_id=lease_id,
                identity=identity.files,
                condor_token=condor_token,
            )
        except (ValueError, UnicodeDecodeError) as exc:
            raise ImageError("no_identity", f"slot {slot}: unusable identity: {exc}") from exc
        seed = self.p.seeds.create(slot, meta, user)
        spec = VmSpec(
            vm_id=self.slots[slot].vm_id,
            slot=slot,
            vm_name=vm_type.name,
            image_sha256=manifest.sha256,
            disk_format=manifest.disk_format,
            cpus=action.cpus,
            memory_mb=action.memory_mb,
            down_bits=vm_type.down_bits,
            up_bits=vm_type.up_bits,
            seed_iso=seed,
            disk_gb=vm_type.disk_gb,
            cpu_cap_percent=vm_type.cpu_cap_percent,
        )
        self.p.hypervisor.create(spec)
        self._check(launch)
        self.p.hypervisor.start(spec.vm_id)
        launch.phase = "started"

    # -- heartbeat ------------------------------------------------------------------------

    def _collect_heartbeat(self, now: float) -> bool:
        future = self._hb
        if future is None or not future.done():
            return False
        self._hb = None
        try:
            reply = protocol.parse_heartbeat_reply(future.result(), now)
        except Exception as exc:
            self._declines = self._inflight + self._declines
            self._inflight = []
            self._hb_failures += 1
            delay = heartbeat.heartbeat_delay(
                self.config.agent.heartbeat_s,
                self._hb_failures,
                self.config.agent.heartbeat_max_backoff_s,
                self.rand(),
            )
            self._next_hb = now + delay
            if self.coordinator_ok or self._hb_failures == 1:
                log_event(
                    LOG,
                    logging.WARNING,
                    "coordinator.unreachable",
                    f"heartbeat failed ({exc}); starting nothing new, still enforcing "
                    f"the local policy; next try in {delay:.0f} s",
                    failures=self._hb_failures,
                )
            self.coordinator_ok = False
            return False
        if not self.coordinator_ok:
            log_event(
                LOG, logging.INFO, "coordinator.ok", "heartbeat accepted", leases=len(reply.leases)
            )
        self.coordinator_ok = True
        self._hb_failures = 0
        self._inflight = []
        self.leases = reply.leases
        current = {lease.lease_id for lease in reply.leases}
        current |= {problem.lease_id for problem in reply.problems}
        held = {s.lease.lease_id for s in self.slots if s.lease is not None}
        self._handled &= current | held
        for problem in reply.problems:
            if problem.lease_id not in self._handled:
                self._decline(problem)
        self._next_hb = now + heartbeat.heartbeat_delay(reply.heartbeat_s, 0, 0, self.rand())
        self._wake(reply.wake, reply.wake_problem)
        return True

    def _wake(self, macs: Sequence[str], problem: str) -> None:
        """Send the magic packets the coordinator asked for (``grid_wake_on_lan``)."""
        if problem:
            log_event(LOG, logging.WARNING, "wake.malformed", f"wake list ignored: {problem}")
        if not macs or self.waker is None:
            return
        sent = self.waker.wake(macs)
        log_event(
            LOG,
            logging.INFO,
            "wake.sent",
            f"magic packets for {sent} sleeping desktop(s) on this subnet",
            macs=list(macs),
        )

    def _send_heartbeat(self, now: float, wall: dt.datetime, host: HostState, v: Verdict) -> None:
        if self._hb is not None or now < self._next_hb:
            return
        self._inflight, self._declines = self._declines, []
        body = heartbeat.build_heartbeat(
            sent_at=wall.astimezone().isoformat(timespec="seconds"),
            agent_version=__version__,
            host=host,
            verdict=v,
            facts=self._facts(),
            slots=self.slots,
            declined=self._inflight,
            images=[(i.vm_name, i.sha256) for i in self.p.store.installed()],
            now=now,
        )
        self._next_hb = float("inf")  # set again when the reply (or failure) arrives
        self._hb = self.executor.submit(self._beat, body)

    def _facts(self) -> heartbeat.DesktopFacts:
        try:
            version = self.p.hypervisor.version()
        except HypervisorError:
            version = "unknown"
        return heartbeat.DesktopFacts(
            disk_free_mb=self.p.resources.disk_free_mb(self.config.agent.state_dir),
            hypervisor=self.p.hypervisor.name,
            hypervisor_version=version,
            max_vms=self.config.policy.max_vms,
        )

    def _beat(self, body: dict[str, Any]) -> Mapping[str, Any]:
        """One heartbeat, on the executor: with this desktop's MAC (Wake-on-LAN), looked up
        here and not on the loop, since it resolves the coordinator's name; again every
        ``MAC_CHECK_S`` (only one heartbeat is in flight at a time)."""
        if self.waker is not None:
            now = self.p.clock.monotonic()
            if self._mac is None or now - self._mac[1] >= MAC_CHECK_S:
                self._mac = (self.waker.mac(), now)
            body["resources"]["mac"] = self._mac[0]
        return self.p.coordinator.heartbeat(body)

    def images_in_use(self) -> set[str]:
        """Digests of the images behind busy slots (never evicted)."""
        return {
            launch.sha256
            for index, launch in list(self._launches.items())
            if launch.sha256 and self.slots[index].state is not S.IDLE
        }

    # -- status ---------------------------------------------------------------------------

    def status(self, now: float) -> dict[str, Any]:
        """What ``cvmc status`` shows."""
        v, host = self.verdict, self.host
        return {
            "desktop": self.desktop,
            "policy": v.reason if v else "not evaluated yet",
            "may_run": v.may_run if v else None,
            "may_start": v.may_start if v else None,
            "users": host.users if host else None,
            "coordinator_ok": self.coordinator_ok,
            "heartbeat_failures": self._hb_failures,
            "slots": [
                {
                    "slot": s.index,
                    "state": str(s.state),
                    "vm_name": s.vm_name,
                    "lease_id": s.lease.lease_id if s.lease else None,
                    "memory_mb": s.memory_mb,
                    "cpus": s.cpus,
                    "for_s": round(now - s.since),
                    "reason": s.reason,
                }
                for s in self.slots
            ],
        }

    def _publish(self, now: float) -> None:
        if self.status_sink is None:
            return
        status = self.status(now)
        key = {**status, "slots": [{**s, "for_s": 0} for s in status["slots"]]}
        if key != self._status:
            try:
                self.status_sink(status)
            except OSError as exc:
                # A full disk must not stop the loop (it still vacates VMs on logon); the
                # status is written again once it changes and there is room.
                if not self._status_unwritten:
                    log_event(
                        LOG,
                        logging.ERROR,
                        "agent.status_not_written",
                        f"the status file could not be written ({exc}); the agent goes on",
                    )
                self._status_unwritten = True
                return
            self._status_unwritten = False
            self._status = key


def _progress_logger(slot: int, vm_name: str) -> Callable[[int, int], None]:
    state = {"next": 0}

    def report(done: int, total: int) -> None:
        percent = 100 * done // max(total, 1)
        if percent >= state["next"] or done == total:
            state["next"] = percent - percent % 10 + 10
            log_event(
                LOG,
                logging.INFO,
                "image.progress",
                f"slot {slot}: {vm_name} image {percent}% ({done >> 20} of {total >> 20} MiB)",
                slot=slot,
                done=done,
                total=total,
                percent=percent,
            )

    return report
