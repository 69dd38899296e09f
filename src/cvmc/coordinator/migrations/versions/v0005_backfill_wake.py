"""Backfill leases (``grid_backfill``): a flag on each lease. Backfill leases are not supply;
real demand preempts them (docs/coordinator.md, "Backfill").

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


def downgrade() -> None:
    with op.batch_alter_table("leases") as batch:
        batch.drop_column("backfill")
