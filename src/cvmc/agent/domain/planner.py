"""Lease handling: from the verdict, the slots and the current leases, decide what to do.

:func:`plan` is pure. It returns actions; the control loop carries them out. The rules:

- When the policy says stop, every busy slot is vacated (at once on a low battery).
- When a fresh reply from the coordinator no longer lists a busy slot's lease, that slot is
  vacated: the lease was revoked. A backfill lease's VM is powered off at once (real demand
  wants the desktop; its lease usually arrives in the same reply).
- New VMs start only from a fresh reply (never while the coordinator is unreachable), only
  for VM types in the local catalogue, never beyond ``max_vms_per_desktop``, never into a
  slot that is not idle, and with ``min(type memory, free - reserve)`` memory, counting what
  the starts already in flight will take.
- Every lease that cannot start is declined with a reason, once; except a lease that only
  waits for slots being vacated (a free slot, or their memory): it stays, to start from a
  later reply once they are free, or to be declined ``expired`` after its ttl.
- Suspend instead of shut down (``grid_policy.suspend_minutes`` > 0): when the owner's return
  (a ``user_present`` blackout) stops a running VM, it is saved instead of vacated. A saved VM
  resumes as soon as new VMs could start and its memory is free (before any new start), and
  is discarded at its deadline or when a fresh reply revokes its lease.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from cvmc.agent.domain.config import PolicyConfig, VmType
from cvmc.agent.domain.engine import HostState, Verdict, memory_for
from cvmc.agent.domain.slots import Slot, SlotState
from cvmc.gridmodel.memory import DEFAULT_MINIMUM_MB
from cvmc.protocol import Decline, Lease

__all__ = [
    "Action",
    "DeclineLease",
    "DiscardVm",
    "ResumeVm",
    "StartVm",
    "SuspendVm",
    "VacateVm",
    "plan",
]


@dataclass(frozen=True)
class StartVm:
    slot: int
    lease: Lease
    vm_type: VmType
    memory_mb: int
    cpus: int


@dataclass(frozen=True)
class VacateVm:
    slot: int
    reason: str
    hard: bool


@dataclass(frozen=True)
class DeclineLease:
    decline: Decline


@dataclass(frozen=True)
class SuspendVm:
    """Save the slot's running VM to disk (its owner is back)."""

    slot: int
    reason: str


@dataclass(frozen=True)
class ResumeVm:
    """Run the slot's saved VM again."""

    slot: int


@dataclass(frozen=True)
class DiscardVm:
    """Drop the slot's saved VM (its deadline passed, or its lease went)."""

    slot: int
    reason: str


Action = StartVm | VacateVm | DeclineLease | SuspendVm | ResumeVm | DiscardVm

_ACTIVE = (SlotState.FETCHING, SlotState.STARTING, SlotState.RUNNING)
#: Slots whose VM is about to take its memory.
_PENDING = (SlotState.FETCHING, SlotState.STARTING, SlotState.RESUMING)


def plan(
    policy: PolicyConfig,
    vm_types: Mapping[str, VmType],
    verdict: Verdict,
    host: HostState,
    *,
    slots: Sequence[Slot],
    leases: Sequence[Lease],
    fresh: bool,
    handled: Collection[str],
    now: float,
) -> list[Action]:
    """The actions for this tick.

    ``leases`` is the set from the last successful heartbeat reply; ``fresh`` says whether
    that reply arrived in this tick (only a fresh reply can revoke or start anything);
    ``handled`` holds the lease ids already started or declined.
    """
    actions: list[Action] = []
    vacated: set[int] = set()
    suspend = policy.windows.suspend_minutes > 0 and verdict.owner_present
    if not verdict.may_run:
        for slot in slots:
            if slot.state is SlotState.RUNNING and suspend:
                actions.append(SuspendVm(slot.index, verdict.reason))
                vacated.add(slot.index)
            elif slot.state in _ACTIVE:
                actions.append(VacateVm(slot.index, verdict.reason, verdict.hard_stop))
                vacated.add(slot.index)
    discarded = _discards(policy, slots, leases, fresh=fresh, now=now)
    actions.extend(discarded)
    vacated.update(action.slot for action in discarded)
    resumed = _resumes(policy, verdict, host, slots, vacated) if verdict.may_run else []
    actions.extend(resumed)
    if fresh:
        current = {lease.lease_id for lease in leases}
        for slot in slots:
            if slot.index in vacated or slot.state not in _ACTIVE or slot.lease is None:
                continue
            if slot.lease.lease_id not in current:
                kind = "backfill lease" if slot.lease.backfill else "lease"
                actions.append(
                    VacateVm(
                        slot.index,
                        f"{kind} {slot.lease.lease_id} revoked",
                        slot.lease.backfill,
                    )
                )
                vacated.add(slot.index)
    if not fresh:
        return actions
    actions.extend(
        _starts(
            policy=policy,
            vm_types=vm_types,
            verdict=verdict,
            host=host,
            slots=slots,
            leases=leases,
            handled=handled,
            now=now,
            vacated=vacated,
        )
    )
    return actions


def _discards(
    policy: PolicyConfig, slots: Sequence[Slot], leases: Sequence[Lease], *, fresh: bool, now: float
) -> list[DiscardVm]:
    """The saved VMs to drop: kept for ``suspend_minutes`` already, or whose lease a fresh
    reply no longer lists (revoked)."""
    current = {lease.lease_id for lease in leases}
    out: list[DiscardVm] = []
    for slot in slots:
        if slot.state is not SlotState.SUSPENDED:
            continue
        if slot.deadline is not None and now >= slot.deadline:
            minutes = policy.windows.suspend_minutes
            out.append(
                DiscardVm(slot.index, f"saved for grid_policy.suspend_minutes ({minutes} min)")
            )
        elif fresh and slot.lease is not None and slot.lease.lease_id not in current:
            out.append(DiscardVm(slot.index, f"lease {slot.lease.lease_id} revoked"))
    return out


def _resumes(
    policy: PolicyConfig,
    verdict: Verdict,
    host: HostState,
    slots: Sequence[Slot],
    vacated: set[int],
) -> list[ResumeVm]:
    """The saved VMs to run again: as soon as new VMs could start and the free memory beyond
    the reserve holds the VM's own (it resumes with the memory it was saved with)."""
    if not verdict.may_start:
        return []
    free_mb = host.memory_free_mb - sum(s.memory_mb for s in slots if s.state in _PENDING)
    out: list[ResumeVm] = []
    for slot in slots:
        if slot.state is not SlotState.SUSPENDED or slot.index in vacated:
            continue
        if memory_for(policy, slot.memory_mb, free_mb) >= slot.memory_mb:
            out.append(ResumeVm(slot.index))
            free_mb -= slot.memory_mb
    return out


def _starts(
    *,
    policy: PolicyConfig,
    vm_types: Mapping[str, VmType],
    verdict: Verdict,
    host: HostState,
    slots: Sequence[Slot],
    leases: Sequence[Lease],
    handled: Collection[str],
    now: float,
    vacated: set[int],
) -> list[Action]:
    actions: list[Action] = []
    held = {slot.lease.lease_id for slot in slots if slot.lease is not None}
    idle = [slot.index for slot in slots if slot.state is SlotState.IDLE]
    busy = sum(1 for slot in slots if slot.busy and slot.index not in vacated)
    free_mb = host.memory_free_mb - sum(
        s.memory_mb for s in slots if s.state in _PENDING or s.state is SlotState.SUSPENDED
    )
    # Slots being vacated (now or before): a lease that needs them waits instead of a decline.
    leaving = [s for s in slots if s.index in vacated or s.state is SlotState.VACATING]
    leaving_mb = sum(s.memory_mb for s in leaving if s.state is not SlotState.FETCHING)

    def decline(lease: Lease, reason: str, detail: str) -> None:
        actions.append(DeclineLease(Decline(lease.lease_id, reason, detail)))

    for lease in leases:
        if lease.lease_id in handled or lease.lease_id in held:
            continue
        vm_type = vm_types.get(lease.vm_name)
        if vm_type is None:
            decline(lease, "unknown_vm_type", f"{lease.vm_name!r} is not in grid_vm_types")
        elif lease.expired(now):
            decline(lease, "expired", f"lease older than its ttl of {lease.ttl_s:.0f} s")
        elif not verdict.may_start:
            if verdict.memory_short and memory_for(
                policy, DEFAULT_MINIMUM_MB, free_mb + leaving_mb
            ):
                continue  # short of memory that the VMs being vacated hold: wait for it
            decline(
                lease, "hw_virt" if "virtualisation" in verdict.reason else "policy", verdict.reason
            )
        elif busy >= policy.max_vms or not idle:
            if leaving:
                continue  # a slot is being vacated: start from a later reply
            decline(lease, "max_vms", f"{busy} of grid_max_vms_per_desktop={policy.max_vms} busy")
        else:
            wanted = min(lease.memory_mb, vm_type.memory_mb)
            memory = memory_for(policy, wanted, free_mb)
            if memory < wanted and memory_for(policy, wanted, free_mb + leaving_mb) > memory:
                continue  # the memory of the VMs being vacated would hold it: wait for it
            if memory == 0:
                decline(
                    lease,
                    "memory",
                    f"{free_mb} MB free minus the {policy.reserve_mb} MB reserve is too little",
                )
                continue
            cpus = max(1, min(lease.cpus, vm_type.cpus, host.cpus))
            actions.append(StartVm(idle.pop(0), lease, vm_type, memory, cpus))
            busy += 1
            free_mb -= memory
    return actions
