"""The slot state machine: idle -> fetching -> starting -> running -> vacating -> stopped.

A desktop has ``max_vms_per_desktop`` slots, numbered from 0 like the address plan's slots.
Each slot runs at most one research VM. Every transition goes through :func:`transition`,
which refuses the ones the life cycle does not have, so a bug can never skip the cleanup:

    idle ──lease──► fetching ──image ready──► starting ──VM up──► running
                       │                         │                  │
                       └──────────── vacate ─────┴──────────────────┤
                       │                         │                  ▼
                       └── failed ──► stopped ◄──┴── failed ──── vacating
                                         │                          │
                                         ◄──── VM off / deadline ───┘
                                         │
                                         └── cleaned up ──► idle

``stopped`` means "the VM is off": its slot disk and seed are discarded and its lease released
before the slot is ``idle`` again.

With ``grid_policy.suspend_minutes`` (off by default), an owner's return saves a running VM
instead of vacating it, and it keeps its slot, disk, seed and lease::

    running ──owner back──► suspending ──saved──► suspended ──owner gone──► resuming ──► running
                               │                     │                         │
                               └─ save failed ──► vacating                      │
                                                     └── deadline / revoked ──► stopped ◄──┘
                                                                             (resume failed)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from cvmc.protocol import Lease

__all__ = ["ALLOWED", "IllegalTransitionError", "Slot", "SlotState", "transition", "vm_id"]


class SlotState(enum.StrEnum):
    IDLE = "idle"
    FETCHING = "fetching"
    STARTING = "starting"
    RUNNING = "running"
    VACATING = "vacating"
    STOPPED = "stopped"
    SUSPENDING = "suspending"
    SUSPENDED = "suspended"
    RESUMING = "resuming"


S = SlotState
ALLOWED: dict[SlotState, frozenset[SlotState]] = {
    S.IDLE: frozenset({S.FETCHING}),
    S.FETCHING: frozenset({S.STARTING, S.VACATING, S.STOPPED}),
    S.STARTING: frozenset({S.RUNNING, S.VACATING, S.STOPPED}),
    S.RUNNING: frozenset({S.VACATING, S.STOPPED, S.SUSPENDING}),
    S.VACATING: frozenset({S.STOPPED}),
    S.SUSPENDING: frozenset({S.SUSPENDED, S.VACATING, S.STOPPED}),
    S.SUSPENDED: frozenset({S.RESUMING, S.STOPPED}),
    S.RESUMING: frozenset({S.RUNNING, S.STOPPED}),
    S.STOPPED: frozenset({S.IDLE}),
}

#: States in which a slot holds (or is about to hold) a VM and its lease.
BUSY: frozenset[SlotState] = frozenset(
    {S.FETCHING, S.STARTING, S.RUNNING, S.VACATING, S.SUSPENDING, S.SUSPENDED, S.RESUMING}
)

#: Prefix of every VM and disk the agent creates; anything with it and no slot is an orphan.
VM_PREFIX = "cvmc-slot"


def vm_id(slot: int) -> str:
    """The hypervisor name of the VM in ``slot``: ``cvmc-slot0``."""
    return f"{VM_PREFIX}{slot}"


class IllegalTransitionError(RuntimeError):
    """A transition the life cycle does not have (a bug, never an input problem)."""


@dataclass
class Slot:
    """One slot and what it holds. Times are monotonic seconds."""

    index: int
    state: SlotState = SlotState.IDLE
    lease: Lease | None = None
    vm_name: str | None = None
    memory_mb: int = 0
    cpus: int = 0
    since: float = 0.0
    deadline: float | None = None
    reason: str = ""
    history: list[tuple[SlotState, SlotState, str]] = field(default_factory=list)

    @property
    def vm_id(self) -> str:
        return vm_id(self.index)

    @property
    def busy(self) -> bool:
        return self.state in BUSY


def transition(slot: Slot, new: SlotState, now: float, reason: str = "") -> Slot:
    """Move ``slot`` to ``new`` (in place) or raise :class:`IllegalTransitionError`."""
    if new not in ALLOWED[slot.state]:
        raise IllegalTransitionError(
            f"slot {slot.index}: {slot.state} -> {new} is not a transition"
        )
    slot.history.append((slot.state, new, reason))
    del slot.history[:-20]  # a bounded trail for `cvmc status`
    slot.state = new
    slot.since = now
    slot.reason = reason
    if new not in (SlotState.VACATING, SlotState.SUSPENDED):
        slot.deadline = None
    if new is SlotState.IDLE:
        slot.lease = None
        slot.vm_name = None
        slot.memory_mb = 0
        slot.cpus = 0
    return slot
