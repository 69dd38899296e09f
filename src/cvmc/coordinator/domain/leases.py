"""Lease allocation: a pure function of (demand, desktops, leases, now).

Rules (docs/coordinator.md, "Lease algorithm"):

1. A lease is *offered* until the desktop reports it in a slot (then it is *held*). An offered
   lease that was not started by ``start_by`` expires. A desktop that is offline or revoked
   loses every lease.
2. For each VM type, supply (offered + held leases) never exceeds demand. When demand drops,
   the excess is revoked: offered leases first, then VMs still starting, then running VMs
   without a job, then running VMs that run one (``claimed``: the schedd's running jobs name
   their VMs); from the department that holds the most leases, the newest first.
3. New leases go, one at a time, to the department that holds the fewest leases (ties by name),
   and inside it to the eligible desktop with the fewest VMs, then the most free memory. Types
   take turns, so one type's demand does not starve another's. A desktop is eligible for a type
   when it is online, may start VMs, has usable hardware virtualization, a free slot
   (``min(its max_vms, the grid's max_vms_per_desktop)``), enough free memory for the type
   beyond the memory of its offered leases, and did not decline that type recently.
4. Backfill (``grid_backfill``, off by default): a *backfill* lease runs the backfill type on a
   desktop that holds no lease for real demand, up to ``max_per_desktop`` of them, on the same
   eligibility as rule 3. Backfill leases are not supply: rule 2 never trims them, rule 3
   neither counts them in a department's load nor in a desktop's slots and memory, and a
   desktop rule 3 gives a lease loses its backfill leases in the same round (``preempted``).
   When backfill is turned off or its type changes, its leases go, and so do a desktop's
   backfill leases beyond ``max_per_desktop`` (``backfill_off``).
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace

from cvmc.coordinator.domain.grid import VmType

__all__ = [
    "LEASE_STATES",
    "Allocation",
    "DesktopView",
    "LeaseView",
    "allocate",
    "claimed_leases",
    "real_leases",
]


@dataclass(frozen=True)
class DesktopView:
    id: str
    department: str
    online: bool
    may_start: bool
    hw_virt: bool
    max_vms: int
    memory_free_mb: int
    revoked: bool = False
    unleased_vms: int = 0  # busy slots without a lease of ours (they will be vacated)
    name: str = ""  # the registered name (desktop_id), which VMs' tunnel addresses map to
    # Wake-on-LAN (domain.wake): the address its heartbeats came from, its MAC, when last heard.
    address: str | None = None
    mac: str | None = None
    last_seen: float | None = None


@dataclass(frozen=True)
class LeaseView:
    id: str
    desktop_id: str
    vm_name: str
    cpus: int
    memory_mb: int
    created_at: float
    start_by: float
    state: str = "offered"  # offered | starting | running
    slot: int | None = None  # the desktop's slot that holds it, once the desktop reports it
    backfill: bool = False  # a backfill lease (rule 4): not supply, preempted by real demand


#: A lease's states, from the least advanced (the trim revokes in this order).
LEASE_STATES: tuple[str, ...] = ("offered", "starting", "running")
_REVOKE_ORDER = {state: rank for rank, state in enumerate(LEASE_STATES)}
#: The rank of a running lease whose VM runs a job: revoked last.
_CLAIMED = 3


def claimed_leases(
    leases: Sequence[LeaseView],
    desktops: Sequence[DesktopView],
    claimed_slots: Collection[tuple[str, int]],
) -> frozenset[str]:
    """The ids of the held leases whose VM runs a job: their (desktop name, slot) is in
    ``claimed_slots`` (from the running jobs' VM addresses, ``GridFile.vm_slot``)."""
    if not claimed_slots:
        return frozenset()
    names = {desk.id: desk.name for desk in desktops}
    return frozenset(
        lease.id
        for lease in leases
        if lease.slot is not None and (names.get(lease.desktop_id), lease.slot) in claimed_slots
    )


@dataclass
class Allocation:
    new: list[LeaseView] = field(default_factory=list)
    revoked: dict[str, str] = field(default_factory=dict)  # lease id -> reason

    def kept(self, leases: Sequence[LeaseView]) -> list[LeaseView]:
        """The leases that remain after this allocation (old ones kept, plus the new ones)."""
        return [lease for lease in leases if lease.id not in self.revoked] + self.new


def allocate(
    *,
    demand: Mapping[str, int],
    types: Sequence[VmType],
    desktops: Sequence[DesktopView],
    leases: Sequence[LeaseView],
    blocked: frozenset[tuple[str, str]] = frozenset(),
    now: float,
    ttl_s: float,
    max_vms_per_desktop: int,
    new_id: Callable[[], str],
    require_hw_virt: bool = True,
    claimed: frozenset[str] = frozenset(),
    backfill: VmType | None = None,
    backfill_max: int = 1,
) -> Allocation:
    """Which leases to revoke (with the reason) and which to create.

    With ``require_hw_virt`` (``grid_policy.require_hw_virtualization``), only desktops that
    report VT-x/AMD-V get new leases; without it, any desktop may (slow software emulation).
    ``claimed``: ids of running leases whose VM runs a job (:func:`claimed_leases`), which the
    trim revokes last. ``backfill`` (rule 4): the backfill type, ``None`` when off, and at most
    ``backfill_max`` backfill leases per desktop.
    """
    out = Allocation()
    by_id = {d.id: d for d in desktops}
    kept = _drop(leases, by_id, {t.name for t in types}, now, out)
    kept, spare = _split_backfill(kept, backfill, out)
    dept_load: Counter[str] = Counter(by_id[lease.desktop_id].department for lease in kept)
    remaining = _trim(kept, demand, by_id, dept_load, out, claimed=claimed)
    supply = Counter(lease.vm_name for lease in remaining)
    need = {t.name: max(demand.get(t.name, 0), 0) - supply[t.name] for t in types}
    active = [t for t in types if need[t.name] > 0]
    spare_of: dict[str, list[LeaseView]] = defaultdict(list)
    for lease in spare:
        spare_of[lease.desktop_id].append(lease)
    if active:
        _fill(
            _Filler(
                desktops=desktops,
                remaining=remaining,
                dept_load=dept_load,
                blocked=blocked,
                max_vms_per_desktop=max_vms_per_desktop,
                types=active,
                require_hw_virt=require_hw_virt,
                backfill=spare,
            ),
            active=active,
            need=need,
            spare_of=spare_of,
            out=out,
            offer=lambda desk, vm: _offer(new_id(), desk, vm, now, ttl_s),
        )
    busy = {lease.desktop_id for lease in remaining} | {lease.desktop_id for lease in out.new}
    for desk_id in busy & spare_of.keys():  # real work and backfill never share a desktop
        for lease in spare_of.pop(desk_id):
            out.revoked[lease.id] = "preempted"
    most = min(backfill_max, max_vms_per_desktop)
    for held in spare_of.values():  # max_per_desktop lowered: the newest extras go
        held.sort(key=lambda lease: (lease.created_at, lease.id))
        for lease in held[most:]:
            out.revoked[lease.id] = "backfill_off"
        del held[most:]
    if backfill is not None:
        out.new.extend(
            _backfill(
                backfill,
                desktops=desktops,
                busy=busy,
                spare_of=spare_of,
                blocked=blocked,
                most=most,
                require_hw_virt=require_hw_virt,
                offer=lambda desk: _offer(new_id(), desk, backfill, now, ttl_s, backfill=True),
            )
        )
    return out


def _fill(
    filler: _Filler,
    *,
    active: list[VmType],
    need: dict[str, int],
    spare_of: dict[str, list[LeaseView]],
    out: Allocation,
    offer: Callable[[DesktopView, VmType], LeaseView],
) -> None:
    """Rule 3: the types take turns, one new lease each, until each type's need is met or no
    desktop is left for it; a desktop that gets one loses its backfill leases (rule 4)."""
    while active:
        for vm in list(active):
            desk = filler.pick(vm)
            if desk is None:
                active.remove(vm)
                continue
            out.new.append(offer(desk, vm))
            for lease in spare_of.pop(desk.id, ()):
                out.revoked[lease.id] = "preempted"
            filler.take(desk, vm)
            need[vm.name] -= 1
            if need[vm.name] <= 0:
                active.remove(vm)


def _offer(
    lease_id: str,
    desk: DesktopView,
    vm: VmType,
    now: float,
    ttl_s: float,
    *,
    backfill: bool = False,
) -> LeaseView:
    return LeaseView(
        id=lease_id,
        desktop_id=desk.id,
        vm_name=vm.name,
        cpus=vm.cpus,
        memory_mb=vm.memory_mb,
        created_at=now,
        start_by=now + ttl_s,
        backfill=backfill,
    )


def real_leases(leases: Sequence[LeaseView]) -> list[LeaseView]:
    """The leases for real demand (supply), without the backfill leases."""
    return [lease for lease in leases if not lease.backfill]


def _split_backfill(
    kept: Sequence[LeaseView], backfill: VmType | None, out: Allocation
) -> tuple[list[LeaseView], list[LeaseView]]:
    """(real leases, backfill leases of the current backfill type); backfill leases of a type
    that is no longer the backfill type (or of backfill turned off) are revoked."""
    real: list[LeaseView] = []
    spare: list[LeaseView] = []
    for lease in kept:
        if not lease.backfill:
            real.append(lease)
        elif backfill is None or lease.vm_name != backfill.name:
            out.revoked[lease.id] = "backfill_off"
        else:
            spare.append(lease)
    return real, spare


def _backfill(
    vm: VmType,
    *,
    desktops: Sequence[DesktopView],
    busy: Collection[str],
    spare_of: Mapping[str, Sequence[LeaseView]],
    blocked: frozenset[tuple[str, str]],
    most: int,
    require_hw_virt: bool,
    offer: Callable[[DesktopView], LeaseView],
) -> list[LeaseView]:
    """Rule 4: backfill leases for the desktops that hold no real lease, up to ``most`` each
    (and their free slots), within their free memory (less the backfill offers pending)."""
    new: list[LeaseView] = []
    for desk in desktops:
        if (
            desk.id in busy
            or not _may_lease(desk, require_hw_virt)
            or (desk.id, vm.name) in blocked
        ):
            continue
        held = spare_of.get(desk.id, ())
        room = min(most, desk.max_vms) - len(held) - desk.unleased_vms
        free = desk.memory_free_mb - sum(x.memory_mb for x in held if x.state == "offered")
        while room > 0 and free >= vm.memory_mb:
            new.append(offer(desk))
            room -= 1
            free -= vm.memory_mb
    return new


def _may_lease(desk: DesktopView, require_hw_virt: bool) -> bool:
    """Rules 3 and 4: online, not revoked, may start VMs, and VT-x where the policy wants it."""
    return (
        desk.online
        and not desk.revoked
        and desk.may_start
        and (desk.hw_virt or not require_hw_virt)
    )


def _drop(
    leases: Sequence[LeaseView],
    by_id: Mapping[str, DesktopView],
    known_types: set[str],
    now: float,
    out: Allocation,
) -> list[LeaseView]:
    """Rule 1: leases of revoked, unknown or offline desktops, expired offers, unknown types."""
    kept: list[LeaseView] = []
    for lease in leases:
        desk = by_id.get(lease.desktop_id)
        if desk is None or desk.revoked:
            out.revoked[lease.id] = "revoked"
        elif not desk.online:
            out.revoked[lease.id] = "offline"
        elif lease.state == "offered" and lease.start_by <= now:
            out.revoked[lease.id] = "expired"
        elif lease.vm_name not in known_types:
            out.revoked[lease.id] = "unknown_vm_type"
        else:
            kept.append(lease)
    return kept


def _trim(
    kept: Sequence[LeaseView],
    demand: Mapping[str, int],
    by_id: Mapping[str, DesktopView],
    dept_load: Counter[str],
    out: Allocation,
    *,
    claimed: frozenset[str],
) -> list[LeaseView]:
    """Rule 2: revoke each type's supply above its demand.

    Victims, one at a time: the least advanced state first (offered, starting, running without
    a job, running with one); among those, from the department that holds the most leases now;
    there, the newest lease.
    """
    by_type: dict[str, list[LeaseView]] = defaultdict(list)
    for lease in kept:
        by_type[lease.vm_name].append(lease)
    remaining: list[LeaseView] = []
    for vm_name, group in sorted(by_type.items()):
        excess = len(group) - max(demand.get(vm_name, 0), 0)
        if excess <= 0:
            remaining.extend(group)
            continue
        # rank -> department -> leases, oldest first (so pop() takes the newest)
        buckets: dict[int, dict[str, list[LeaseView]]] = defaultdict(lambda: defaultdict(list))
        for lease in sorted(group, key=lambda item: (item.created_at, item.id)):
            rank = _CLAIMED if lease.id in claimed else _REVOKE_ORDER.get(lease.state, 0)
            buckets[rank][by_id[lease.desktop_id].department].append(lease)
        for _ in range(excess):
            rank = min(r for r, depts in buckets.items() if any(depts.values()))
            depts = buckets[rank]
            dept = max(
                (d for d, items in depts.items() if items),
                key=lambda d: (dept_load[d], depts[d][-1].created_at, d),
            )
            victim = depts[dept].pop()
            out.revoked[victim.id] = "demand"
            dept_load[dept] -= 1
        remaining.extend(
            lease for depts in buckets.values() for items in depts.values() for lease in items
        )
    return remaining


class _Filler:
    """Rule 3's bookkeeping: per type and department, a heap of eligible desktops.

    Entries are invalidated lazily (a version per desktop), so a round costs
    O((desktops x types + new leases x types) log desktops), not desktops x new leases.
    """

    def __init__(
        self,
        *,
        desktops: Sequence[DesktopView],
        remaining: Sequence[LeaseView],
        dept_load: Counter[str],
        blocked: frozenset[tuple[str, str]],
        max_vms_per_desktop: int,
        types: Sequence[VmType],
        require_hw_virt: bool = True,
        backfill: Sequence[LeaseView] = (),
    ) -> None:
        self.dept_load = dept_load
        self.blocked = blocked
        self.cap = max_vms_per_desktop
        self.types = list(types)
        self.used: Counter[str] = Counter(lease.desktop_id for lease in remaining)
        self.pending: Counter[str] = Counter()
        for lease in remaining:
            if lease.state == "offered":
                self.pending[lease.desktop_id] += lease.memory_mb
        # A desktop's reported free memory leaves out what its backfill VMs hold; real demand
        # preempts them, so that memory counts as free (a negative pending).
        for lease in backfill:
            if lease.state != "offered":
                self.pending[lease.desktop_id] -= lease.memory_mb
        self.version: Counter[str] = Counter()
        self.by_id: dict[str, DesktopView] = {}
        self.heaps: dict[str, dict[str, list[tuple[tuple[int, int, str], int]]]] = {
            t.name: defaultdict(list) for t in types
        }
        for desk in desktops:
            if _may_lease(desk, require_hw_virt):
                self.by_id[desk.id] = desk
                self._push(desk)

    def free_slots(self, desk: DesktopView) -> int:
        return min(desk.max_vms, self.cap) - self.used[desk.id] - desk.unleased_vms

    def free_mem(self, desk: DesktopView) -> int:
        return desk.memory_free_mb - self.pending[desk.id]

    def _fits(self, desk: DesktopView, vm: VmType) -> bool:
        return (
            (desk.id, vm.name) not in self.blocked
            and self.free_slots(desk) > 0
            and self.free_mem(desk) >= vm.memory_mb
        )

    def _push(self, desk: DesktopView) -> None:
        key = (self.used[desk.id] + desk.unleased_vms, -self.free_mem(desk), desk.id)
        for vm in self.types:
            if self._fits(desk, vm):
                heapq.heappush(self.heaps[vm.name][desk.department], (key, self.version[desk.id]))

    def pick(self, vm: VmType) -> DesktopView | None:
        """The least-loaded department's best eligible desktop for one more ``vm``.

        Departments are tried in (load, name) order and the first with an eligible desktop
        wins, so a pick usually looks at one heap top, not at every department's. An entry
        that is stale or no longer fits never becomes valid again within a round (versions
        only grow, free slots and memory only shrink), so the heaps left unvisited are
        cleaned later with the same result.
        """
        heaps = self.heaps[vm.name]
        for dept in sorted(heaps, key=lambda d: (self.dept_load[d], d)):
            heap = heaps[dept]
            while heap:
                (_, _, desk_id), version = heap[0]
                if version == self.version[desk_id] and self._fits(self.by_id[desk_id], vm):
                    return self.by_id[desk_id]
                heapq.heappop(heap)
        return None

    def take(self, desk: DesktopView, vm: VmType) -> None:
        self.used[desk.id] += 1
        self.pending[desk.id] += vm.memory_mb
        self.dept_load[desk.department] += 1
        self.version[desk.id] += 1
        self._push(desk)


def supply_by_type(leases: Sequence[LeaseView]) -> dict[str, int]:
    """Leases per VM type (offered, starting and running)."""
    return dict(Counter(lease.vm_name for lease in leases))


def with_state(lease: LeaseView, state: str) -> LeaseView:
    return replace(lease, state=state)
