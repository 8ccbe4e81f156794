"""Schema version 2: run columns (backfilled from the config JSON), intervals, per-sample counts
and artifacts.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for name, kind in [("protocol", sa.Text), ("split", sa.Text), ("miou_convention", sa.Text),
                       ("group_id", sa.Text), ("provenance", sa.Text), ("pid", sa.Integer), ("host", sa.Text)]:
        op.add_column("runs", sa.Column(name, kind))
    if op.get_bind().dialect.name == "sqlite":
        op.execute("UPDATE runs SET protocol = json_extract(config, '$.protocol'), "
                   "split = json_extract(config, '$.eval_split'), "
                   "miou_convention = json_extract(config, '$.miou_convention')")
    else:
        op.execute("UPDATE runs SET protocol = config::json->>'protocol', split = config::json->>'eval_split', "
                   "miou_convention = config::json->>'miou_convention'")
    op.add_column("results", sa.Column("ci_low", sa.Double))
    op.add_column("results", sa.Column("ci_high", sa.Double))
    op.add_column("results", sa.Column("terms", sa.Text))
    op.create_table(
        "run_samples",
        sa.Column("run_id", sa.Text, sa.ForeignKey("runs.id"), primary_key=True),
        sa.Column("sample_ids", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "case_counts",
        sa.Column("run_id", sa.Text, sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("protocol", sa.Text, nullable=False),
        sa.Column("test_modalities", sa.Text, nullable=False),
        sa.Column("condition", sa.Text, nullable=False),
        sa.Column("corruption", sa.Text, nullable=False),
        sa.Column("n_samples", sa.Integer, nullable=False),
        sa.Column("n_classes", sa.Integer, nullable=False),
        sa.Column("sample_index", sa.LargeBinary, nullable=False),
        sa.Column("counts", sa.LargeBinary, nullable=False),
    )
    op.create_index("case_counts_run_id", "case_counts", ["run_id"])
    op.create_table(
        "artifacts",
        sa.Column("run_id", sa.Text, sa.ForeignKey("runs.id"), primary_key=True),
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    """Results stores are upgraded only; to go back, restore the backup `results migrate` kept."""
    raise RuntimeError("results stores are upgraded only; restore the backup `mlebench results migrate` kept")
