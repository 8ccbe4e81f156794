"""Schema version 1: runs and their result rows (mlebench 0.1, before intervals and counts).

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("method", sa.Text, nullable=False),
        sa.Column("variant", sa.Text, nullable=False),
        sa.Column("dataset", sa.Text, nullable=False),
        sa.Column("train_modalities", sa.Text, nullable=False),
        sa.Column("preset", sa.Text, nullable=False),
        sa.Column("config", sa.Text, nullable=False),
        sa.Column("seed", sa.Integer, nullable=False),
        sa.Column("git_commit", sa.Text),
        sa.Column("versions", sa.Text, nullable=False),
        sa.Column("started_at", sa.Text, nullable=False),
        sa.Column("ended_at", sa.Text),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("error", sa.Text),
        sa.CheckConstraint("status IN ('running', 'finished', 'failed')", name="runs_status"),
    )
    op.create_table(
        "results",
        sa.Column("run_id", sa.Text, sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("protocol", sa.Text, nullable=False),
        sa.Column("test_modalities", sa.Text, nullable=False),
        sa.Column("condition", sa.Text, nullable=False),
        sa.Column("corruption", sa.Text, nullable=False),
        sa.Column("metric", sa.Text, nullable=False),
        sa.Column("class", sa.Text, nullable=False, server_default=""),
        sa.Column("value", sa.Double),
    )
    op.create_index("results_run_id", "results", ["run_id"])


def downgrade() -> None:
    """Results stores are upgraded only; to go back, restore the backup `results migrate` kept."""
    raise RuntimeError("results stores are upgraded only; restore the backup `mlebench results migrate` kept")
