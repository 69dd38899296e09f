"""The initial schema: desktops, enrolments, leases, declines, samples.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "desktops",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(253), nullable=False, unique=True),
        sa.Column("department", sa.String(64), nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("salt", sa.LargeBinary(32), nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.Column("enrolled_at", sa.Float, nullable=False),
        sa.Column("revoked_at", sa.Float, nullable=True),
        sa.Column("last_seen", sa.Float, nullable=True),
        sa.Column("platform", sa.String(16), nullable=False),
        sa.Column("agent_version", sa.String(32), nullable=False),
        sa.Column("users", sa.Integer, nullable=False),
        sa.Column("may_start", sa.Boolean, nullable=False),
        sa.Column("may_run", sa.Boolean, nullable=False),
        sa.Column("hw_virt", sa.Boolean, nullable=False),
        sa.Column("cpus", sa.Integer, nullable=False),
        sa.Column("memory_free_mb", sa.Integer, nullable=False),
        sa.Column("max_vms", sa.Integer, nullable=False),
        sa.Column("busy_slots", sa.Integer, nullable=False),
        sa.Column("unleased_vms", sa.Integer, nullable=False),
        sa.Column("policy", sa.String(300), nullable=False),
    )
    op.create_table(
        "enrolments",
        sa.Column("desktop", sa.String(253), primary_key=True),
        sa.Column("generation", sa.Integer, primary_key=True),
        sa.Column("used_at", sa.Float, nullable=False),
    )
    op.create_table(
        "leases",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("desktop_id", sa.String(64), sa.ForeignKey("desktops.id"), nullable=False),
        sa.Column("vm_name", sa.String(63), nullable=False),
        sa.Column("cpus", sa.Integer, nullable=False),
        sa.Column("memory_mb", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("start_by", sa.Float, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
    )
    op.create_index("ix_leases_desktop_id", "leases", ["desktop_id"])
    op.create_table(
        "declines",
        sa.Column("desktop_id", sa.String(64), primary_key=True),
        sa.Column("vm_name", sa.String(63), primary_key=True),
        sa.Column("until", sa.Float, nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
    )
    op.create_table(
        "samples",
        sa.Column("at", sa.Float, primary_key=True),
        sa.Column("demand", sa.Text, nullable=False),
        sa.Column("supply", sa.Text, nullable=False),
        sa.Column("running", sa.Text, nullable=False),
    )


def downgrade() -> None:
    for table in ("samples", "declines", "leases", "enrolments", "desktops"):
        op.drop_table(table)
