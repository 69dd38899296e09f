"""The allocation rounds' leader lock on PostgreSQL (docs/coordinator.md, "Several processes
and hosts").

Every ``serve`` process (several on a host with ``--workers``, several hosts on one database)
has a rounds driver, and exactly one of them runs allocation rounds: the one whose dedicated
session holds PostgreSQL's session-level advisory lock ``LEADER_KEY``. The others try to take
it every ``leases.leader_retry_s`` (``pg_try_advisory_lock``, which never waits).

**Fencing.** A round's transaction runs on that very session, and begins by checking in
``pg_locks`` that the session holds the lock. PostgreSQL keeps a session-level advisory lock
until the session ends, and releases it only after it has rolled back the session's open
transaction. So a round commits only while its process leads, and the next leader takes the
lock only after the last round of the one before committed or rolled back: it reads that
state, and no lease is given twice, whatever the timing (a frozen leader that wakes up, a
network cut, a session killed by an operator).

**Takeover.** The lock is free as soon as PostgreSQL ends the leader's session:

- at once when the process dies (the kernel closes its socket; ``serve`` takes its rounds
  child with it);
- after ``dead_after_s`` (TCP keepalives on both ends of the session: the server's
  ``tcp_keepalives_*`` and ``tcp_user_timeout``, set per session, and libpq's) when its host
  or the network goes silent;
- after ``idle_timeout_s`` (``idle_session_timeout``, ``idle_in_transaction_session_timeout``)
  when the process is frozen but its host still answers TCP: a leader uses its session every
  round, so a silent session is a stuck leader.

A follower takes the lock at its next try, so takeover is bounded by that time plus
``leases.leader_retry_s``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from cvmc.coordinator.adapters.database import database_url
from cvmc.coordinator.domain.config import DatabaseConfig

__all__ = [
    "DEAD_AFTER_S",
    "LEADER_KEY",
    "PgLeaderLock",
    "idle_timeout_s",
    "lock_engine",
]

log = logging.getLogger("cvmc.coordinator.leader")

#: The advisory lock's key ("cvmc"); below 2**31, so ``pg_locks`` shows it as classid 0, objid.
LEADER_KEY = 0x63766D63
#: TCP keepalives of the lock session, on both ends: first probe after this many idle seconds,
KEEPALIVE_IDLE_S = 5
#: then one every this many seconds,
KEEPALIVE_INTERVAL_S = 2
#: and the peer is dead after this many unanswered probes.
KEEPALIVE_COUNT = 3
#: A peer gone silent is found dead after at most this (also ``tcp_user_timeout``, for data
#: sent and never acknowledged).
DEAD_AFTER_S = KEEPALIVE_IDLE_S + KEEPALIVE_INTERVAL_S * KEEPALIVE_COUNT

_TRY = text("SELECT pg_try_advisory_lock(:key)").bindparams(key=LEADER_KEY)
_HELD = text(
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
    "AND classid = 0 AND objid = :key AND objsubid = 1 AND granted"
).bindparams(key=LEADER_KEY)


def idle_timeout_s(allocate_s: float, leader_retry_s: float) -> float:
    """How long the lock session may stay silent before PostgreSQL ends it: the leader uses
    it every ``allocate_s`` and a follower every ``leader_retry_s``, so twice the longer of the
    two plus 10 s is only ever reached by a stuck process."""
    return 2 * max(allocate_s, leader_retry_s) + 10.0


def lock_engine(database: DatabaseConfig, idle_timeout: float) -> Engine:
    """An engine for the lock session alone: no pool (a broken session is closed, never
    reused), TCP keepalives on both ends, the idle timeouts, synchronous commits."""
    ms = math.ceil(idle_timeout * 1000)
    server = " ".join(
        f"-c {name}={value}"
        for name, value in (
            ("tcp_keepalives_idle", KEEPALIVE_IDLE_S),
            ("tcp_keepalives_interval", KEEPALIVE_INTERVAL_S),
            ("tcp_keepalives_count", KEEPALIVE_COUNT),
            ("tcp_user_timeout", DEAD_AFTER_S * 1000),
            ("idle_session_timeout", ms),
            ("idle_in_transaction_session_timeout", ms),
            ("synchronous_commit", "on"),
            # Which process leads: pg_stat_activity, joined with pg_locks (docs/coordinator.md).
            ("application_name", f"cvmc-rounds:{socket.gethostname()[:40]}:{os.getpid()}"),
        )
    )
    return create_engine(
        database_url(database),
        poolclass=NullPool,
        hide_parameters=True,
        connect_args={
            "connect_timeout": 5,
            "keepalives": 1,
            "keepalives_idle": KEEPALIVE_IDLE_S,
            "keepalives_interval": KEEPALIVE_INTERVAL_S,
            "keepalives_count": KEEPALIVE_COUNT,
            "tcp_user_timeout": DEAD_AFTER_S * 1000,
            "options": server,
        },
    )


def _first_line(exc: BaseException) -> str:
    text_ = str(getattr(exc, "orig", None) or exc)
    return f"{type(exc).__name__}: {text_.splitlines()[0] if text_ else ''}"


class PgLeaderLock:
    """The leader lock on its own session (see the module's docstring). Not thread-safe: one
    rounds driver uses it."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._conn: Connection | None = None
        self.leading = False

    @property
    def session(self) -> Connection | None:
        """The session that holds the lock, as of the last ``hold``."""
        return self._conn if self.leading else None

    def hold(self) -> Connection | None:
        """The session that holds the lock (kept, or just taken), or ``None`` when another
        process holds it or the database does not answer. Never raises."""
        try:
            if self._conn is None:
                self._conn = self._engine.connect()
            conn = self._conn
            if self.leading:
                if self.held(conn):
                    conn.commit()
                    return conn
                # A live session keeps its lock; only a bug gets here.
                self.drop("the session no longer holds the lock")
                return None
            got = bool(conn.execute(_TRY).scalar())
            conn.commit()
        except DBAPIError as exc:
            self.drop(_first_line(exc))
            return None
        if got:
            self.leading = True
            log.info("took the leader lock: this process runs the allocation rounds")
            return conn
        return None

    @staticmethod
    def held(conn: Connection) -> bool:
        """Whether ``conn``'s session holds the lock (a query, inside the caller's
        transaction, if any)."""
        return bool(conn.execute(_HELD).scalar())

    def alive(self) -> bool:
        """After a failed round: whether the session still holds the lock (then the round
        failed for another reason, such as a deadlock, and this process still leads)."""
        if self._conn is None or not self.leading:
            return False
        try:
            with contextlib.suppress(DBAPIError):
                self._conn.rollback()
            held = self.held(self._conn)
            self._conn.commit()
        except DBAPIError as exc:
            self.drop(_first_line(exc))
            return False
        if not held:
            self.drop("the session no longer holds the lock")
        return held

    def drop(self, why: str) -> None:
        """Forget the session (closed, never reused); the next ``hold`` opens a new one."""
        if self.leading:
            log.warning("stopped leading the allocation rounds: %s", why)
        elif self._conn is not None:
            log.info("the leader lock's session went: %s", why)
        self.leading = False
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.invalidate()
            with contextlib.suppress(Exception):
                conn.close()

    def close(self) -> None:
        """Release the lock (by ending the session) and the engine."""
        conn, self._conn = self._conn, None
        self.leading = False
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
        self._engine.dispose()
