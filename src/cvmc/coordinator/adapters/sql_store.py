"""The ``Store`` port on SQLAlchemy Core: SQLite (embedded default) or PostgreSQL.

A heartbeat is one short transaction: a conditional UPDATE of the desktop's row (which moves
``last_seq`` only if the new one is greater and the desktop is not revoked, so two racing
requests cannot both pass), a SELECT of its leases, and lease changes only when the slots say
something new. On SQLite the web process's writers are serialized by a lock (the rounds
process takes its turns through SQLite's own lock); on PostgreSQL heartbeats go in pipelined
batches (``heartbeats``), and a single heartbeat is a batch of one.

A heartbeat whose values the database refuses (``UnstorableError``; the schema check stops
them first) fails alone: a PostgreSQL batch that fails with a data error is split in halves and
sent again until the refused heartbeat is found, so no other desktop's heartbeat fails with it.

A batch's lease changes (one transaction) and an allocation round's lease deletions lock lease
rows in no common order, so PostgreSQL can find the two in a deadlock and abort one of them.
When it aborts the batch's, that transaction is tried again (``_ATTEMPTS`` in all): it was
rolled back whole, and its writes mean the same the second time (a lease's new state, a lease
gone, a decline's backoff). Before, every heartbeat of the batch answered 503 ``unavailable``.

On PostgreSQL, with a ``PgLeaderLock``, an allocation round (``round``) is one transaction on
the session that holds the leader lock, so only the leading process's rounds ever commit
(``cvmc.coordinator.adapters.pg_leader``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import psycopg
from sqlalchemy import (
    Connection,
    Engine,
    and_,
    bindparam,
    case,
    delete,
    false,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError

from cvmc.coordinator.adapters.pg_leader import PgLeaderLock
from cvmc.coordinator.adapters.schema import (
    decline_events,
    declines,
    desktops,
    enrolments,
    leases,
    revocations,
    samples,
    usage,
)
from cvmc.coordinator.adapters.schema import wakes as wake_rows
from cvmc.coordinator.domain.health import HardwareGroup
from cvmc.coordinator.domain.leases import Allocation, DesktopView, LeaseView
from cvmc.coordinator.domain.wake import Wake
from cvmc.coordinator.ports import (
    RECENT_DECLINES,
    RECENT_S,
    WAKE_DELIVER_S,
    AuthRecord,
    DashboardCounts,
    DeclineRecord,
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
)
from cvmc.gridmodel.addressing import desktop_id as canonical
from cvmc.protocol import STARTED_SLOT_STATES

__all__ = ["SqlStore"]

log = logging.getLogger("cvmc.coordinator.store")

#: How often a batch's lease changes are sent when PostgreSQL aborts them for a deadlock or a
#: serialization failure (the module's docstring), the first time included.
_ATTEMPTS = 3
#: What PostgreSQL aborts a transaction with that may simply be tried again.
_TRANSIENT = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)

#: The heartbeat's row update, built once (no per-request statement building or cache keys).
_STATE_COLUMNS = (
    "agent_version",
    "users",
    "may_start",
    "may_run",
    "hw_virt",
    "cpus",
    "memory_free_mb",
    "max_vms",
    "busy_slots",
    "unleased_vms",
    "policy",
    "memory_total_mb",
    "hw_virt_held_by",
    "mac",
    "address",
)
#: SQLite: the row update and the lease read, as SQL for the driver itself (sqlite3's named
#: parameters). A heartbeat is the one hot path; SQLAlchemy's statement execution was about a
#: third of its CPU (docs/performance.md).
_ACCEPT_SQLITE = (
    "UPDATE desktops SET last_seq = :b_seq, last_seen = :b_now, "  # noqa: S608 - names from a constant
    + ", ".join(f"{name} = :b_{name}" for name in _STATE_COLUMNS)
    + " WHERE id = :b_id AND last_seq < :b_seq AND revoked_at IS NULL"
)
_LEASES_OF_SQLITE = (
    "SELECT id, desktop_id, vm_name, cpus, memory_mb, created_at, start_by, state, slot, "
    "backfill FROM leases WHERE desktop_id = :b_id"
)
_TOUCH = (
    update(desktops)
    .where(
        desktops.c.id == bindparam("b_id"),
        desktops.c.last_seq < bindparam("b_seq"),
        desktops.c.revoked_at.is_(None),
    )
    .values(last_seq=bindparam("b_seq"))
)
#: PostgreSQL: the row update and the lease read in one statement, for psycopg itself
#: (``%(name)s`` parameters); heartbeats send it in pipelined batches.
_ACCEPT_PG = (
    "WITH acc AS (UPDATE desktops SET last_seq = %(b_seq)s, last_seen = %(b_now)s, "
    "agent_version = %(b_agent_version)s, users = %(b_users)s, may_start = %(b_may_start)s, "
    "may_run = %(b_may_run)s, hw_virt = %(b_hw_virt)s, cpus = %(b_cpus)s, "
    "memory_free_mb = %(b_memory_free_mb)s, max_vms = %(b_max_vms)s, "
    "busy_slots = %(b_busy_slots)s, policy = %(b_policy)s, "
    "memory_total_mb = %(b_memory_total_mb)s, hw_virt_held_by = %(b_hw_virt_held_by)s, "
    "mac = %(b_mac)s, address = %(b_address)s, "
    "unleased_vms = (SELECT count(*) FROM "
    "unnest(CAST(%(b_busy)s AS text[])) AS b(lease_id) WHERE b.lease_id IS NULL OR NOT EXISTS "
    "(SELECT 1 FROM leases AS o WHERE o.id = b.lease_id AND o.desktop_id = %(b_id)s)) "
    "WHERE id = %(b_id)s AND last_seq < %(b_seq)s AND revoked_at IS NULL RETURNING id) "
    "SELECT (SELECT count(*) FROM acc) AS accepted, l.id, l.desktop_id, l.vm_name, l.cpus, "
    "l.memory_mb, l.created_at, l.start_by, l.state, l.slot, l.backfill "
    "FROM (SELECT 1) AS one LEFT JOIN leases AS l ON l.desktop_id = %(b_id)s"
)
_LEASE_STATE = (
    update(leases)
    .where(leases.c.id == bindparam("b_id"))
    .values(state=bindparam("b_state"), slot=bindparam("b_slot"))
)
#: What a driver raises for a value its database cannot hold: a number out of the column's
#: range, NUL in text (PostgreSQL), a lone surrogate (not UTF-8), an integer above 64 bits.
_UNSTORABLE = (psycopg.DataError, sqlite3.DataError, ValueError, OverflowError)
_AUTH = select(desktops.c.id, desktops.c.salt, desktops.c.last_seq, desktops.c.revoked_at).where(
    desktops.c.id == bindparam("b_id")
)


def _unstorable(exc: BaseException) -> UnstorableError:
    first = str(exc).splitlines()[0] if str(exc) else ""
    return UnstorableError(
        f"the database cannot hold a value of it ({type(exc).__name__}: {first})"
    )


def _lease(row: Any) -> LeaseView:  # noqa: ANN401 - a SQLAlchemy row
    return LeaseView(
        id=row.id,
        desktop_id=row.desktop_id,
        vm_name=row.vm_name,
        cpus=row.cpus,
        memory_mb=row.memory_mb,
        created_at=row.created_at,
        start_by=row.start_by,
        state=row.state,
        slot=row.slot,
        backfill=bool(row.backfill),
    )


def _lease_tuple(row: Sequence[Any]) -> LeaseView:
    """A lease from a driver's row of the lease columns in table order (SQLite gives the
    backfill flag as 0 or 1)."""
    lease_id, desktop_id, vm_name, cpus, memory_mb, created_at, start_by, state, slot, spare = row
    return LeaseView(
        lease_id,
        desktop_id,
        vm_name,
        cpus,
        memory_mb,
        created_at,
        start_by,
        state,
        slot,
        bool(spare),
    )


def _row_values(
    desktop_id: str, seq: int, now: float, update_: HeartbeatUpdate, unleased: int
) -> dict[str, Any]:
    return {
        "b_id": desktop_id,
        "b_seq": seq,
        "b_now": now,
        "b_agent_version": update_.agent_version,
        "b_users": update_.users,
        "b_may_start": update_.may_start,
        "b_may_run": update_.may_run,
        "b_hw_virt": update_.hw_virt,
        "b_cpus": update_.cpus,
        "b_memory_free_mb": update_.memory_free_mb,
        "b_max_vms": update_.max_vms,
        "b_busy_slots": update_.busy_slots,
        "b_unleased_vms": unleased,
        "b_policy": update_.policy,
        "b_memory_total_mb": update_.memory_total_mb,
        "b_hw_virt_held_by": update_.hw_virt_held_by,
        "b_mac": update_.mac,
        "b_address": update_.address,
    }


@dataclass
class _Plan:
    """What a heartbeat changes in its desktop's leases."""

    kept: list[LeaseView] = field(default_factory=list)
    #: (lease id, new state, its slot)
    states: list[tuple[str, str, int | None]] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)  # declined, released or expired
    blocks: list[tuple[str, str]] = field(default_factory=list)  # (vm_name, decline reason)
    #: (vm_name, reason, detail) of each declined lease, expired ones included.
    events: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def changes(self) -> bool:
        return bool(self.states or self.gone or self.blocks)


def _plan(current: list[LeaseView], update_: HeartbeatUpdate, now: float) -> _Plan:
    """A lease in a slot is starting or running; a declined one goes (and its type backs off,
    unless it merely expired); a held lease no longer in a slot was released; an offer not in
    a slot stays until its start_by."""
    plan = _Plan()
    declined = dict(update_.declined)
    for lease in current:
        slot_state = update_.slot_leases.get(lease.id)
        if lease.id in declined:
            plan.gone.append(lease.id)
            detail = update_.decline_details.get(lease.id, "")
            plan.events.append((lease.vm_name, declined[lease.id], detail))
            if declined[lease.id] != "expired":
                plan.blocks.append((lease.vm_name, declined[lease.id]))
        elif slot_state is None or slot_state == "stopped":
            if lease.state == "offered" and slot_state is None and lease.start_by > now:
                plan.kept.append(lease)
            else:
                plan.gone.append(lease.id)
        else:
            state = "running" if slot_state in STARTED_SLOT_STATES else "starting"
            slot = update_.lease_slots.get(lease.id, lease.slot)
            if state != lease.state or slot != lease.slot:
                plan.states.append((lease.id, state, slot))
            plan.kept.append(replace(lease, state=state, slot=slot))
    return plan


#: A desktop's states, as the dashboard counts them.
_STATES = ("idle", "busy", "owner_present", "offline", "revoked")


def _state(cutoff: float) -> Any:  # noqa: ANN401 - a SQLAlchemy CASE expression
    """A desktop's state (``_STATES``): revoked; offline (not heard from since ``cutoff``);
    owner_present (someone is logged on); busy (a slot holds a VM); else idle."""
    return case(
        (desktops.c.revoked_at.is_not(None), "revoked"),
        (desktops.c.last_seen.is_(None), "offline"),
        (desktops.c.last_seen < cutoff, "offline"),
        (desktops.c.users > 0, "owner_present"),
        (desktops.c.busy_slots > 0, "busy"),
        else_="idle",
    )


class SqlStore(Store):
    def __init__(
        self,
        engine: Engine,
        heartbeat_engine: Engine | None = None,
        leader: PgLeaderLock | None = None,
    ) -> None:
        self.engine = engine
        #: PostgreSQL: heartbeats commit through an engine with synchronous_commit = off.
        self.heartbeat_engine = heartbeat_engine or engine
        self._sqlite = engine.url.get_backend_name() == "sqlite"
        self.embedded = self._sqlite
        self._lock = threading.Lock()
        #: PostgreSQL: the leader lock, whose session runs the allocation rounds.
        self._leader = None if self._sqlite else leader
        #: That session, while a round's transaction is open on it.
        self._round_conn: Connection | None = None

    @contextlib.contextmanager
    def _write(self) -> Iterator[Connection]:
        if self._sqlite:
            with self._lock, self.engine.begin() as conn:
                yield conn
        else:
            with self.engine.begin() as conn:
                yield conn

    @contextlib.contextmanager
    def _read(self) -> Iterator[Connection]:
        """The round's connection inside ``round``, else one from the pool."""
        if self._round_conn is not None:
            yield self._round_conn
        else:
            with self.engine.connect() as conn:
                yield conn

    @contextlib.contextmanager
    def _write_round(self) -> Iterator[Connection]:
        """The round's transaction inside ``round``, else a transaction of its own."""
        if self._round_conn is not None:
            yield self._round_conn
        else:
            with self._write() as conn:
                yield conn

    def close(self) -> None:
        if self._leader is not None:
            self._leader.close()
        self.engine.dispose()
        self.heartbeat_engine.dispose()

    # -- leading the allocation rounds ----------------------------------------------------

    def lead(self) -> bool:
        return self._leader is None or self._leader.hold() is not None

    @contextlib.contextmanager
    def round(self) -> Iterator[None]:
        """PostgreSQL: the round's reads and writes in one transaction on the leader lock's
        session, which first checks that the session holds the lock. A round that fails
        because the session went raises ``LeadershipLostError``; one that fails otherwise (a
        deadlock with a heartbeat batch) raises its error, and this process still leads."""
        if self._leader is None:
            yield
            return
        conn = self._leader.session
        if conn is None:
            raise LeadershipLostError("this process does not hold the leader lock")
        try:
            with conn.begin():
                if not self._leader.held(conn):
                    raise LeadershipLostError("the session no longer holds the leader lock")
                self._round_conn = conn
                try:
                    yield
                finally:
                    self._round_conn = None
        except LeadershipLostError:
            self._leader.drop("the session no longer holds the leader lock")
            raise
        except DBAPIError as exc:
            if not self._leader.alive():
                raise LeadershipLostError(
                    f"the leader lock's session failed during the round: {type(exc).__name__}"
                ) from None
            raise

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    # -- enrolment ------------------------------------------------------------------------

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
        key = canonical(name)
        new_id = "d-" + secrets.token_hex(8)
        salt = secrets.token_bytes(32)
        try:
            with self._write() as conn:
                self._enrol(conn, key, generation, now)
                self._replace_desktop(
                    conn,
                    key,
                    id=new_id,
                    name=key,
                    department=department,
                    generation=generation,
                    salt=salt,
                    last_seq=0,
                    enrolled_at=now,
                    revoked_at=None,
                    last_seen=None,
                    platform=platform,
                    agent_version=agent_version,
                    users=0,
                    may_start=False,
                    may_run=False,
                    hw_virt=False,
                    cpus=0,
                    memory_free_mb=0,
                    max_vms=0,
                    busy_slots=0,
                    unleased_vms=0,
                    policy="",
                )
        except IntegrityError:
            # A concurrent enrolment with the same token won the race (PostgreSQL: the
            # primary key of enrolments); this one wrote nothing.
            raise TokenUsedError(f"{name} generation {generation}: used concurrently") from None
        return new_id, salt

    @staticmethod
    def _enrol(conn: Connection, key: str, generation: int, now: float) -> None:
        """Spend ``generation`` of desktop ``key``: only the next one, never if revoked."""
        revoked = conn.execute(
            select(revocations.c.revoked_at).where(revocations.c.desktop == key)
        ).first()
        if revoked is not None:
            raise TokenUsedError(f"{key} is revoked")
        last = conn.execute(
            select(func.max(enrolments.c.generation)).where(enrolments.c.desktop == key)
        ).scalar()
        current = int(last or 0)
        if generation != current + 1:
            raise TokenUsedError(
                f"{key} generation {generation} is not the next one ({current + 1})"
            )
        conn.execute(insert(enrolments).values(desktop=key, generation=generation, used_at=now))

    @staticmethod
    def _replace_desktop(conn: Connection, key: str, **row: object) -> None:
        """The desktop's new row; its old row, leases and declines go (a new identity)."""
        old = conn.execute(select(desktops.c.id).where(desktops.c.name == key)).scalar()
        if old is not None:
            conn.execute(delete(leases).where(leases.c.desktop_id == old))
            conn.execute(delete(declines).where(declines.c.desktop_id == old))
            conn.execute(delete(desktops).where(desktops.c.id == old))
        conn.execute(insert(desktops).values(**row))

    def auth(self, desktop_id: str) -> AuthRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(_AUTH, {"b_id": desktop_id}).first()
        if row is None:
            return None
        return AuthRecord(row.id, bytes(row.salt), int(row.last_seq), row.revoked_at is not None)

    def salts(self) -> list[tuple[str, bytes]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(desktops.c.id, desktops.c.salt).where(desktops.c.revoked_at.is_(None))
            ).all()
        return [(row.id, bytes(row.salt)) for row in rows]

    def _refusal(
        self, conn: Connection, desktop_id: str
    ) -> ReplayedError | RevokedError | UnknownDesktopError:
        row = conn.execute(
            select(desktops.c.last_seq, desktops.c.revoked_at).where(desktops.c.id == desktop_id)
        ).first()
        if row is None:
            return UnknownDesktopError(desktop_id)
        if row.revoked_at is not None:
            return RevokedError(desktop_id)
        return ReplayedError(int(row.last_seq))

    def touch(self, desktop_id: str, seq: int, now: float) -> None:
        with self._write() as conn:
            done = conn.execute(_TOUCH, {"b_id": desktop_id, "b_seq": seq})
            if done.rowcount != 1:
                raise self._refusal(conn, desktop_id)

    # -- heartbeats -----------------------------------------------------------------------

    def heartbeat(
        self, desktop_id: str, seq: int, now: float, update_: HeartbeatUpdate, backoff_s: float
    ) -> list[LeaseView]:
        if not self._sqlite:  # PostgreSQL: a batch of one
            (result,) = self.heartbeats([HeartbeatItem(desktop_id, seq, update_)], now, backoff_s)
            if not isinstance(result, list):
                raise result
            return result
        with self._write() as conn:
            # The driver's own cursor, inside this transaction (the connection's DBAPI one).
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            cursor.execute(_LEASES_OF_SQLITE, {"b_id": desktop_id})
            current = [_lease_tuple(row) for row in cursor.fetchall()]
            ours = {lease.id for lease in current}
            unleased = sum(
                1 for lease_id in update_.busy_lease_ids if lease_id is None or lease_id not in ours
            )
            try:
                cursor.execute(_ACCEPT_SQLITE, _row_values(desktop_id, seq, now, update_, unleased))
            except _UNSTORABLE as exc:
                raise _unstorable(exc) from None
            if cursor.rowcount != 1:
                raise self._refusal(conn, desktop_id)
            plan = _plan(current, update_, now)
            self._apply_plan(conn, desktop_id, plan, now, backoff_s)
        return plan.kept

    def heartbeats(
        self, items: Sequence[HeartbeatItem], now: float, backoff_s: float
    ) -> list[HeartbeatResult]:
        """PostgreSQL: the whole batch in one pipeline (one round trip, one commit) on the
        heartbeat connection; refusals and lease changes, which are rare, follow. A batch the
        database refuses for a value is split until the refused heartbeat stands alone
        (``UnstorableError``): the others are written."""
        if self._sqlite or not items:
            return super().heartbeats(items, now, backoff_s)
        answers = self._accept_isolated(items, now)
        results: list[HeartbeatResult] = []
        plans: list[tuple[str, _Plan]] = []
        refused: list[int] = []
        for index, (item, rows) in enumerate(zip(items, answers, strict=True)):
            if isinstance(rows, UnstorableError):
                results.append(rows)
                continue
            if not rows or rows[0][0] != 1:
                refused.append(index)
                results.append([])
                continue
            current = [_lease_tuple(row[1:]) for row in rows if row[1] is not None]
            plan = _plan(current, item.update, now)
            if plan.changes:
                plans.append((item.desktop_id, plan))
            results.append(plan.kept)
        if refused:
            with self.engine.connect() as conn:
                for index in refused:
                    results[index] = self._refusal(conn, items[index].desktop_id)
        if plans:
            self._apply_plans(plans, now, backoff_s)
        return results

    def _apply_plans(
        self, plans: Sequence[tuple[str, _Plan]], now: float, backoff_s: float
    ) -> None:
        """PostgreSQL: a batch's lease changes in one transaction, tried again when PostgreSQL
        aborts it for a deadlock (the module's docstring), ``_ATTEMPTS`` times in all."""
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                with self._write() as conn:
                    for desktop_id, plan in plans:
                        self._apply_plan(conn, desktop_id, plan, now, backoff_s)
                return
            except DBAPIError as exc:
                if attempt == _ATTEMPTS or not isinstance(exc.orig, _TRANSIENT):
                    raise
                log.warning(
                    "heartbeats: the lease changes of %d desktops were aborted (%s); "
                    "trying again (%d of %d)",
                    len(plans),
                    type(exc.orig).__name__,
                    attempt + 1,
                    _ATTEMPTS,
                )

    def _accept_isolated(
        self, items: Sequence[HeartbeatItem], now: float
    ) -> list[list[Any] | UnstorableError]:
        """Each item's accepting rows, or its ``UnstorableError``: a batch that fails with a
        data error is sent again in halves (at most 2 log2(batch) more round trips per bad
        heartbeat), so only the heartbeat the database refuses fails."""
        try:
            return list(self._accept_pg(items, now))
        except _UNSTORABLE as exc:
            if len(items) == 1:
                return [_unstorable(exc)]
        half = len(items) // 2
        return self._accept_isolated(items[:half], now) + self._accept_isolated(items[half:], now)

    def _accept_pg(self, items: Sequence[HeartbeatItem], now: float) -> list[list[Any]]:
        """The batch's row updates in one pipeline and one commit; all or none of them."""
        raw = self.heartbeat_engine.raw_connection()
        try:
            pg: Any = raw.driver_connection
            cursors = []
            with pg.pipeline():
                for item in items:
                    values = _row_values(item.desktop_id, item.seq, now, item.update, 0)
                    values["b_busy"] = list(item.update.busy_lease_ids)
                    cursor = pg.cursor()
                    cursor.execute(_ACCEPT_PG, values, prepare=True)
                    cursors.append(cursor)
            answers: list[list[Any]] = [cursor.fetchall() for cursor in cursors]
            pg.commit()
        except BaseException:
            raw.invalidate()
            raise
        finally:
            raw.close()
        return answers

    def _apply_plan(
        self, conn: Connection, desktop_id: str, plan: _Plan, now: float, backoff_s: float
    ) -> None:
        for lease_id, state, slot in plan.states:
            conn.execute(_LEASE_STATE, {"b_id": lease_id, "b_state": state, "b_slot": slot})
        if plan.gone:
            conn.execute(delete(leases).where(leases.c.id.in_(plan.gone)))
        if backoff_s > 0:
            for vm_name, reason in plan.blocks:
                self._block(conn, desktop_id, vm_name, now + backoff_s, reason)
        if plan.events:
            conn.execute(
                insert(decline_events),
                [
                    {
                        "at": now,
                        "desktop_id": desktop_id,
                        "vm_name": vm_name,
                        "reason": reason,
                        "detail": detail,
                    }
                    for vm_name, reason, detail in plan.events
                ],
            )

    def _block(
        self, conn: Connection, desktop_id: str, vm_name: str, until: float, why: str
    ) -> None:
        conn.execute(
            delete(declines).where(
                declines.c.desktop_id == desktop_id, declines.c.vm_name == vm_name
            )
        )
        conn.execute(
            insert(declines).values(desktop_id=desktop_id, vm_name=vm_name, until=until, reason=why)
        )

    # -- revocation -----------------------------------------------------------------------

    def revoke(self, names: Sequence[str], now: float) -> tuple[list[str], list[str], list[str]]:
        revoked: list[str] = []
        already: list[str] = []
        unknown: list[str] = []
        with self._write() as conn:
            for name in names:
                try:
                    key = canonical(name)
                except ValueError:
                    unknown.append(name)
                    continue
                row = conn.execute(
                    select(desktops.c.id, desktops.c.revoked_at).where(desktops.c.name == key)
                ).first()
                if row is None:
                    unknown.append(name)
                    continue
                if row.revoked_at is not None:
                    already.append(name)
                    continue
                conn.execute(update(desktops).where(desktops.c.id == row.id).values(revoked_at=now))
                conn.execute(delete(leases).where(leases.c.desktop_id == row.id))
                listed = conn.execute(
                    select(revocations.c.desktop).where(revocations.c.desktop == key)
                ).first()
                if listed is None:
                    conn.execute(insert(revocations).values(desktop=key, revoked_at=now))
                revoked.append(name)
        return revoked, already, unknown

    def unrevoke(self, names: Sequence[str]) -> tuple[list[str], list[str]]:
        unrevoked: list[str] = []
        unchanged: list[str] = []
        with self._write() as conn:
            for name in names:
                try:
                    key = canonical(name)
                except ValueError:
                    unchanged.append(name)
                    continue
                done = conn.execute(delete(revocations).where(revocations.c.desktop == key))
                (unrevoked if done.rowcount else unchanged).append(name)
        return unrevoked, unchanged

    # -- allocation -----------------------------------------------------------------------

    def snapshot(
        self, now: float, offline_after_s: float
    ) -> tuple[list[DesktopView], list[LeaseView], frozenset[tuple[str, str]]]:
        with self._read() as conn:
            rows = conn.execute(
                select(
                    desktops.c.id,
                    desktops.c.department,
                    desktops.c.last_seen,
                    desktops.c.may_start,
                    desktops.c.hw_virt,
                    desktops.c.max_vms,
                    desktops.c.memory_free_mb,
                    desktops.c.revoked_at,
                    desktops.c.unleased_vms,
                    desktops.c.name,
                    desktops.c.address,
                    desktops.c.mac,
                )
            ).all()
            cutoff = now - offline_after_s
            views = [
                DesktopView(
                    desk_id,
                    department,
                    seen is not None and seen >= cutoff,
                    bool(may_start),
                    bool(hw_virt),
                    max_vms,
                    memory,
                    revoked is not None,
                    unleased,
                    desk_name,
                    address,
                    mac,
                    seen,
                )
                for (
                    desk_id,
                    department,
                    seen,
                    may_start,
                    hw_virt,
                    max_vms,
                    memory,
                    revoked,
                    unleased,
                    desk_name,
                    address,
                    mac,
                ) in rows
            ]
            current = [_lease(row) for row in conn.execute(select(leases))]
            blocked = frozenset(
                (row.desktop_id, row.vm_name)
                for row in conn.execute(
                    select(declines.c.desktop_id, declines.c.vm_name).where(declines.c.until > now)
                )
            )
        return views, current, blocked

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
        with self._write_round() as conn:
            if allocation.revoked:
                ids = list(allocation.revoked)
                for start in range(0, len(ids), 500):
                    conn.execute(delete(leases).where(leases.c.id.in_(ids[start : start + 500])))
            if allocation.new:
                # Only desktops that still exist and are not revoked get the new leases.
                live = set(
                    conn.execute(
                        select(desktops.c.id).where(
                            desktops.c.id.in_({lease.desktop_id for lease in allocation.new}),
                            desktops.c.revoked_at.is_(None),
                        )
                    ).scalars()
                )
                rows = [{**lease.__dict__} for lease in allocation.new if lease.desktop_id in live]
                if rows:
                    conn.execute(insert(leases), rows)
            demand, supply, running = sample
            conn.execute(delete(samples).where(samples.c.at == now))
            conn.execute(
                insert(samples).values(
                    at=now,
                    demand=json.dumps(dict(demand), sort_keys=True),
                    supply=json.dumps(dict(supply), sort_keys=True),
                    running=json.dumps(dict(running), sort_keys=True),
                )
            )
            conn.execute(delete(samples).where(samples.c.at < now - keep_history_s))
            conn.execute(delete(declines).where(declines.c.until <= now))
            conn.execute(
                delete(decline_events).where(
                    decline_events.c.at < now - max(keep_history_s, RECENT_S)
                )
            )
            for (department, vm_name), seconds in sorted((usage or {}).items()):
                self._add_usage(conn, department, vm_name, seconds)
            conn.execute(delete(wake_rows).where(wake_rows.c.at < now - WAKE_DELIVER_S))
            if wakes:
                sleepers = [w.sleeper_id for w in wakes]
                conn.execute(delete(wake_rows).where(wake_rows.c.sleeper_id.in_(sleepers)))
                conn.execute(
                    insert(wake_rows),
                    [
                        {
                            "sleeper_id": w.sleeper_id,
                            "waker_id": w.waker_id,
                            "mac": w.mac,
                            "at": now,
                        }
                        for w in wakes
                    ],
                )

    def wakes_for(self, desktop_ids: Sequence[str], since: float) -> dict[str, list[str]]:
        if not desktop_ids:
            return {}
        found: dict[str, list[str]] = {}
        with self._read() as conn:
            for waker, mac in conn.execute(
                select(wake_rows.c.waker_id, wake_rows.c.mac)
                .where(wake_rows.c.waker_id.in_(list(desktop_ids)), wake_rows.c.at >= since)
                .order_by(wake_rows.c.waker_id, wake_rows.c.mac)
            ):
                found.setdefault(waker, []).append(mac)
        return found

    @staticmethod
    def _add_usage(conn: Connection, department: str, vm_name: str, seconds: float) -> None:
        """Add to a (department, VM type)'s core-seconds (only the leading process writes)."""
        key = and_(usage.c.department == department, usage.c.vm_name == vm_name)
        done = conn.execute(
            update(usage).where(key).values(core_seconds=usage.c.core_seconds + seconds)
        )
        if done.rowcount == 0:
            conn.execute(
                insert(usage).values(department=department, vm_name=vm_name, core_seconds=seconds)
            )

    # -- dashboard ------------------------------------------------------------------------

    def counts(self, now: float, offline_after_s: float) -> DashboardCounts:
        state = _state(now - offline_after_s)
        states: dict[str, int] = dict.fromkeys(_STATES, 0)
        enrolled = desktops.c.revoked_at.is_(None)
        with self.engine.connect() as conn:
            by_dept_state: dict[str, dict[str, int]] = {}
            for department, name, count in conn.execute(
                select(desktops.c.department, state, func.count()).group_by(
                    desktops.c.department, state
                )
            ):
                states[name] += int(count)
                by_dept_state.setdefault(department, dict.fromkeys(_STATES, 0))[name] = int(count)
            running: dict[str, int] = {}
            by_type: dict[str, int] = {}
            cores_running = 0
            backfill: dict[str, int] = {}
            for name, lease_state, spare, count, cpus in conn.execute(
                select(
                    leases.c.vm_name,
                    leases.c.state,
                    leases.c.backfill,
                    func.count(),
                    func.sum(leases.c.cpus),
                ).group_by(leases.c.vm_name, leases.c.state, leases.c.backfill)
            ):
                if lease_state == "running":
                    cores_running += int(cpus or 0)
                if spare:
                    backfill[lease_state] = backfill.get(lease_state, 0) + int(count)
                    continue
                by_type[name] = by_type.get(name, 0) + int(count)
                if lease_state == "running":
                    running[name] = int(count)
            by_dept: dict[str, int] = {
                name: int(count)
                for name, count in conn.execute(
                    select(desktops.c.department, func.count())
                    .select_from(leases.join(desktops, and_(leases.c.desktop_id == desktops.c.id)))
                    .where(leases.c.backfill == false())
                    .group_by(desktops.c.department)
                )
            }
            hardware = tuple(
                HardwareGroup(bool(hw), held, int(memory), int(cpus), int(count), name)
                for hw, held, memory, cpus, name, count in conn.execute(
                    select(
                        desktops.c.hw_virt,
                        desktops.c.hw_virt_held_by,
                        desktops.c.memory_total_mb,
                        desktops.c.cpus,
                        state,
                        func.count(),
                    )
                    .where(enrolled)
                    .group_by(
                        desktops.c.hw_virt,
                        desktops.c.hw_virt_held_by,
                        desktops.c.memory_total_mb,
                        desktops.c.cpus,
                        state,
                    )
                )
            )
            since = now - RECENT_S
            recent: dict[tuple[str, str], int] = {
                (name, reason): int(count)
                for name, reason, count in conn.execute(
                    select(decline_events.c.vm_name, decline_events.c.reason, func.count())
                    .where(decline_events.c.at >= since)
                    .group_by(decline_events.c.vm_name, decline_events.c.reason)
                )
            }
            latest = self._declines(conn, since, RECENT_DECLINES)
            core_seconds = {
                (department, name): float(seconds)
                for department, name, seconds in conn.execute(
                    select(usage.c.department, usage.c.vm_name, usage.c.core_seconds)
                )
            }
            versions = {
                version: int(count)
                for version, count in conn.execute(
                    select(desktops.c.agent_version, func.count())
                    .where(enrolled)
                    .group_by(desktops.c.agent_version)
                )
            }
        return DashboardCounts(
            states,
            running,
            by_type,
            by_dept,
            hardware=hardware,
            declines=recent,
            recent_declines=tuple(latest),
            core_seconds=core_seconds,
            department_states=by_dept_state,
            agent_versions=versions,
            cores_running=cores_running,
            backfill=backfill,
        )

    @staticmethod
    def _declines(conn: Connection, since: float, limit: int) -> list[DeclineRecord]:
        rows = conn.execute(
            select(
                decline_events.c.at,
                desktops.c.name,
                desktops.c.department,
                decline_events.c.vm_name,
                decline_events.c.reason,
                decline_events.c.detail,
            )
            .select_from(
                decline_events.outerjoin(desktops, decline_events.c.desktop_id == desktops.c.id)
            )
            .where(decline_events.c.at >= since)
            .order_by(decline_events.c.at.desc(), decline_events.c.id.desc())
            .limit(limit)
        )
        return [
            DeclineRecord(at, name or "(gone)", department or "", vm_name, reason, detail)
            for at, name, department, vm_name, reason, detail in rows
        ]

    def recent_declines(self, since: float, limit: int) -> list[DeclineRecord]:
        with self.engine.connect() as conn:
            return self._declines(conn, since, limit)

    def desktop_records(
        self,
        now: float,
        offline_after_s: float,
        *,
        department: str | None = None,
        limit: int = 500,
        offset: int = 0,
    ) -> list[DesktopRecord]:
        state = _state(now - offline_after_s)
        query = select(
            desktops.c.id,
            desktops.c.name,
            desktops.c.department,
            state,
            desktops.c.platform,
            desktops.c.agent_version,
            desktops.c.last_seen,
            desktops.c.cpus,
            desktops.c.memory_total_mb,
            desktops.c.memory_free_mb,
            desktops.c.hw_virt,
            desktops.c.hw_virt_held_by,
            desktops.c.policy,
        )
        if department is not None:
            query = query.where(desktops.c.department == department)
        query = query.order_by(desktops.c.name).limit(limit).offset(offset)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
            ids = [row[0] for row in rows]
            vms: dict[str, list[tuple[str, str]]] = {}
            recent: dict[str, int] = {}
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                for desk, vm_name, lease_state in conn.execute(
                    select(leases.c.desktop_id, leases.c.vm_name, leases.c.state)
                    .where(leases.c.desktop_id.in_(chunk))
                    .order_by(leases.c.desktop_id, leases.c.vm_name, leases.c.id)
                ):
                    vms.setdefault(desk, []).append((vm_name, lease_state))
                for desk, count in conn.execute(
                    select(decline_events.c.desktop_id, func.count())
                    .where(
                        decline_events.c.desktop_id.in_(chunk),
                        decline_events.c.at >= now - RECENT_S,
                    )
                    .group_by(decline_events.c.desktop_id)
                ):
                    recent[desk] = int(count)
        return [
            DesktopRecord(
                name=name,
                department=dept,
                state=desk_state,
                platform=platform,
                agent_version=version,
                last_seen=seen,
                cpus=cpus,
                memory_total_mb=total,
                memory_free_mb=free,
                hw_virt=bool(hw),
                hw_virt_held_by=held,
                policy=policy,
                vms=tuple(vms.get(desk_id, ())),
                declines=recent.get(desk_id, 0),
            )
            for (
                desk_id,
                name,
                dept,
                desk_state,
                platform,
                version,
                seen,
                cpus,
                total,
                free,
                hw,
                held,
                policy,
            ) in rows
        ]

    def history(
        self, since: float
    ) -> list[tuple[float, dict[str, int], dict[str, int], dict[str, int]]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(samples).where(samples.c.at >= since).order_by(samples.c.at)
            ).all()
        return [
            (row.at, json.loads(row.demand), json.loads(row.supply), json.loads(row.running))
            for row in rows
        ]
