"""The policy engine: may this desktop carry grid load right now, and may it start more?

Pure: it takes the policy, the local time and a snapshot of the host, and returns a
:class:`Verdict`. The windows themselves are the grid model's (``cvmc.gridmodel.policy``);
this module adds the desktop's own limits: battery, hardware virtualisation and memory.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cvmc.agent.domain.config import PolicyConfig
from cvmc.gridmodel import policy as windows
from cvmc.gridmodel.memory import DEFAULT_MINIMUM_MB, vm_memory_mb

__all__ = ["HostState", "HwVirt", "Verdict", "evaluate", "memory_for"]


@dataclass(frozen=True)
class HwVirt:
    """Hardware virtualisation as the platform reports it."""

    present: bool  # the CPU has VT-x/AMD-V and firmware enables it
    held_by: str | None = None  # e.g. "Hyper-V", "VBS/memory integrity": a conflict
    detail: str = ""

    @property
    def usable(self) -> bool:
        return self.present and self.held_by is None


@dataclass(frozen=True)
class HostState:
    """One snapshot of the desktop, taken by the adapters."""

    users: int  # logged-on user sessions, console, RDP and switched-away ones alike
    cpus: int
    memory_total_mb: int
    memory_free_mb: int
    hw_virt: HwVirt
    battery_percent: int | None = None  # None: no battery
    on_ac: bool | None = None  # None: unknown or no battery
    #: Sessions that count as their owner present (grid_policy.owner_idle_minutes leaves out
    #: the ones idle for long enough); None: every one of ``users`` does, the seed's rule.
    present: int | None = None

    @property
    def user_present(self) -> bool:
        """Whether ``user_present`` blackouts apply: an owner logged on and not idle."""
        return (self.users if self.present is None else self.present) > 0

    @property
    def on_battery(self) -> bool:
        return self.battery_percent is not None and self.on_ac is False


@dataclass(frozen=True)
class Verdict:
    """What the policy allows now."""

    may_run: bool  # VMs already running may keep running
    may_start: bool  # new VMs may start
    hard_stop: bool  # stop at once, without the vacate deadline (low battery)
    reason: str  # why not, or "allowed"
    blackout: str | None = None  # the blackout in force, by name
    #: New VMs may not start only for want of free memory (the rest of the policy allows them).
    memory_short: bool = False
    #: VMs must stop because their owner is here (a ``user_present`` blackout): the one case
    #: in which ``grid_policy.suspend_minutes`` saves a VM instead of shutting it down.
    owner_present: bool = False


def evaluate(config: PolicyConfig, now: dt.datetime, host: HostState) -> Verdict:
    """The verdict for local time ``now`` and the host snapshot ``host``.

    In order: a low battery stops everything at once; a blackout in force (for a user
    present, or always) vacates and forbids starts; on battery, or without usable hardware
    virtualisation when the policy requires it, nothing new starts but nothing is killed.
    """
    if host.on_battery and (host.battery_percent or 0) < config.min_battery_percent:
        return Verdict(
            False,
            False,
            True,
            f"battery at {host.battery_percent}% is below grid_policy.min_battery_percent "
            f"({config.min_battery_percent}%)",
        )
    blackout = windows.active_blackout(config.windows, now, user_present=host.user_present)
    if blackout is not None:
        owner = blackout.applies == "user_present"
        who = "a user is logged on" if owner else "always"
        return Verdict(
            False,
            False,
            False,
            f"blackout {blackout.name} ({who})",
            blackout.name,
            owner_present=owner,
        )
    if host.on_battery:
        return Verdict(True, False, False, "on battery: nothing new starts")
    if config.require_hw_virtualization and not host.hw_virt.usable:
        held = f" (held by {host.hw_virt.held_by})" if host.hw_virt.held_by else ""
        return Verdict(
            True,
            False,
            False,
            f"hardware virtualisation is not usable{held} and "
            "grid_policy.require_hw_virtualization is true",
        )
    if host.memory_free_mb - config.reserve_mb < DEFAULT_MINIMUM_MB:
        return Verdict(
            True,
            False,
            False,
            f"{host.memory_free_mb} MB free leaves less than {DEFAULT_MINIMUM_MB} MB beyond "
            f"the {config.reserve_mb} MB reserve",
            memory_short=True,
        )
    return Verdict(True, True, False, _allowed(config, now, host))


def _allowed(config: PolicyConfig, now: dt.datetime, host: HostState) -> str:
    """ "allowed", saying so when the opt-in owner-idle rule is what lets load run now."""
    if host.users and not host.user_present:
        waived = windows.active_blackout(config.windows, now, user_present=True)
        if waived is not None:
            return (
                f"allowed: the logged-on owner has been idle for grid_policy.owner_idle_minutes "
                f"({config.windows.owner_idle_minutes} min), so blackout {waived.name} waits"
            )
    return "allowed"


def memory_for(config: PolicyConfig, wanted_mb: int, free_mb: int) -> int:
    """Memory for one more VM: ``min(wanted, free - reserve)``, or 0 for "do not start"."""
    return vm_memory_mb(wanted_mb, max(free_mb, 0), config.reserve_mb)


def seconds_until_change(config: PolicyConfig, now: dt.datetime, host: HostState) -> float:
    """Seconds until the policy window's answer can next change (to sleep until an edge)."""
    minutes = windows.minutes_until_change(config.windows, now, user_present=host.user_present)
    edge = now.replace(second=0, microsecond=0) + dt.timedelta(minutes=minutes)
    return max((edge - now).total_seconds(), 0.0)
