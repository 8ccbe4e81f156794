"""The results store's schema (version 2) and the columns its queries return; the tables are
described in :mod:`mlebench.results.store`."""

from __future__ import annotations

APPLICATION_ID = int.from_bytes(b"MLEB", "big")  # 0x4D4C4542
SCHEMA_VERSION = 2
BUSY_TIMEOUT_S = 30.0
RUN_STATUSES = ("running", "finished", "failed")

#: Columns of :meth:`ResultsStore.results`, in order.
RESULT_COLUMNS = (
    "run_id",
    "method",
    "variant",
    "dataset",
    "train_modalities",
    "preset",
    "seed",
    "split",
    "miou_convention",
    "group_id",
    "protocol",
    "test_modalities",
    "condition",
    "corruption",
    "metric",
    "class",
    "value",
    "ci_low",
    "ci_high",
)
#: Result columns that come from the run.
_RUN_RESULT_COLUMNS = ("method", "variant", "dataset", "train_modalities", "preset", "seed", "split",
                       "miou_convention", "group_id")

#: Columns of :meth:`ResultsStore.runs`, in order.
RUN_COLUMNS = (
    "id",
    "method",
    "variant",
    "dataset",
    "train_modalities",
    "preset",
    "protocol",
    "split",
    "miou_convention",
    "group_id",
    "config",
    "seed",
    "git_commit",
    "versions",
    "provenance",
    "pid",
    "host",
    "started_at",
    "ended_at",
    "status",
    "error",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    method TEXT NOT NULL,
    variant TEXT NOT NULL,
    dataset TEXT NOT NULL,
    train_modalities TEXT NOT NULL,
    preset TEXT NOT NULL,
    protocol TEXT,
    split TEXT,
    miou_convention TEXT,
    group_id TEXT,
    config TEXT NOT NULL,
    seed INTEGER NOT NULL,
    git_commit TEXT,
    versions TEXT NOT NULL,
    provenance TEXT,
    pid INTEGER,
    host TEXT,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    status TEXT NOT NULL CHECK (status IN ('running', 'finished', 'failed')),
    error TEXT
);
CREATE TABLE IF NOT EXISTS results (
    run_id TEXT NOT NULL REFERENCES runs(id),
    protocol TEXT NOT NULL,
    test_modalities TEXT NOT NULL,
    condition TEXT NOT NULL,
    corruption TEXT NOT NULL,
    metric TEXT NOT NULL,
    class TEXT NOT NULL DEFAULT '',
    value REAL,
    ci_low REAL,
    ci_high REAL,
    terms TEXT
);
CREATE INDEX IF NOT EXISTS results_run_id ON results(run_id);
CREATE TABLE IF NOT EXISTS run_samples (
    run_id TEXT PRIMARY KEY REFERENCES runs(id),
    sample_ids BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS case_counts (
    run_id TEXT NOT NULL REFERENCES runs(id),
    protocol TEXT NOT NULL,
    test_modalities TEXT NOT NULL,
    condition TEXT NOT NULL,
    corruption TEXT NOT NULL,
    n_samples INTEGER NOT NULL,
    n_classes INTEGER NOT NULL,
    sample_index BLOB NOT NULL,
    counts BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS case_counts_run_id ON case_counts(run_id);
CREATE TABLE IF NOT EXISTS artifacts (
    run_id TEXT NOT NULL REFERENCES runs(id),
    name TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (run_id, name)
);
"""

# Schema 1 -> 2: new run columns (backfilled from the config JSON), intervals, per-sample counts.
_MIGRATE_1_TO_2 = """
ALTER TABLE runs ADD COLUMN protocol TEXT;
ALTER TABLE runs ADD COLUMN split TEXT;
ALTER TABLE runs ADD COLUMN miou_convention TEXT;
ALTER TABLE runs ADD COLUMN group_id TEXT;
ALTER TABLE runs ADD COLUMN provenance TEXT;
ALTER TABLE runs ADD COLUMN pid INTEGER;
ALTER TABLE runs ADD COLUMN host TEXT;
UPDATE runs SET protocol = json_extract(config, '$.protocol'),
                split = json_extract(config, '$.eval_split'),
                miou_convention = json_extract(config, '$.miou_convention');
ALTER TABLE results ADD COLUMN ci_low REAL;
ALTER TABLE results ADD COLUMN ci_high REAL;
ALTER TABLE results ADD COLUMN terms TEXT
"""

_SQLITE_MAGIC = b"SQLite format 3\x00"
# Primary SQLite result codes (sqlite3.Error.sqlite_errorcode & 0xFF).
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY, _SQLITE_CORRUPT = 5, 6, 8, 11
_SQLITE_CANTOPEN, _SQLITE_NOTADB = 14, 26
