"""Schema version 4: what each bootstrap interval resampled (``results.ci_unit``: "scene" or
"image") and each scored sample's scene (``run_samples.scenes``), so that later statistics
(``mlebench compare``, report marks) resample the same units. Rows of older runs keep NULL:
their intervals resampled images.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("results", sa.Column("ci_unit", sa.Text))
    op.add_column("run_samples", sa.Column("scenes", sa.LargeBinary))
    if op.get_bind().dialect.name == "sqlite":
        op.execute("PRAGMA user_version = 4")


def downgrade() -> None:
    """Results stores are upgraded only; to go back, restore the backup `results migrate` kept."""
    raise RuntimeError("results stores are upgraded only; restore the backup `mlebench results migrate` kept")
