"""What the operator's view needs: each desktop's total memory and what holds its VT-x, the
declines with the agent's detail (recent ones: the dashboard's table, the admin API), and the
core-seconds delivered per department and VM type.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # 0 and NULL until each desktop's next heartbeat reports them.
    with op.batch_alter_table("desktops") as batch:
        batch.add_column(
            sa.Column("memory_total_mb", sa.Integer, nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("hw_virt_held_by", sa.String(300), nullable=True))
    op.create_table(
        "decline_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("desktop_id", sa.String(64), nullable=False),
        sa.Column("vm_name", sa.String(63), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("detail", sa.String(300), nullable=False),
    )
    op.create_index("ix_decline_events_at", "decline_events", ["at"])
    op.create_table(
        "usage",
        sa.Column("department", sa.String(64), primary_key=True),
        sa.Column("vm_name", sa.String(63), primary_key=True),
        sa.Column("core_seconds", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("usage")
    op.drop_index("ix_decline_events_at", table_name="decline_events")
    op.drop_table("decline_events")
    with op.batch_alter_table("desktops") as batch:
        batch.drop_column("hw_virt_held_by")
        batch.drop_column("memory_total_mb")
