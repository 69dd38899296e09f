"""The coordinator's use cases: enrol, heartbeat, catalogue, allocation rounds, metrics.

Framework-free: the web adapter hands it bytes and headers and turns ``ApiError`` into the
documented error replies. Every request is validated with the protocol's schemas
(``cvmc.protocol``) before anything is written.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import jsonschema_rs

from cvmc.coordinator.domain.auth import derive_credential, signature_ok
from cvmc.coordinator.domain.config import Config
from cvmc.coordinator.domain.demand import UNKNOWN_NAME_CHARS, UNKNOWN_NAMES, Demand
from cvmc.coordinator.domain.grid import GridFile
from cvmc.coordinator.domain.health import (
    CANNOT_WORK_REASONS,
    DeclineRecord,
    DemandHealth,
    TypeFacts,
    TypeStatus,
    able_to_hold,
    cannot_work_counts,
    held_by_counts,
    pool_size,
    states_of_able,
    why_not_running,
)
from cvmc.coordinator.domain.leases import (
    LEASE_STATES,
    Allocation,
    DesktopView,
    LeaseView,
    allocate,
    claimed_leases,
    real_leases,
)
from cvmc.coordinator.domain.wake import WAKE_RETRY_S, Wake, client_address, plan_wakes
from cvmc.coordinator.ports import (
    RECENT_S,
    WAKE_DELIVER_S,
    CatalogueSource,
    DashboardCounts,
    DemandSource,
    DesktopRecord,
    HeartbeatItem,
    HeartbeatResult,
    HeartbeatUpdate,
    LeadershipLostError,
    ReplayedError,
    RevokedError,
    Store,
    TokenUsedError,
    UnknownDesktopError,
    UnstorableError,
    VmTokenError,
    VmTokenSource,
)
from cvmc.gridmodel.enrolment import check_enrol_token
from cvmc.gridmodel.wake import parse_mac
from cvmc.protocol import (
    DECLINE_REASONS,
    ENROL_REQUEST_SCHEMA,
    ERROR_CODES,
    HEARTBEAT_SCHEMA,
    SEQ_PATTERN,
    loads_json,
    values,
)
from cvmc.protocol.wake import MAX_WAKE

__all__ = ["ApiError", "Coordinator", "MetricFamily", "MetricKind", "RoundReport"]

log = logging.getLogger("cvmc.coordinator")

_DESKTOP_ID = re.compile(r"\A[A-Za-z0-9._-]{1,64}\Z")
_SEQ = re.compile(SEQ_PATTERN)  # with fullmatch: no trailing newline
_IDLE_SLOT_STATES = ("idle", "stopped")
_CREDENTIAL_CACHE = 200_000
#: Offered leases whose VM token is kept until the desktop starts them (or they go away).
_VM_TOKEN_CACHE = 100_000
#: The one reply to every refused enrolment token (docs/coordinator-api.md).
_INVALID_TOKEN = "the enrolment token is not valid"  # noqa: S105 - a message, not a secret
#: Agent versions ``/metrics`` names one by one (the rest are "other": desktops report them).
_AGENT_VERSIONS = 20
#: Longest demand error kept (the source's message: a schedd's reply may be long).
_DEMAND_ERROR_CHARS = 300
#: The longest gap between two rounds counted as delivered core-seconds, in rounds: a
#: leader that paused (or a new one) does not count time it did not see.
USAGE_GAP_ROUNDS = 3


class ApiError(Exception):
    """A documented error reply (``ERROR_CODES``)."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:  # noqa: ANN401
        super().__init__(message)
        self.code = code
        self.status = ERROR_CODES[code][0]
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.extra}


@dataclass(frozen=True)
class _Schema:
    """A request schema and its compiled validator."""

    schema: dict[str, Any]
    validator: Any  # a jsonschema_rs validator


def _validator(schema: dict[str, Any]) -> _Schema:
    # ``format`` is an assertion here, not an annotation: the schemas' ``date-time`` holds.
    return _Schema(schema, jsonschema_rs.validator_for(dict(schema), validate_formats=True))


def _check(schema: _Schema, payload: object, what: str) -> Any:  # noqa: ANN401 - JSON
    """``payload`` with its integers as ``int`` (``5.0`` is an integer for JSON Schema), or
    ``ApiError`` (``malformed``, naming the JSON path) unless it keeps the wire's value rules
    (``cvmc.protocol.values``: no NUL, no lone surrogate, no infinity, no fraction for an
    integer) and then the schema (which bounds every integer to what the store holds)."""
    why = values.problem(schema.schema, payload)
    if why is not None:
        raise ApiError("malformed", f"{what} {why}"[:500])
    error = next(iter(schema.validator.iter_errors(payload)), None)
    if error is not None:
        where = "/".join(str(p) for p in error.instance_path) or "(body)"
        raise ApiError("malformed", f"{what} {where}: {error.message}"[:500])
    return values.integers(schema.schema, payload)


def _json(body: bytes, what: str) -> object:
    try:
        return loads_json(body)
    except ValueError as exc:
        raise ApiError("malformed", f"{what}: the body is not JSON ({exc})") from None


def _iso(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Metrics:
    requests: Counter[tuple[str, int]] = field(default_factory=Counter)
    rounds: int = 0
    round_seconds: float = 0.0
    demand_errors: int = 0
    revoked: Counter[str] = field(default_factory=Counter)
    granted: int = 0
    vm_tokens: int = 0
    vm_token_failures: int = 0
    declined: Counter[str] = field(default_factory=Counter)  # by reason, accepted heartbeats
    #: Leased VMs that run a job (the schedd's running jobs name them), by VM type, last round.
    with_jobs: dict[str, int] = field(default_factory=dict)
    #: Wake-on-LAN: sleeping desktops the rounds asked to wake; wakes sent in replies here.
    wakes: int = 0
    wakes_sent: int = 0


MetricKind = Literal["gauge", "counter"]


@dataclass(frozen=True)
class MetricFamily:
    """One family of ``/metrics``, as plain values: its name (a counter's ends in ``_total``),
    kind, help text, label names and samples (label values, value)."""

    name: str
    kind: MetricKind
    help: str
    labels: tuple[str, ...]
    samples: tuple[tuple[tuple[str, ...], float], ...]


@dataclass(frozen=True)
class RoundReport:
    """What a coordinator that runs the allocation rounds elsewhere (a child process) tells
    the one that serves: the demand it saw, the dashboard's counts and its cumulative round
    metrics."""

    demand: Demand
    demand_errors: int
    counts: DashboardCounts
    rounds: int
    round_seconds: float
    granted: int
    revoked: dict[str, int]
    leader: bool = True
    with_jobs: dict[str, int] = field(default_factory=dict)
    demand_health: DemandHealth = field(default_factory=DemandHealth)
    wakes: int = 0


class Coordinator:
    def __init__(
        self,
        *,
        config: Config,
        grid: GridFile,
        store: Store,
        demand_source: DemandSource,
        catalogue: CatalogueSource,
        enrol_key: str,
        vm_tokens: VmTokenSource | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.grid = grid
        self.store = store
        self.demand_source = demand_source
        self.catalogue_source = catalogue
        self.enrol_key = enrol_key
        self.vm_tokens = vm_tokens
        # Each offered lease's VM token, minted once and repeated in every reply until the
        # desktop reports the lease started (replies are level-triggered).
        self._lease_tokens: dict[str, str] = {}
        self._lease_tokens_lock = threading.Lock()
        self._key = enrol_key.encode()
        self.clock = clock
        self.metrics = Metrics()
        self.demand = Demand()
        self.demand_at = float("-inf")
        #: The last demand error (bounded) and when it happened.
        self.demand_error: str | None = None
        self.demand_error_at: float | None = None
        #: When this process's last allocation round ran (the core-seconds' clock).
        self._round_at: float | None = None
        self.counts = DashboardCounts({}, {}, {})
        #: Whether this process runs the allocation rounds (the store's leader lock; always,
        #: on SQLite). The web process learns it from its rounds process's reports.
        self.leader = False
        self._counts_at = float("-inf")
        self._round_lock = threading.Lock()
        self._enrol_schema = _validator(ENROL_REQUEST_SCHEMA)
        self._heartbeat_schema = _validator(HEARTBEAT_SCHEMA)
        self._types = list(grid.vm_types)
        #: Wake-on-LAN: when each sleeping desktop was last asked to be woken (this leader's).
        self._asked: dict[str, float] = {}
        #: grid_backfill's VM type (None: off), and its most leases on one desktop.
        self._backfill = grid.vm_type(grid.backfill.vm_type) if grid.backfill.enabled else None
        # Credentials of desktops that authenticated before (a desktop id's salt never changes;
        # revocation and sequence numbers are checked by the conditional write every time).
        self._credentials: dict[str, bytes] = {}

    # -- enrolment ------------------------------------------------------------------------

    def enrol(self, body: bytes) -> dict[str, Any]:
        """Enrol a desktop with its one-time token. Every refusal of the token is the same
        ``401 invalid_token`` with the same message, whatever the reason (a name not in the
        grid, a bad MAC, expired, issued before the restore watermark, not the next
        generation, spent, revoked), so that replies tell nothing about which names exist;
        the reason goes to the log only."""
        payload = _json(body, "enrol")
        payload = _check(self._enrol_schema, payload, "enrol")
        assert isinstance(payload, dict)
        now = self.clock()
        desktop = self.grid.desktop(payload["desktop"])
        try:
            # The MAC is checked for every name, known or not, so that an unknown name costs
            # the same work as a known one.
            claims = check_enrol_token(
                self.enrol_key,
                payload["token"],
                payload["desktop"],
                now=now,
                not_before=self.grid.enrol_tokens_not_before,
            )
            if desktop is None:
                raise ValueError("not a desktop of this grid")
            generation = claims.generation
            desktop_id, salt = self.store.enrol(
                name=desktop.name,
                department=desktop.department,
                generation=generation,
                platform=payload["platform"],
                agent_version=payload["agent_version"],
                now=now,
            )
        except (ValueError, TokenUsedError) as exc:
            log.warning("enrolment of %r refused: %s", payload["desktop"], exc)
            raise ApiError("invalid_token", _INVALID_TOKEN) from None
        assert desktop is not None
        log.info("enrolled %s as %s (generation %d)", desktop.name, desktop_id, generation)
        credential = derive_credential(self._key, desktop_id, salt)
        return {
            "desktop_id": desktop_id,
            "credential": base64.b64encode(credential).decode(),
            "heartbeat_s": self.config.leases.heartbeat_s,
        }

    # -- authentication -------------------------------------------------------------------

    def authenticate(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[str, int]:
        """(desktop id, sequence) of a correctly signed request; ``ApiError`` otherwise."""
        desktop_id = headers.get("x-cvmc-desktop", "")
        raw_seq = headers.get("x-cvmc-seq", "")
        if not _DESKTOP_ID.match(desktop_id):
            raise ApiError("unknown_desktop", "X-CVMC-Desktop is missing or not a desktop id")
        if not _SEQ.fullmatch(raw_seq):
            raise ApiError("malformed", "X-CVMC-Seq is missing or not a decimal integer")
        seq = int(raw_seq)
        authorization = headers.get("authorization", "")

        def verify(credential: bytes) -> None:
            if not signature_ok(
                credential,
                authorization,
                method=method,
                path=path,
                desktop_id=desktop_id,
                seq=seq,
                body=body,
            ):
                raise ApiError("bad_signature", "the Authorization HMAC does not match the request")

        cached = self._credentials.get(desktop_id)
        if cached is not None:
            verify(cached)
            return desktop_id, seq
        record = self.store.auth(desktop_id)
        if record is None:
            raise ApiError("unknown_desktop", f"{desktop_id} is not enrolled; enrol again")
        credential = derive_credential(self._key, record.id, record.salt)
        verify(credential)
        if record.revoked:
            raise ApiError("revoked", f"{desktop_id} was revoked")
        if seq <= record.last_seq:
            raise ApiError(
                "replayed_sequence",
                f"X-CVMC-Seq {seq} is not above {record.last_seq}",
                last_seq=record.last_seq,
            )
        if len(self._credentials) >= _CREDENTIAL_CACHE:
            self._credentials.clear()
        self._credentials[desktop_id] = credential
        return desktop_id, seq

    def load_credentials(self) -> int:
        """Derive every enrolled desktop's credential once, at start (one query), so that a
        desktop's first request after a restart needs no database lookup of its own: after a
        restart all desktops come back within a heartbeat period. Revocation and sequence
        numbers are still enforced by every request's conditional write. Returns the count."""
        salts = self.store.salts()[:_CREDENTIAL_CACHE]
        for desktop_id, salt in salts:
            self._credentials[desktop_id] = derive_credential(self._key, desktop_id, salt)
        return len(salts)

    def knows(self, headers: Mapping[str, str]) -> bool:
        """Whether the request's desktop authenticated before (its check needs no database)."""
        return headers.get("x-cvmc-desktop", "") in self._credentials

    @contextlib.contextmanager
    def _accepting(self, desktop_id: str, seq: int) -> Iterator[None]:
        """The store's refusals of a signed request, as the documented errors."""
        try:
            yield
        except ReplayedError as exc:
            raise ApiError(
                "replayed_sequence", f"X-CVMC-Seq {seq} was overtaken", last_seq=exc.last_seq
            ) from None
        except RevokedError:
            raise ApiError("revoked", f"{desktop_id} was revoked") from None
        except UnstorableError as exc:
            raise ApiError("malformed", f"heartbeat: {exc}"[:500]) from None
        except UnknownDesktopError:
            self._credentials.pop(desktop_id, None)
            raise ApiError(
                "unknown_desktop", f"{desktop_id} is not enrolled; enrol again"
            ) from None

    # -- heartbeat ------------------------------------------------------------------------

    def heartbeat(
        self, headers: Mapping[str, str], path: str, body: bytes, address: str | None = None
    ) -> dict[str, Any]:
        """Authenticate, validate and apply one heartbeat; the reply body. ``address``: the
        client address the request came from (the web adapter's), kept for Wake-on-LAN."""
        item = self.accept_heartbeat(headers, path, body, address)
        now = self.clock()
        with self._accepting(item.desktop_id, item.seq):
            current = self.store.heartbeat(
                item.desktop_id, item.seq, now, item.update, self.config.leases.decline_backoff_s
            )
        self._count_declines(item.update)
        wake = self.pending_wakes([item.desktop_id], now).get(item.desktop_id, [])
        return self.heartbeat_reply(current, now, wake)

    def store_heartbeats(
        self, items: Sequence[HeartbeatItem], now: float
    ) -> tuple[list[HeartbeatResult], dict[str, list[str]]]:
        """A batch of heartbeats written at once (``Store.heartbeats``), and the wakes their
        desktops are asked to send (one more query for the batch, with Wake-on-LAN on)."""
        results = self.store.heartbeats(items, now, self.config.leases.decline_backoff_s)
        return results, self.pending_wakes([item.desktop_id for item in items], now)

    def pending_wakes(self, desktop_ids: Sequence[str], now: float) -> dict[str, list[str]]:
        """The MAC addresses each desktop is asked to wake (``grid_wake_on_lan``; {} when off).
        A failure to read them costs the wake, never the heartbeat."""
        if not self.grid.wake_on_lan.enabled:
            return {}
        try:
            found = self.store.wakes_for(desktop_ids, now - WAKE_DELIVER_S)
        except Exception as exc:
            log.warning("wake-on-lan: wakes not read: %s", exc)
            return {}
        self.metrics.wakes_sent += sum(len(macs[:MAX_WAKE]) for macs in found.values())
        return {desk: macs[:MAX_WAKE] for desk, macs in found.items()}

    def _count_declines(self, update: HeartbeatUpdate) -> None:
        for _, reason in update.declined:
            self.metrics.declined[reason] += 1

    def accept_heartbeat(
        self, headers: Mapping[str, str], path: str, body: bytes, address: str | None = None
    ) -> HeartbeatItem:
        """The checks before any write: signature (and, the first time, the database's
        revocation and sequence), JSON, schema. ``ApiError`` if one fails."""
        desktop_id, seq = self.authenticate("POST", path, headers, body)
        payload = _json(body, "heartbeat")
        payload = _check(self._heartbeat_schema, payload, "heartbeat")
        assert isinstance(payload, dict)
        return HeartbeatItem(desktop_id, seq, _update(payload, client_address(address)))

    def heartbeat_result(
        self,
        item: HeartbeatItem,
        result: HeartbeatResult,
        now: float,
        wake: Sequence[str] = (),
    ) -> dict[str, Any]:
        """The reply to a heartbeat that went through ``Store.heartbeats``; its refusal as
        the documented error."""
        if isinstance(result, list):
            self._count_declines(item.update)
            return self.heartbeat_reply(result, now, wake)
        with self._accepting(item.desktop_id, item.seq):
            raise result
        raise AssertionError("unreachable")  # pragma: no cover - _accepting always raises

    def heartbeat_reply(
        self, current: list[LeaseView], now: float, wake: Sequence[str] = ()
    ) -> dict[str, Any]:
        leases = [self._lease_json(lease, now) for lease in current]
        reply: dict[str, Any] = {
            "server_time": _iso(now),
            "heartbeat_s": self.config.leases.heartbeat_s,
            "leases": [lease for lease in leases if lease is not None],
        }
        if wake:
            reply["wake"] = list(wake[:MAX_WAKE])
        return reply

    def _lease_json(self, lease: LeaseView, now: float) -> dict[str, Any] | None:
        """The lease as the reply lists it; ``None`` leaves out an offered lease whose VM
        token could not be minted (the desktop cannot start it without one; the next reply
        tries again, and the lease lapses at ``start_by`` as any unstarted lease does)."""
        ttl = lease.start_by - now if lease.state == "offered" else self.config.leases.ttl_s
        item: dict[str, Any] = {
            "lease_id": lease.id,
            "vm_name": lease.vm_name,
            "cpus": lease.cpus,
            "memory_mb": lease.memory_mb,
            "ttl_s": round(min(max(ttl, 0.001), 86400.0), 3),
        }
        if lease.backfill:
            item["backfill"] = True  # the agent powers it off at once when it is revoked
        if self.vm_tokens is not None:
            if lease.state != "offered":
                with self._lease_tokens_lock:
                    self._lease_tokens.pop(lease.id, None)
                return item
            token = self._lease_token(lease.id)
            if token is None:
                return None
            item["condor_token"] = token
        return item

    def _lease_token(self, lease_id: str) -> str | None:
        """The VM token of an offered lease: the one minted before, or a new one."""
        assert self.vm_tokens is not None
        with self._lease_tokens_lock:
            token = self._lease_tokens.get(lease_id)
        if token is not None:
            return token
        try:
            token = self.vm_tokens.token()
        except VmTokenError as exc:
            self.metrics.vm_token_failures += 1
            log.error("no HTCondor token for lease %s, left out of this reply: %s", lease_id, exc)
            return None
        self.metrics.vm_tokens += 1
        with self._lease_tokens_lock:
            if len(self._lease_tokens) >= _VM_TOKEN_CACHE:
                # Leases that lapsed unstarted never come back to be removed: drop the oldest.
                for old in list(self._lease_tokens)[: _VM_TOKEN_CACHE // 2]:
                    del self._lease_tokens[old]
            return self._lease_tokens.setdefault(lease_id, token)

    # -- catalogue ------------------------------------------------------------------------

    def catalogue(self, headers: Mapping[str, str], path: str) -> dict[str, Any]:
        desktop_id, seq = self.authenticate("GET", path, headers, b"")
        with self._accepting(desktop_id, seq):
            self.store.touch(desktop_id, seq, self.clock())
        return {"images": self.catalogue_source.entries()}

    # -- allocation rounds ----------------------------------------------------------------

    def _claimed_slots(self) -> set[tuple[str, int]]:
        """(desktop, slot) of each VM that runs a job: the running jobs' VM addresses, mapped
        through the grid's address plan (addresses of no registered slot are left out)."""
        found = (self.grid.vm_slot(address) for address in self.demand.claimed)
        return {slot for slot in found if slot is not None}

    def refresh_demand(self, now: float) -> None:
        if now - self.demand_at < self.config.demand.poll_s:
            return
        try:
            self.demand = self.demand_source.demand()
        except (OSError, RuntimeError, ValueError) as exc:
            self.metrics.demand_errors += 1
            self.demand_error = (str(exc) or type(exc).__name__)[:_DEMAND_ERROR_CHARS]
            self.demand_error_at = now
            log.warning("demand: %s (keeping the last known demand)", exc)
            return
        self.demand_at = now

    def demand_health(self) -> DemandHealth:
        """When demand was last read, and the last error reading it."""
        read = self.demand_at if self.demand_at != float("-inf") else None
        return DemandHealth(read, self.demand_error, self.demand_error_at)

    def allocation_round(self) -> Allocation | None:
        """Refresh demand, allocate, write the result, refresh the dashboard's counts; if
        this process leads (``Store.lead``: always, on an embedded database). A process that
        does not lead only refreshes the dashboard's counts, and returns ``None``."""
        with self._round_lock:
            now = self.clock()
            if not self.store.lead():
                self._round_at = None
                self._follow(now)
                return None
            if not self.leader:
                log.info("this process runs the allocation rounds")
            self.leader = True
            try:
                return self._lead(now)
            except LeadershipLostError as exc:
                self._round_at = None
                self._follow(now, str(exc))
                return None

    def _follow(self, now: float, why: str = "another process holds the leader lock") -> None:
        """Not leading: the dashboard's counts, read from the database once per round's time
        (a follower tries to lead more often than that)."""
        if self.leader:
            log.warning("this process stopped running the allocation rounds: %s", why)
            self._counts_at = float("-inf")
        self.leader = False
        if now - self._counts_at >= self.config.leases.allocate_s:
            self.counts = self.store.counts(now, self.config.leases.offline_after_s)
            self._counts_at = now

    def _lead(self, now: float) -> Allocation:
        started = time.perf_counter()
        self.refresh_demand(now)
        with self.store.round():
            desktops, leases, blocked = self.store.snapshot(now, self.config.leases.offline_after_s)
            claimed = claimed_leases(leases, desktops, self._claimed_slots())
            result = allocate(
                demand=self.demand.by_type,
                types=self._types,
                desktops=desktops,
                leases=leases,
                blocked=blocked,
                now=now,
                ttl_s=self.config.leases.ttl_s,
                max_vms_per_desktop=self.grid.max_vms_per_desktop,
                new_id=lambda: "l-" + secrets.token_hex(8),
                require_hw_virt=self.grid.require_hw_virtualization,
                claimed=claimed,
                backfill=self._backfill,
                backfill_max=self.grid.backfill.max_per_desktop,
            )
            kept = result.kept(leases)
            self.metrics.with_jobs = dict(
                Counter(lease.vm_name for lease in kept if lease.id in claimed)
            )
            real = real_leases(kept)  # supply: backfill leases are not
            supply = Counter(lease.vm_name for lease in real)
            running = Counter(lease.vm_name for lease in real if lease.state == "running")
            demand = {t.name: self.demand.by_type.get(t.name, 0) for t in self._types}
            self.store.apply(
                result,
                now,
                (demand, {t.name: supply[t.name] for t in self._types}, dict(running)),
                self.config.leases.history_s,
                usage=self._usage(kept, desktops, now),
                wakes=self._wakes(desktops, demand, supply, now),
            )
        self.counts = self.store.counts(now, self.config.leases.offline_after_s)
        self.metrics.rounds += 1
        self.metrics.round_seconds = time.perf_counter() - started
        self.metrics.granted += len(result.new)
        for reason in result.revoked.values():
            self.metrics.revoked[reason] += 1
        if result.new or result.revoked:
            log.info(
                "allocation: %d new lease(s), %d revoked", len(result.new), len(result.revoked)
            )
        return result

    def _wakes(
        self,
        desktops: list[DesktopView],
        demand: Mapping[str, int],
        supply: Mapping[str, int],
        now: float,
    ) -> list[Wake]:
        """Wake-on-LAN (``domain.wake``): sleeping desktops to wake when the round left demand
        unmet, each with an awake desktop on its subnet to send the magic packet."""
        settings = self.grid.wake_on_lan
        if not settings.enabled:
            return []
        unmet = sum(max(count - supply.get(name, 0), 0) for name, count in demand.items())
        wakes = plan_wakes(
            desktops,
            unmet=unmet,
            settings=settings,
            max_vms_per_desktop=self.grid.max_vms_per_desktop,
            asked=self._asked,
            now=now,
            require_hw_virt=self.grid.require_hw_virtualization,
        )
        for wake in wakes:
            self._asked[wake.sleeper_id] = now
        for sleeper, at in list(self._asked.items()):
            if now - at >= WAKE_RETRY_S:
                del self._asked[sleeper]
        self.metrics.wakes += len(wakes)
        if wakes:
            log.info("wake-on-lan: %d sleeping desktop(s) asked to wake", len(wakes))
        return wakes

    def _usage(
        self, kept: list[LeaseView], desktops: list[DesktopView], now: float
    ) -> dict[tuple[str, str], float]:
        """Core-seconds the running VMs delivered since the last round, by (department, VM
        type): each running lease's CPUs times the time since then, which counts at most
        ``USAGE_GAP_ROUNDS`` rounds' time (none in this process's first round as leader)."""
        last, self._round_at = self._round_at, now
        if last is None or now <= last:
            return {}
        span = min(now - last, USAGE_GAP_ROUNDS * self.config.leases.allocate_s)
        departments = {desk.id: desk.department for desk in desktops}
        delivered: dict[tuple[str, str], float] = {}
        for lease in kept:
            if lease.state == "running" and lease.desktop_id in departments:
                key = (departments[lease.desktop_id], lease.vm_name)
                delivered[key] = delivered.get(key, 0.0) + lease.cpus * span
        return delivered

    def round_report(self) -> RoundReport:
        """This coordinator's round state, for the one that serves (``absorb``)."""
        return RoundReport(
            demand=self.demand,
            demand_errors=self.metrics.demand_errors,
            counts=self.counts,
            rounds=self.metrics.rounds,
            round_seconds=self.metrics.round_seconds,
            granted=self.metrics.granted,
            revoked=dict(self.metrics.revoked),
            leader=self.leader,
            with_jobs=dict(self.metrics.with_jobs),
            demand_health=self.demand_health(),
            wakes=self.metrics.wakes,
        )

    def absorb(self, report: RoundReport) -> None:
        """Take the round state of the coordinator that runs the rounds (its counters are
        cumulative: they replace ours)."""
        self.demand = report.demand
        self.counts = report.counts
        self.metrics.demand_errors = report.demand_errors
        self.metrics.rounds = report.rounds
        self.metrics.round_seconds = report.round_seconds
        self.metrics.granted = report.granted
        self.metrics.revoked = Counter(report.revoked)
        self.metrics.with_jobs = dict(report.with_jobs)
        self.metrics.wakes = report.wakes
        self.leader = report.leader
        health = report.demand_health
        self.demand_at = health.read_at if health.read_at is not None else float("-inf")
        self.demand_error = health.error
        self.demand_error_at = health.error_at

    # -- the operator's view --------------------------------------------------------------

    def _smallest_mb(self) -> int:
        return min((t.memory_mb for t in self._types), default=0)

    def cannot_work(self) -> dict[str, int]:
        """Enrolled desktops that can never take work, by reason (``domain.health``)."""
        return cannot_work_counts(
            self.counts.hardware,
            self._smallest_mb(),
            require_hw_virt=self.grid.require_hw_virtualization,
        )

    def desktop_states(self) -> dict[str, int]:
        """Desktops by state, those that can never take work counted apart (``cannot_work``)
        instead of in their state: the dashboard's bars and the summary."""
        return states_of_able(
            self.counts.hardware,
            self.counts.desktops,
            self._smallest_mb(),
            require_hw_virt=self.grid.require_hw_virtualization,
        )

    def type_statuses(self) -> list[TypeStatus]:
        """Each VM type's status, and why it runs fewer VMs than jobs want (if it does)."""
        counts = self.counts
        health = self.demand_health()
        states = self.desktop_states()  # "idle" then counts only desktops that can work
        now = self.clock()
        latest: dict[str, DeclineRecord] = {}
        for record in counts.recent_declines:  # newest first
            latest.setdefault(record.vm_name, record)
        statuses = []
        for vm in self._types:
            facts = TypeFacts(
                name=vm.name,
                cpus=vm.cpus,
                memory_mb=vm.memory_mb,
                demand=self.demand.by_type.get(vm.name, 0),
                unfit=self.demand.unfit.get(vm.name, 0),
                leases=counts.leases.get(vm.name, 0),
                running=counts.running.get(vm.name, 0),
                able=able_to_hold(
                    counts.hardware,
                    vm.memory_mb,
                    require_hw_virt=self.grid.require_hw_virtualization,
                ),
                declined={
                    reason: count
                    for (name, reason), count in counts.declines.items()
                    if name == vm.name
                },
                detail=latest[vm.name].detail if vm.name in latest else "",
            )
            statuses.append(why_not_running(facts, health, states, now))
        return statuses

    def never_enrolled(self) -> int:
        """Desktops of the grid that have no enrolled (or revoked) desktop row."""
        enrolled = sum(self.counts.desktops.values())
        return max(len(self.grid.desktops) - enrolled, 0)

    def admin_summary(self) -> dict[str, Any]:
        """Everything the dashboard shows, as JSON (``GET /admin/v1/summary``)."""
        counts = self.counts
        size = pool_size(counts.hardware)
        health = self.demand_health()
        declines: dict[str, dict[str, int]] = {}
        for (name, reason), count in sorted(counts.declines.items()):
            declines.setdefault(name, {})[reason] = count
        return {
            "generated_at": _iso(self.clock()),
            "pool": {
                "desktops": size.desktops,
                "cores": size.cores,
                "memory_mb": size.memory_mb,
                "never_enrolled": self.never_enrolled(),
                "cores_running": counts.cores_running,
                "states": self.desktop_states(),
                "agent_versions": dict(counts.agent_versions),
            },
            "backfill": {
                "vm_type": self.grid.backfill.vm_type or None,
                "max_per_desktop": self.grid.backfill.max_per_desktop,
                "leases": {state: counts.backfill.get(state, 0) for state in LEASE_STATES},
            },
            "cannot_work": self.cannot_work(),
            "hw_virt_held_by": held_by_counts(counts.hardware),
            "demand": {
                "last_read": _iso(health.read_at) if health.read_at is not None else None,
                "failing": health.failing,
                "last_error": health.error,
                "last_error_at": _iso(health.error_at) if health.error_at is not None else None,
                "unknown_vm_names": dict(self.demand.unknown_names),
                "unknown_jobs": self.demand.unknown,
                "unnamed_jobs": self.demand.unnamed,
            },
            "vm_types": [
                {
                    "name": status.name,
                    "demand": self.demand.by_type.get(status.name, 0),
                    "unfit": self.demand.unfit.get(status.name, 0),
                    "leases": counts.leases.get(status.name, 0),
                    "running": counts.running.get(status.name, 0),
                    "declined_recently": declines.get(status.name, {}),
                    "status": status.status,
                    "why": status.why,
                }
                for status in self.type_statuses()
            ],
            "departments": self.departments(),
            "recent_declines": [_decline_json(r) for r in counts.recent_declines],
        }

    def departments(self) -> list[dict[str, Any]]:
        """Each department's desktops by state, leases, and core-hours by VM type."""
        counts = self.counts
        names = sorted(set(counts.department_states) | {d for d, _ in counts.core_seconds})
        rows = []
        for name in names:
            hours = {
                vm: round(seconds / 3600, 3)
                for (dept, vm), seconds in sorted(counts.core_seconds.items())
                if dept == name
            }
            rows.append(
                {
                    "department": name,
                    "states": dict(counts.department_states.get(name, {})),
                    "leases": counts.departments.get(name, 0),
                    "core_hours": hours,
                }
            )
        return rows

    def admin_desktops(
        self, *, department: str | None, limit: int, offset: int
    ) -> list[dict[str, Any]]:
        """A page of enrolled desktops (``GET /admin/v1/desktops``)."""
        records = self.store.desktop_records(
            self.clock(),
            self.config.leases.offline_after_s,
            department=department,
            limit=limit,
            offset=offset,
        )
        return [_desktop_json(record) for record in records]

    def admin_declines(self, limit: int) -> list[dict[str, Any]]:
        """The latest declines of the recent window (``GET /admin/v1/declines``)."""
        records = self.store.recent_declines(self.clock() - RECENT_S, limit)
        return [_decline_json(record) for record in records]

    # -- metrics --------------------------------------------------------------------------

    def metrics_snapshot(self) -> list[MetricFamily]:
        """The metric families of ``/metrics`` as plain values (a web adapter exposes them in
        the Prometheus format: ``cvmc.coordinator.adapters.prometheus``)."""
        families: list[MetricFamily] = []

        def family(
            name: str,
            kind: MetricKind,
            help_: str,
            samples: list[tuple[tuple[str, ...], float]],
            labels: tuple[str, ...] = (),
        ) -> None:
            families.append(MetricFamily(name, kind, help_, labels, tuple(samples)))

        names = [t.name for t in self._types]
        family(
            "cvmc_demand_jobs",
            "gauge",
            "Jobs wanting each VM type (idle, plus running with count_running_jobs).",
            [((n,), self.demand.by_type.get(n, 0)) for n in names],
            ("vm_name",),
        )
        family(
            "cvmc_demand_unfit_jobs",
            "gauge",
            "Jobs naming each VM type that one VM of it cannot hold (CPUs, memory, disk, GPUs); "
            "they start no VM.",
            [((n,), self.demand.unfit.get(n, 0)) for n in names],
            ("vm_name",),
        )
        family(
            "cvmc_leases",
            "gauge",
            "Current leases (offered, starting and running) by VM type.",
            [((n,), self.counts.leases.get(n, 0)) for n in names],
            ("vm_name",),
        )
        family(
            "cvmc_backfill_leases",
            "gauge",
            "Backfill leases (grid_backfill) by state: offered, starting, running. They run "
            "when no job wants a desktop; real demand preempts them. Not in cvmc_leases.",
            [((st,), self.counts.backfill.get(st, 0)) for st in LEASE_STATES],
            ("state",),
        )
        family(
            "cvmc_vms_running",
            "gauge",
            "VMs the desktops report running, by VM type.",
            [((n,), self.counts.running.get(n, 0)) for n in names],
            ("vm_name",),
        )
        family(
            "cvmc_vms_with_jobs",
            "gauge",
            "Leased VMs that run a job, by VM type: the running jobs' VMs (their startds' "
            "tunnel addresses), as the last allocation round saw them. The trim revokes VMs "
            "without a job first.",
            [((n,), self.metrics.with_jobs.get(n, 0)) for n in names],
            ("vm_name",),
        )
        family(
            "cvmc_desktops",
            "gauge",
            "Desktops by state.",
            [
                ((s,), self.counts.desktops.get(s, 0))
                for s in ("idle", "busy", "owner_present", "offline", "revoked")
            ],
            ("state",),
        )
        family(
            "cvmc_unnamed_jobs",
            "gauge",
            "Jobs without vm_name seen in the last demand poll.",
            [((), self.demand.unnamed)],
        )
        family(
            "cvmc_http_requests_total",
            "counter",
            "HTTP requests by route and status.",
            [
                ((route, str(status)), count)
                for (route, status), count in sorted(self.metrics.requests.items())
            ],
            ("route", "status"),
        )
        family(
            "cvmc_leases_granted_total", "counter", "Leases granted.", [((), self.metrics.granted)]
        )
        family(
            "cvmc_wakes_requested_total",
            "counter",
            "Sleeping desktops the allocation rounds asked an awake neighbour to wake "
            "(grid_wake_on_lan).",
            [((), self.metrics.wakes)],
        )
        family(
            "cvmc_wakes_sent_total",
            "counter",
            "Wake requests this process put in heartbeat replies (a wake rides a few replies).",
            [((), self.metrics.wakes_sent)],
        )
        family(
            "cvmc_leases_revoked_total",
            "counter",
            "Leases revoked, by reason.",
            [((r,), c) for r, c in sorted(self.metrics.revoked.items())],
            ("reason",),
        )
        family(
            "cvmc_leases_declined_total",
            "counter",
            "Leases the desktops declined, by reason (heartbeats this process accepted).",
            [((r,), self.metrics.declined[r]) for r in DECLINE_REASONS],
            ("reason",),
        )
        family(
            "cvmc_vm_tokens_minted_total",
            "counter",
            "HTCondor tokens minted for research VM starts (one per offered lease).",
            [((), self.metrics.vm_tokens)],
        )
        family(
            "cvmc_vm_token_failures_total",
            "counter",
            "Offered leases left out of a reply because no HTCondor token could be minted.",
            [((), self.metrics.vm_token_failures)],
        )
        family(
            "cvmc_allocation_rounds_total",
            "counter",
            "Allocation rounds.",
            [((), self.metrics.rounds)],
        )
        family(
            "cvmc_allocation_round_seconds",
            "gauge",
            "Duration of the last allocation round.",
            [((), self.metrics.round_seconds)],
        )
        family(
            "cvmc_rounds_leader",
            "gauge",
            "1 if this instance's process runs the allocation rounds (holds the leader lock), "
            "else 0.",
            [((), 1 if self.leader else 0)],
        )
        family(
            "cvmc_demand_errors_total",
            "counter",
            "Demand polls that failed.",
            [((), self.metrics.demand_errors)],
        )
        self._operator_families(family, names)
        return families

    def _operator_families(self, family: Callable[..., None], names: list[str]) -> None:
        """The operator's view in ``/metrics``: pool size, desktops that can never work,
        recent declines, unknown VM type names, demand health and core-seconds delivered."""
        counts = self.counts
        health = self.demand_health()
        size = pool_size(counts.hardware)
        family(
            "cvmc_demand_last_read_timestamp_seconds",
            "gauge",
            "When the job queue was last read (Unix time; 0: never since the start).",
            [((), health.read_at or 0.0)],
        )
        family(
            "cvmc_demand_failing",
            "gauge",
            "1 if the last read of the job queue failed (demand is the last known), else 0.",
            [((), 1 if health.failing else 0)],
        )
        family(
            "cvmc_demand_unknown_jobs",
            "gauge",
            "Jobs naming a vm_name that is no VM type of the grid, by that name (at most "
            f"{UNKNOWN_NAMES} names, each cut to {UNKNOWN_NAME_CHARS} characters); such a job "
            "starts no VM.",
            [((n,), c) for n, c in sorted(self.demand.unknown_names.items())],
            ("vm_name",),
        )
        cannot = self.cannot_work()
        family(
            "cvmc_desktops_cannot_work",
            "gauge",
            "Enrolled desktops whose hardware can never take work, by reason.",
            [((r,), cannot[r]) for r in CANNOT_WORK_REASONS],
            ("reason",),
        )
        family(
            "cvmc_desktops_never_enrolled",
            "gauge",
            "Desktops of the grid that never enrolled.",
            [((), self.never_enrolled())],
        )
        family(
            "cvmc_pool_cores",
            "gauge",
            "CPUs of the enrolled, unrevoked desktops.",
            [((), size.cores)],
        )
        family(
            "cvmc_pool_memory_bytes",
            "gauge",
            "Memory of the enrolled, unrevoked desktops.",
            [((), size.memory_mb * 1024 * 1024)],
        )
        family(
            "cvmc_cores_running",
            "gauge",
            "CPUs of the running research VMs.",
            [((), counts.cores_running)],
        )
        family(
            "cvmc_declines_recent",
            "gauge",
            f"Leases declined in the last {RECENT_S / 60:.0f} minutes, by VM type and reason.",
            [((n, r), counts.declines.get((n, r), 0)) for n in names for r in DECLINE_REASONS],
            ("vm_name", "reason"),
        )
        family(
            "cvmc_core_seconds_total",
            "counter",
            "Core-seconds the running research VMs delivered, by department and VM type.",
            [((d, n), seconds) for (d, n), seconds in sorted(counts.core_seconds.items())],
            ("department", "vm_name"),
        )
        versions = sorted(counts.agent_versions.items(), key=lambda item: (-item[1], item[0]))
        shown = versions[:_AGENT_VERSIONS]
        other = sum(count for _, count in versions[_AGENT_VERSIONS:])
        family(
            "cvmc_desktops_agent_version",
            "gauge",
            f"Enrolled, unrevoked desktops by agent version (the {_AGENT_VERSIONS} commonest; "
            'the rest as "other").',
            [((v,), c) for v, c in shown] + ([(("other",), other)] if other else []),
            ("version",),
        )


def _decline_json(record: DeclineRecord) -> dict[str, Any]:
    return {
        "at": _iso(record.at),
        "desktop": record.desktop,
        "department": record.department,
        "vm_name": record.vm_name,
        "reason": record.reason,
        "detail": record.detail,
    }


def _desktop_json(record: DesktopRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "department": record.department,
        "state": record.state,
        "platform": record.platform,
        "agent_version": record.agent_version,
        "last_heartbeat": _iso(record.last_seen) if record.last_seen is not None else None,
        "cpus": record.cpus,
        "memory_total_mb": record.memory_total_mb,
        "memory_free_mb": record.memory_free_mb,
        "hw_virt": record.hw_virt,
        "hw_virt_held_by": record.hw_virt_held_by,
        "policy": record.policy,
        "vms": [{"vm_name": name, "state": state} for name, state in record.vms],
        "recent_declines": record.declines,
    }


def _update(payload: Mapping[str, Any], address: str | None = None) -> HeartbeatUpdate:
    state = payload["state"]
    resources = payload["resources"]
    slots = payload["slots"]
    busy = [slot for slot in slots if slot["state"] not in _IDLE_SLOT_STATES]
    return HeartbeatUpdate(
        agent_version=payload["agent_version"],
        users=state["users"],
        may_start=state["may_start"],
        may_run=state["may_run"],
        hw_virt=resources["hw_virt"],
        cpus=resources["cpus"],
        memory_free_mb=resources["memory_free_mb"],
        max_vms=payload["capacity"]["max_vms"],
        busy_slots=len(busy),
        policy=state["policy"],
        slot_leases={slot["lease_id"]: slot["state"] for slot in slots if slot.get("lease_id")},
        lease_slots={slot["lease_id"]: slot["slot"] for slot in slots if slot.get("lease_id")},
        busy_lease_ids=frozenset(slot.get("lease_id") for slot in busy),
        declined=[(item["lease_id"], item["reason"]) for item in payload["declined"]],
        memory_total_mb=resources["memory_total_mb"],
        hw_virt_held_by=resources.get("hw_virt_held_by"),
        decline_details={item["lease_id"]: item.get("detail", "") for item in payload["declined"]},
        mac=parse_mac(resources.get("mac")),
        address=address,
    )
