"""Backfill leases and Wake-on-LAN (issue 18).

``leases.backfill`` (``grid_backfill``): backfill leases are not supply; real demand preempts
them (docs/coordinator.md, "Backfill"). ``desktops.mac`` and ``desktops.address``, and the
table ``wakes`` (``grid_wake_on_lan``): who was asked to wake which sleeping desktop
(docs/coordinator.md, "Wake-on-LAN").

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Every lease that exists before this revision is one for real demand.
    with op.batch_alter_table("leases") as batch:
        batch.add_column(
            sa.Column("backfill", sa.Boolean, nullable=False, server_default=sa.false())
        )
    # NULL until each desktop's next heartbeat.
    with op.batch_alter_table("desktops") as batch:
        batch.add_column(sa.Column("mac", sa.String(17), nullable=True))
        batch.add_column(sa.Column("address", sa.String(45), nullable=True))
    op.create_table(
        "wakes",
        sa.Column("sleeper_id", sa.String(64), primary_key=True),
        sa.Column("waker_id", sa.String(64), nullable=False),
        sa.Column("mac", sa.String(17), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
    )
    op.create_index("ix_wakes_waker_id", "wakes", ["waker_id"])


def downgrade() -> None:
    op.drop_index("ix_wakes_waker_id", table_name="wakes")
    op.drop_table("wakes")
    with op.batch_alter_table("desktops") as batch:
        batch.drop_column("address")
        batch.drop_column("mac")
    with op.batch_alter_table("leases") as batch:
        batch.drop_column("backfill")
