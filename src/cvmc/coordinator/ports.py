"""The coordinator's ports: small abstract classes the service drives (adapters implement them)."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from cvmc.coordinator.domain.demand import Demand
from cvmc.coordinator.domain.health import DeclineRecord, HardwareGroup
from cvmc.coordinator.domain.leases import Allocation, DesktopView, LeaseView
from cvmc.coordinator.domain.wake import Wake

__all__ = [
    "RECENT_DECLINES",
    "RECENT_S",
    "WAKE_DELIVER_S",
    "AuthRecord",
    "CatalogueSource",
    "DashboardCounts",
    "DeclineRecord",
    "DemandSource",
    "DesktopRecord",
    "HeartbeatItem",
    "HeartbeatResult",
    "HeartbeatUpdate",
    "LeadershipLostError",
    "ReplayedError",
    "RevokedError",
    "Store",
    "TokenUsedError",
    "UnknownDesktopError",
    "UnstorableError",
    "VmTokenError",
    "VmTokenSource",
]


class TokenUsedError(Exception):
    """The store refuses this enrolment: the desktop is revoked, or the generation is not its
    next one (used before, skipped ahead, or lower), or a concurrent enrolment spent it."""


class ReplayedError(Exception):
    def __init__(self, last_seq: int) -> None:
        super().__init__(f"sequence not above {last_seq}")
        self.last_seq = last_seq


class RevokedError(Exception):
    """The desktop's credential was revoked."""


class UnknownDesktopError(Exception):
    """No desktop has this id (never enrolled, or enrolled again under a new id)."""


class UnstorableError(Exception):
    """The database refused one heartbeat's values (a number out of its column's range, a
    string it cannot hold). The schema check stops such values first; this keeps one that got
    past it to its own request, never its batch's."""


class LeadershipLostError(Exception):
    """This process stopped leading during an allocation round (the session that held the
    leader lock ended): the round's writes were not committed, and it runs no more rounds until
    it leads again."""


@dataclass(frozen=True)
class AuthRecord:
    id: str
    salt: bytes
    last_seq: int
    revoked: bool


@dataclass(frozen=True)
class HeartbeatUpdate:
    """What one heartbeat changes: the desktop's row, and its leases' states."""

    agent_version: str
    users: int
    may_start: bool
    may_run: bool
    hw_virt: bool
    cpus: int
    memory_free_mb: int
    max_vms: int
    busy_slots: int
    policy: str
    slot_leases: Mapping[str, str]  # lease id -> slot state
    busy_lease_ids: frozenset[str | None] = frozenset()
    declined: Sequence[tuple[str, str]] = ()  # (lease id, reason)
    lease_slots: Mapping[str, int] = field(default_factory=dict)  # lease id -> its slot
    memory_total_mb: int = 0
    hw_virt_held_by: str | None = None  # what holds VT-x/AMD-V (Hyper-V, VBS), if anything
    decline_details: Mapping[str, str] = field(default_factory=dict)  # lease id -> detail
    mac: str | None = None  # the MAC it reports (Wake-on-LAN), checked
    address: str | None = None  # the address the heartbeat came from, as the server saw it


@dataclass(frozen=True)
class HeartbeatItem:
    """One authenticated heartbeat, waiting to be applied."""

    desktop_id: str
    seq: int
    update: HeartbeatUpdate


#: What a store answers for one heartbeat: the desktop's current leases, or its refusal.
HeartbeatResult = (
    list[LeaseView] | ReplayedError | RevokedError | UnknownDesktopError | UnstorableError
)

_REFUSALS = (ReplayedError, RevokedError, UnknownDesktopError, UnstorableError)


@dataclass(frozen=True)
class DashboardCounts:
    desktops: Mapping[str, int]  # idle / busy / owner_present / offline / revoked
    running: Mapping[str, int]  # VMs running by type
    leases: Mapping[str, int]  # leases by type
    departments: Mapping[str, int] = field(default_factory=dict)  # leases by department
    #: Enrolled, unrevoked desktops grouped by their hardware.
    hardware: tuple[HardwareGroup, ...] = ()
    #: Declines in the recent window (``RECENT_S``), by (VM type, reason).
    declines: Mapping[tuple[str, str], int] = field(default_factory=dict)
    #: The latest declines, newest first (at most ``RECENT_DECLINES``).
    recent_declines: tuple[DeclineRecord, ...] = ()
    #: Core-seconds delivered, by (department, VM type).
    core_seconds: Mapping[tuple[str, str], float] = field(default_factory=dict)
    #: Desktops by department and state.
    department_states: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    #: Enrolled, unrevoked desktops by agent version.
    agent_versions: Mapping[str, int] = field(default_factory=dict)
    #: CPUs of running VMs (backfill VMs included).
    cores_running: int = 0
    #: Backfill leases (``grid_backfill``) by state: offered, starting, running. ``leases``,
    #: ``running`` and ``departments`` count only leases for real demand.
    backfill: Mapping[str, int] = field(default_factory=dict)


#: How long a waker's heartbeat replies carry a wake (Wake-on-LAN): a few heartbeats' worth.
WAKE_DELIVER_S = 180.0

#: The window of "recent" declines, in seconds.
RECENT_S = 3600.0
#: How many of the latest declines the dashboard's counts carry.
RECENT_DECLINES = 20


@dataclass(frozen=True)
class DesktopRecord:
    """One desktop as the operator's view lists it."""

    name: str
    department: str
    state: str  # idle / busy / owner_present / offline / revoked
    platform: str
    agent_version: str
    last_seen: float | None
    cpus: int
    memory_total_mb: int
    memory_free_mb: int
    hw_virt: bool
    hw_virt_held_by: str | None
    policy: str
    vms: tuple[tuple[str, str], ...]  # (VM type, lease state) of its leases
    declines: int  # in the recent window


class Store(ABC):
    #: Calls are short local operations (an embedded database): the web adapter may make them
    #: on its event loop instead of in a worker thread.
    embedded: bool = False

    @abstractmethod
    def close(self) -> None:
        """Release the store's connections."""

    @abstractmethod
    def ping(self) -> None: ...

    @abstractmethod
    def enrol(
        self,
        *,
        name: str,
        department: str,
        generation: int,
        platform: str,
        agent_version: str,
        now: float,
    ) -> tuple[str, bytes]:
        """Record the enrolment; return (desktop id, salt). ``TokenUsedError`` if seen before."""

    @abstractmethod
    def auth(self, desktop_id: str) -> AuthRecord | None: ...

    @abstractmethod
    def salts(self) -> list[tuple[str, bytes]]:
        """(desktop id, salt) of every enrolled desktop that is not revoked."""

    @abstractmethod
    def heartbeat(
        self, desktop_id: str, seq: int, now: float, update_: HeartbeatUpdate, backoff_s: float
    ) -> list[LeaseView]:
        """Apply a heartbeat atomically; return the desktop's current leases.
        ``UnstorableError`` (nothing written) if the database refuses its values."""

    def heartbeats(
        self, items: Sequence[HeartbeatItem], now: float, backoff_s: float
    ) -> list[HeartbeatResult]:
        """Apply several heartbeats in order, each as ``heartbeat`` would; a refusal is that
        item's result, not an exception. A store whose database allows it overrides this to
        use fewer round trips (group commit), and then isolates a heartbeat the database
        refuses (``UnstorableError`` for it alone); another exception fails the whole batch."""
        results: list[HeartbeatResult] = []
        for item in items:
            try:
                leases = self.heartbeat(item.desktop_id, item.seq, now, item.update, backoff_s)
            except _REFUSALS as exc:
                results.append(exc)
            else:
                results.append(leases)
        return results

    @abstractmethod
    def touch(self, desktop_id: str, seq: int, now: float) -> None:
        """Accept ``seq`` for a request that changes nothing else (GET)."""

    @abstractmethod
    def revoke(self, names: Sequence[str], now: float) -> tuple[list[str], list[str], list[str]]:
        """Revoke enrolled desktops: (revoked, already revoked, unknown: no desktop of that
        name ever enrolled). The revocation is kept in a list that re-enrolment never clears;
        only ``unrevoke`` takes a name off it."""

    @abstractmethod
    def unrevoke(self, names: Sequence[str]) -> tuple[list[str], list[str]]:
        """Take desktops off the revocation list: (unrevoked, unchanged). Each may then enrol
        again with its next generation's token; its old credential stays refused."""

    def lead(self) -> bool:
        """Whether this process may run the allocation rounds now. A store that only one
        process uses (embedded: SQLite) always may. A database server's store takes, or keeps,
        the database's one leader lock and answers whether it holds it; it never raises."""
        return True

    @contextlib.contextmanager
    def round(self) -> Iterator[None]:
        """One allocation round: the ``snapshot`` and ``apply`` made inside are one
        transaction, which commits only while this process leads; ``LeadershipLostError``
        (nothing written) when it stopped leading. By default, just the calls."""
        yield

    @abstractmethod
    def snapshot(
        self, now: float, offline_after_s: float
    ) -> tuple[list[DesktopView], list[LeaseView], frozenset[tuple[str, str]]]: ...

    @abstractmethod
    def apply(
        self,
        allocation: Allocation,
        now: float,
        sample: tuple[Mapping[str, int], Mapping[str, int], Mapping[str, int]],
        keep_history_s: float,
        *,
        usage: Mapping[tuple[str, str], float] | None = None,
        wakes: Sequence[Wake] = (),
    ) -> None:
        """Write the round's leases and sample, add ``usage`` (core-seconds by department and
        VM type) to the totals, record the round's ``wakes`` (Wake-on-LAN; one row per
        sleeper, the newest), and drop history older than ``keep_history_s`` and wakes older
        than ``WAKE_DELIVER_S``."""

    @abstractmethod
    def wakes_for(self, desktop_ids: Sequence[str], since: float) -> dict[str, list[str]]:
        """The MAC addresses each of ``desktop_ids`` is asked to wake (wakes since ``since``)."""

    @abstractmethod
    def counts(self, now: float, offline_after_s: float) -> DashboardCounts: ...

    @abstractmethod
    def desktop_records(
        self,
        now: float,
        offline_after_s: float,
        *,
        department: str | None = None,
        limit: int = 500,
        offset: int = 0,
    ) -> list[DesktopRecord]:
        """Enrolled desktops by name (of ``department`` only, if given), a page of them."""

    @abstractmethod
    def recent_declines(self, since: float, limit: int) -> list[DeclineRecord]:
        """Declines since ``since``, newest first, at most ``limit``."""

    @abstractmethod
    def history(
        self, since: float
    ) -> list[tuple[float, dict[str, int], dict[str, int], dict[str, int]]]: ...


class DemandSource(ABC):
    @abstractmethod
    def demand(self) -> Demand:
        """Jobs wanting each VM type now; raises ``OSError`` when the source cannot answer."""


class CatalogueSource(ABC):
    @abstractmethod
    def entries(self) -> list[dict[str, str]]:
        """The catalogue's images (CATALOGUE_SCHEMA items)."""


class VmTokenError(Exception):
    """The VM token source could not give a token (why, without the token)."""


class VmTokenSource(ABC):
    @abstractmethod
    def token(self) -> str:
        """A new HTCondor token for one research VM start (identity, scope and lifetime are the
        source's, not the caller's); ``VmTokenError`` when it cannot give one."""
