"""The database tables (SQLAlchemy Core). Alembic migrations (``cvmc.coordinator.migrations``)
create them; this module is what the store queries. A test checks the two agree."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    false,
)

__all__ = [
    "decline_events",
    "declines",
    "desktops",
    "enrolments",
    "leases",
    "metadata",
    "revocations",
    "samples",
    "usage",
    "wakes",
]

metadata = MetaData()

#: One row per enrolled desktop. ``salt`` is not the credential: the credential is
#: HMAC(enrolment key, id, salt), so a copy of the database alone signs nothing.
desktops = Table(
    "desktops",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(253), nullable=False, unique=True),
    Column("department", String(64), nullable=False),
    Column("generation", Integer, nullable=False),
    Column("salt", LargeBinary(32), nullable=False),
    Column("last_seq", BigInteger, nullable=False, default=0),
    Column("enrolled_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
    Column("last_seen", Float, nullable=True),
    Column("platform", String(16), nullable=False),
    Column("agent_version", String(32), nullable=False),
    Column("users", Integer, nullable=False, default=0),
    Column("may_start", Boolean, nullable=False, default=False),
    Column("may_run", Boolean, nullable=False, default=False),
    Column("hw_virt", Boolean, nullable=False, default=False),
    Column("cpus", Integer, nullable=False, default=0),
    Column("memory_free_mb", Integer, nullable=False, default=0),
    Column("max_vms", Integer, nullable=False, default=0),
    Column("busy_slots", Integer, nullable=False, default=0),
    Column("unleased_vms", Integer, nullable=False, default=0),
    Column("policy", String(300), nullable=False, default=""),
    Column("memory_total_mb", Integer, nullable=False, default=0, server_default="0"),
    Column("hw_virt_held_by", String(300), nullable=True),  # what holds VT-x (Hyper-V, VBS)
    # Wake-on-LAN: the MAC it reports, and the address its heartbeats come from (server-seen).
    Column("mac", String(17), nullable=True),
    Column("address", String(45), nullable=True),
)

#: Every (desktop, token generation) ever accepted: a token works once.
enrolments = Table(
    "enrolments",
    metadata,
    Column("desktop", String(253), primary_key=True),
    Column("generation", Integer, primary_key=True),
    Column("used_at", Float, nullable=False),
)

#: Every revoked desktop, by name (``desktop_id`` form). Enrolment never clears it: a revoked
#: desktop enrols again only after ``cvmc-coordinator unrevoke-desktop NAME``.
revocations = Table(
    "revocations",
    metadata,
    Column("desktop", String(253), primary_key=True),
    Column("revoked_at", Float, nullable=False),
)

leases = Table(
    "leases",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("desktop_id", String(64), ForeignKey("desktops.id"), nullable=False),
    Column("vm_name", String(63), nullable=False),
    Column("cpus", Integer, nullable=False),
    Column("memory_mb", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("start_by", Float, nullable=False),
    Column("state", String(16), nullable=False),  # offered | starting | running
    Column("slot", Integer, nullable=True),  # the desktop's slot, once it reports the lease held
    # A backfill lease (grid_backfill): not supply; real demand preempts it.
    Column("backfill", Boolean, nullable=False, server_default=false()),
    Index("ix_leases_desktop_id", "desktop_id"),
)

#: A desktop declined a type: do not offer it that type again before ``until``.
declines = Table(
    "declines",
    metadata,
    Column("desktop_id", String(64), primary_key=True),
    Column("vm_name", String(63), primary_key=True),
    Column("until", Float, nullable=False),
    Column("reason", String(32), nullable=False),
)

#: Demand and supply over time, one row per allocation round (the dashboard's chart).
samples = Table(
    "samples",
    metadata,
    Column("at", Float, primary_key=True),
    Column("demand", Text, nullable=False),  # JSON {vm_name: jobs}
    Column("supply", Text, nullable=False),  # JSON {vm_name: leases}
    Column("running", Text, nullable=False),  # JSON {vm_name: running VMs}
)

#: Every decline a desktop reported, with the agent's detail; kept as long as the chart's
#: history (``leases.history_s``). The dashboard's "recent declines" and the admin API read it.
decline_events = Table(
    "decline_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("desktop_id", String(64), nullable=False),
    Column("vm_name", String(63), nullable=False),
    Column("reason", String(32), nullable=False),
    Column("detail", String(300), nullable=False),
    Index("ix_decline_events_at", "at"),
)

#: Core-seconds that running VMs delivered, per department and VM type (counted each
#: allocation round: a running lease's CPUs times the time since the last round).
usage = Table(
    "usage",
    metadata,
    Column("department", String(64), primary_key=True),
    Column("vm_name", String(63), primary_key=True),
    Column("core_seconds", Float, nullable=False),
)

#: Wake-on-LAN (grid_wake_on_lan): a sleeping desktop that a round asked ``waker_id`` (an awake
#: desktop on its subnet) to wake; the waker's heartbeat replies carry ``mac`` for a while.
wakes = Table(
    "wakes",
    metadata,
    Column("sleeper_id", String(64), primary_key=True),
    Column("waker_id", String(64), nullable=False),
    Column("mac", String(17), nullable=False),
    Column("at", Float, nullable=False),
    Index("ix_wakes_waker_id", "waker_id"),
)
