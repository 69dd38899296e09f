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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import jsonschema_rs

from cvmc.coordinator.domain.auth import derive_credential, signature_ok
from cvmc.coordinator.domain.config import Config
from cvmc.coordinator.domain.demand import Demand
from cvmc.coordinator.domain.grid import GridFile
from cvmc.coordinator.domain.leases import Allocation, LeaseView, allocate, claimed_leases
from cvmc.coordinator.ports import (
    CatalogueSource,
    DashboardCounts,
    DemandSource,
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
from cvmc.protocol import (
    DECLINE_REASONS,
    ENROL_REQUEST_SCHEMA,
    ERROR_CODES,
    HEARTBEAT_SCHEMA,
    SEQ_PATTERN,
    loads_json,
    values,
)

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
        self.counts = DashboardCounts({}, {}, {})
        #: Whether this process runs the allocation rounds (the store's leader lock; always,
        #: on SQLite). The web process learns it from its rounds process's reports.
        self.leader = False
        self._counts_at = float("-inf")
        self._round_lock = threading.Lock()
        self._enrol_schema = _validator(ENROL_REQUEST_SCHEMA)
        self._heartbeat_schema = _validator(HEARTBEAT_SCHEMA)
        self._types = list(grid.vm_types)
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

    def heartbeat(self, headers: Mapping[str, str], path: str, body: bytes) -> dict[str, Any]:
        """Authenticate, validate and apply one heartbeat; the reply body."""
        item = self.accept_heartbeat(headers, path, body)
        now = self.clock()
        with self._accepting(item.desktop_id, item.seq):
            current = self.store.heartbeat(
                item.desktop_id, item.seq, now, item.update, self.config.leases.decline_backoff_s
            )
        self._count_declines(item.update)
        return self.heartbeat_reply(current, now)

    def _count_declines(self, update: HeartbeatUpdate) -> None:
        for _, reason in update.declined:
            self.metrics.declined[reason] += 1

    def accept_heartbeat(self, headers: Mapping[str, str], path: str, body: bytes) -> HeartbeatItem:
        """The checks before any write: signature (and, the first time, the database's
        revocation and sequence), JSON, schema. ``ApiError`` if one fails."""
        desktop_id, seq = self.authenticate("POST", path, headers, body)
        payload = _json(body, "heartbeat")
        payload = _check(self._heartbeat_schema, payload, "heartbeat")
        assert isinstance(payload, dict)
        return HeartbeatItem(desktop_id, seq, _update(payload))

    def heartbeat_result(
        self, item: HeartbeatItem, result: HeartbeatResult, now: float
    ) -> dict[str, Any]:
        """The reply to a heartbeat that went through ``Store.heartbeats``; its refusal as
        the documented error."""
        if isinstance(result, list):
            self._count_declines(item.update)
            return self.heartbeat_reply(result, now)
        with self._accepting(item.desktop_id, item.seq):
            raise result
        raise AssertionError("unreachable")  # pragma: no cover - _accepting always raises

    def heartbeat_reply(self, current: list[LeaseView], now: float) -> dict[str, Any]:
        leases = [self._lease_json(lease, now) for lease in current]
        return {
            "server_time": _iso(now),
            "heartbeat_s": self.config.leases.heartbeat_s,
            "leases": [lease for lease in leases if lease is not None],
        }

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
            log.warning("demand: %s (keeping the last known demand)", exc)
            return
        self.demand_at = now

    def allocation_round(self) -> Allocation | None:
        """Refresh demand, allocate, write the result, refresh the dashboard's counts; if
        this process leads (``Store.lead``: always, on an embedded database). A process that
        does not lead only refreshes the dashboard's counts, and returns ``None``."""
        with self._round_lock:
            now = self.clock()
            if not self.store.lead():
                self._follow(now)
                return None
            if not self.leader:
                log.info("this process runs the allocation rounds")
            self.leader = True
            try:
                return self._lead(now)
            except LeadershipLostError as exc:
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
            )
            kept = result.kept(leases)
            self.metrics.with_jobs = dict(
                Counter(lease.vm_name for lease in kept if lease.id in claimed)
            )
            supply = Counter(lease.vm_name for lease in kept)
            running = Counter(lease.vm_name for lease in kept if lease.state == "running")
            demand = {t.name: self.demand.by_type.get(t.name, 0) for t in self._types}
            self.store.apply(
                result,
                now,
                (demand, {t.name: supply[t.name] for t in self._types}, dict(running)),
                self.config.leases.history_s,
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
        self.leader = report.leader

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
        return families


def _update(payload: Mapping[str, Any]) -> HeartbeatUpdate:
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
    )
