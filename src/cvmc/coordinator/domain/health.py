"""Why a VM type is not running, and which desktops can never take work: pure rules over what
the store counts (the dashboard, ``/metrics`` and the admin API all read them from here).

A desktop can never take work when its hardware rules it out, whatever its owner does:

- ``hw_virt_held``: it has VT-x/AMD-V, but something else holds it (Hyper-V, VBS/memory
  integrity: the agent reports what), and the grid requires hardware virtualization;
- ``no_hw_virt``: it has none, and the grid requires it;
- ``too_little_memory``: its total memory is below the smallest VM type's.

A desktop that has not reported its total memory yet (0: an agent before it was reported) is
not counted as too small.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

__all__ = [
    "CANNOT_WORK_REASONS",
    "DeclineRecord",
    "DemandHealth",
    "HardwareGroup",
    "PoolSize",
    "Status",
    "TypeFacts",
    "TypeStatus",
    "able_to_hold",
    "cannot_work",
    "cannot_work_counts",
    "held_by_counts",
    "pool_size",
    "states_of_able",
    "why_not_running",
]

#: Why a desktop can never take work, in the order they are checked (the first one counts).
CANNOT_WORK_REASONS = ("hw_virt_held", "no_hw_virt", "too_little_memory")


class HardwareGroup(NamedTuple):
    """Enrolled, unrevoked desktops in the same state that report the same hardware, and how
    many they are."""

    hw_virt: bool
    held_by: str | None
    memory_total_mb: int
    cpus: int
    desktops: int
    state: str = "idle"  # idle / busy / owner_present / offline


@dataclass(frozen=True)
class DeclineRecord:
    """One lease a desktop declined, with the agent's reason and detail."""

    at: float
    desktop: str
    department: str
    vm_name: str
    reason: str
    detail: str


@dataclass(frozen=True)
class PoolSize:
    desktops: int
    cores: int
    memory_mb: int


def cannot_work(group: HardwareGroup, smallest_mb: int, *, require_hw_virt: bool) -> str | None:
    """Why these desktops can never take work (``CANNOT_WORK_REASONS``), or None."""
    if require_hw_virt and not group.hw_virt:
        return "hw_virt_held" if group.held_by else "no_hw_virt"
    if 0 < group.memory_total_mb < smallest_mb:
        return "too_little_memory"
    return None


def cannot_work_counts(
    groups: Iterable[HardwareGroup], smallest_mb: int, *, require_hw_virt: bool
) -> dict[str, int]:
    """Desktops that can never take work, by reason (every reason, 0 included)."""
    counts = dict.fromkeys(CANNOT_WORK_REASONS, 0)
    for group in groups:
        reason = cannot_work(group, smallest_mb, require_hw_virt=require_hw_virt)
        if reason is not None:
            counts[reason] += group.desktops
    return counts


def states_of_able(
    groups: Iterable[HardwareGroup],
    states: Mapping[str, int],
    smallest_mb: int,
    *,
    require_hw_virt: bool,
) -> dict[str, int]:
    """Desktops by state with those that can never take work taken out of their state and
    counted as ``cannot_work`` (the dashboard's bars: such a desktop is not "idle")."""
    out = {**states, "cannot_work": 0}
    for group in groups:
        if cannot_work(group, smallest_mb, require_hw_virt=require_hw_virt) is not None:
            out[group.state] = out.get(group.state, 0) - group.desktops
            out["cannot_work"] += group.desktops
    return out


def held_by_counts(groups: Iterable[HardwareGroup]) -> dict[str, int]:
    """Desktops whose VT-x something else holds, by what holds it."""
    counts: Counter[str] = Counter()
    for group in groups:
        if not group.hw_virt and group.held_by:
            counts[group.held_by] += group.desktops
    return dict(counts)


def able_to_hold(groups: Iterable[HardwareGroup], memory_mb: int, *, require_hw_virt: bool) -> int:
    """Enrolled desktops whose hardware could ever run one VM of ``memory_mb``."""
    return sum(
        group.desktops
        for group in groups
        if cannot_work(group, memory_mb, require_hw_virt=require_hw_virt) is None
    )


def pool_size(groups: Iterable[HardwareGroup]) -> PoolSize:
    desktops = cores = memory = 0
    for group in groups:
        desktops += group.desktops
        cores += group.cpus * group.desktops
        memory += group.memory_total_mb * group.desktops
    return PoolSize(desktops, cores, memory)


@dataclass(frozen=True)
class DemandHealth:
    """When demand was last read, and the last error reading it."""

    read_at: float | None = None
    error: str | None = None
    error_at: float | None = None

    @property
    def failing(self) -> bool:
        """The last read failed (an error newer than the last good read)."""
        return self.error_at is not None and (self.read_at is None or self.error_at > self.read_at)


@dataclass(frozen=True)
class TypeFacts:
    """What is known about one VM type now."""

    name: str
    cpus: int
    memory_mb: int
    demand: int
    unfit: int
    leases: int
    running: int
    #: Enrolled desktops whose hardware could ever hold one VM of it (``able_to_hold``).
    able: int
    #: Declines of it in the recent window, by reason.
    declined: Mapping[str, int] = field(default_factory=dict)
    #: The latest decline's detail, from the agent ("" when none is known).
    detail: str = ""


Status = Literal["ok", "waiting", "blocked"]


@dataclass(frozen=True)
class TypeStatus:
    name: str
    status: Status
    why: str


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def why_not_running(  # noqa: PLR0911 - one return per rule of the docstring
    facts: TypeFacts, health: DemandHealth, states: Mapping[str, int], now: float
) -> TypeStatus:
    """One sentence an operator reads to know why ``facts.name`` runs fewer VMs than jobs
    want (or that it does not need to). The first rule that applies answers:

    1. the demand source is failing: demand is unknown (the last known demand still counts);
    2. no job asks for it (or every job that names it is too big for one VM of it);
    3. it runs what the jobs ask for;
    4. no enrolled desktop's hardware can hold it;
    5. desktops declined it in the recent window (the commonest reason, the latest detail);
    6. leases are offered or starting, not running yet;
    7. no free desktop (how many are idle, with their owner, offline).
    """
    name = facts.name
    too_big = (
        f"; {_plural(facts.unfit, 'job')} too big for one VM of it "
        f"({facts.cpus} CPUs, {facts.memory_mb} MB)"
        if facts.unfit
        else ""
    )
    if health.failing:
        since = (
            f"not read for {_ago(now - health.read_at)}"
            if health.read_at is not None
            else "never read"
        )
        return TypeStatus(
            name, "blocked", f"demand unknown: the job queue was {since} ({health.error})"
        )
    if facts.demand == 0:
        if facts.unfit:
            return TypeStatus(name, "blocked", "no job it can hold" + too_big)
        return TypeStatus(name, "ok", "no job asks for it")
    if facts.running >= facts.demand:
        return TypeStatus(name, "ok", "runs what the jobs ask for" + too_big)
    if facts.able == 0:
        return TypeStatus(
            name,
            "blocked",
            f"no enrolled desktop's hardware can hold it (it needs {facts.memory_mb} MB; "
            "see the desktops that can never take work)" + too_big,
        )
    declines = sum(facts.declined.values())
    if declines:
        reason = max(facts.declined, key=lambda r: (facts.declined[r], r))
        detail = f": {facts.detail}" if facts.detail else ""
        return TypeStatus(
            name,
            "blocked" if facts.leases == 0 else "waiting",
            f"declined {_plural(declines, 'time')} in the last hour, mostly {reason}{detail}"
            + too_big,
        )
    if facts.leases > facts.running:
        return TypeStatus(
            name,
            "waiting",
            f"{_plural(facts.leases - facts.running, 'VM')} offered or starting" + too_big,
        )
    missing = facts.demand - facts.leases
    return TypeStatus(
        name,
        "waiting",
        f"no free desktop for {missing} more: {states.get('idle', 0)} idle, "
        f"{states.get('owner_present', 0)} with their owner, {states.get('busy', 0)} busy, "
        f"{states.get('offline', 0)} offline" + too_big,
    )
