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
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from cvmc.agent.domain.config import PolicyConfig, VmType
from cvmc.agent.domain.engine import HostState, Verdict, memory_for
from cvmc.agent.domain.slots import Slot, SlotState
from cvmc.gridmodel.memory import DEFAULT_MINIMUM_MB
from cvmc.protocol import Decline, Lease

__all__ = ["Action", "DeclineLease", "StartVm", "VacateVm", "plan"]


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


Action = StartVm | VacateVm | DeclineLease

_ACTIVE = (SlotState.FETCHING, SlotState.STARTING, SlotState.RUNNING)
_PENDING = (SlotState.FETCHING, SlotState.STARTING)


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
    if not verdict.may_run:
        for slot in slots:
            if slot.state in _ACTIVE:
                actions.append(VacateVm(slot.index, verdict.reason, verdict.hard_stop))
                vacated.add(slot.index)
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
    free_mb = host.memory_free_mb - sum(s.memory_mb for s in slots if s.state in _PENDING)
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
