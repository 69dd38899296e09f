"""Each held lease's slot on its desktop, so that a VM that runs a job (the schedd names it by
its tunnel address, which names a desktop and slot) is revoked last.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Nullable: an offered lease has no slot yet; held ones get theirs at their next heartbeat.
    with op.batch_alter_table("leases") as batch:
        batch.add_column(sa.Column("slot", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("leases") as batch:
        batch.drop_column("slot")
