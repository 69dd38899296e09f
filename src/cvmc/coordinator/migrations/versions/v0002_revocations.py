"""Revocations in their own table, which re-enrolment never clears.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "revocations",
        sa.Column("desktop", sa.String(253), primary_key=True),
        sa.Column("revoked_at", sa.Float, nullable=False),
    )
    # Desktops revoked before this revision stay revoked.
    op.execute(
        "INSERT INTO revocations (desktop, revoked_at) "
        "SELECT name, revoked_at FROM desktops WHERE revoked_at IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_table("revocations")
