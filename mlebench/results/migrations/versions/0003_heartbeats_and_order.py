"""Schema version 3: a heartbeat per run (liveness across hosts) and an explicit write order of
result rows and counts (SQLite's rowid, which PostgreSQL lacks, gave it before).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("heartbeat_at", sa.Text))
    op.add_column("results", sa.Column("position", sa.Integer, nullable=False, server_default="0"))
    op.add_column("case_counts", sa.Column("position", sa.Integer, nullable=False, server_default="0"))
    if op.get_bind().dialect.name == "sqlite":
        # Rows written before this version kept their order in the rowid: make it explicit.
        op.execute("UPDATE results SET position = rowid")
        op.execute("UPDATE case_counts SET position = rowid")
        op.execute("PRAGMA user_version = 3")


def downgrade() -> None:
    """Results stores are upgraded only; to go back, restore the backup `results migrate` kept."""
    raise RuntimeError("results stores are upgraded only; restore the backup `mlebench results migrate` kept")
