"""The results store's schema, one for every back end (SQLAlchemy Core tables), the columns its
queries return, and the version markers. The tables are described in :mod:`mlebench.results.store`;
how a database gets to this schema is :mod:`mlebench.results.migration` (Alembic)."""

from __future__ import annotations

import sqlalchemy as sa

#: SQLite files carry ``PRAGMA application_id`` "MLEB" (0x4D4C4542), so that a foreign file is
#: told from ours before a table is read.
APPLICATION_ID = int.from_bytes(b"MLEB", "big")
#: The schema version (4 = Alembic revision "0004"); SQLite files also keep it in ``PRAGMA
#: user_version``, so that an older mlebench refuses a newer file instead of misreading it.
SCHEMA_VERSION = 4
#: Alembic's version table, named so as not to collide with a lab's own Alembic history.
VERSION_TABLE = "mlebench_alembic_version"
BUSY_TIMEOUT_S = 30.0
RUN_STATUSES = ("running", "finished", "failed")


def revision_of(version: int) -> str:
    """Alembic revision id of schema ``version``: 3 -> "0003"."""
    return f"{version:04d}"


def version_of(revision: str | None) -> int | None:
    """Schema version of an Alembic revision id ("0003" -> 3); None for a revision we do not know
    the number of (a newer mlebench's)."""
    return int(revision) if revision is not None and revision.isdigit() else None


metadata = sa.MetaData()

# Floating-point values: double precision everywhere (SQLite stores every float as REAL, 8 bytes).
DOUBLE = sa.Double()

runs = sa.Table(
    "runs", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("method", sa.Text, nullable=False),
    sa.Column("variant", sa.Text, nullable=False),
    sa.Column("dataset", sa.Text, nullable=False),
    sa.Column("train_modalities", sa.Text, nullable=False),
    sa.Column("preset", sa.Text, nullable=False),
    sa.Column("protocol", sa.Text),
    sa.Column("split", sa.Text),
    sa.Column("miou_convention", sa.Text),
    sa.Column("group_id", sa.Text),
    sa.Column("config", sa.Text, nullable=False),
    sa.Column("seed", sa.Integer, nullable=False),
    sa.Column("git_commit", sa.Text),
    sa.Column("versions", sa.Text, nullable=False),
    sa.Column("provenance", sa.Text),
    sa.Column("pid", sa.Integer),
    sa.Column("host", sa.Text),
    sa.Column("started_at", sa.Text, nullable=False),
    sa.Column("ended_at", sa.Text),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("heartbeat_at", sa.Text),
    sa.CheckConstraint("status IN ('running', 'finished', 'failed')", name="runs_status"),
)  # fmt: skip

def _case_columns() -> list[sa.Column]:
    """The run and the case a row belongs to (result rows and per-sample counts alike)."""
    return [sa.Column("run_id", sa.Text, sa.ForeignKey("runs.id"), nullable=False),
            *(sa.Column(name, sa.Text, nullable=False) for name in ("protocol", "test_modalities", "condition",
                                                                    "corruption"))]


results = sa.Table(
    "results", metadata,
    *_case_columns(),
    sa.Column("metric", sa.Text, nullable=False),
    sa.Column("class", sa.Text, nullable=False, server_default=""),
    sa.Column("value", DOUBLE),
    sa.Column("ci_low", DOUBLE),
    sa.Column("ci_high", DOUBLE),
    sa.Column("terms", sa.Text),
    sa.Column("position", sa.Integer, nullable=False, server_default="0"),
    sa.Column("ci_unit", sa.Text),
    sa.Index("results_run_id", "run_id"),
)  # fmt: skip

run_samples = sa.Table(
    "run_samples", metadata,
    sa.Column("run_id", sa.Text, sa.ForeignKey("runs.id"), primary_key=True),
    sa.Column("sample_ids", sa.LargeBinary, nullable=False),
    sa.Column("scenes", sa.LargeBinary),
)  # fmt: skip

case_counts = sa.Table(
    "case_counts", metadata,
    *_case_columns(),
    sa.Column("n_samples", sa.Integer, nullable=False),
    sa.Column("n_classes", sa.Integer, nullable=False),
    sa.Column("sample_index", sa.LargeBinary, nullable=False),
    sa.Column("counts", sa.LargeBinary, nullable=False),
    sa.Column("position", sa.Integer, nullable=False, server_default="0"),
    sa.Index("case_counts_run_id", "run_id"),
)  # fmt: skip

artifacts = sa.Table(
    "artifacts", metadata,
    sa.Column("run_id", sa.Text, sa.ForeignKey("runs.id"), primary_key=True),
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
)  # fmt: skip

#: Columns of :meth:`ResultsStore.results`, in order.
RESULT_COLUMNS = (
    "run_id", "method", "variant", "dataset", "train_modalities", "preset", "seed", "split", "miou_convention",
    "group_id", "protocol", "test_modalities", "condition", "corruption", "metric", "class", "value", "ci_low",
    "ci_high", "ci_unit",
)  # fmt: skip
#: Result columns that come from the run.
RUN_RESULT_COLUMNS = ("method", "variant", "dataset", "train_modalities", "preset", "seed", "split",
                      "miou_convention", "group_id")

#: Columns of :meth:`ResultsStore.runs`, in order (then ``state``).
RUN_COLUMNS = (
    "id", "method", "variant", "dataset", "train_modalities", "preset", "protocol", "split", "miou_convention",
    "group_id", "config", "seed", "git_commit", "versions", "provenance", "pid", "host", "started_at", "ended_at",
    "status", "error", "heartbeat_at",
)  # fmt: skip
