"""Schema migration: a version-1 store is refused untouched until `mlebench results migrate`, which
keeps a backup; migrating again is a no-op, an existing backup is never overwritten, and a
migrated run without per-sample counts says why it cannot be compared."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from mlebench.errors import ConfigError
from mlebench.report.compare import compare_runs
from mlebench.results import SCHEMA_VERSION, ResultsStore, migrate

from ..helpers import invoke
from .stores import store_with


_V1_SCHEMA = """
CREATE TABLE runs (id TEXT PRIMARY KEY, method TEXT NOT NULL, variant TEXT NOT NULL, dataset TEXT NOT NULL,
    train_modalities TEXT NOT NULL, preset TEXT NOT NULL, config TEXT NOT NULL, seed INTEGER NOT NULL,
    git_commit TEXT, versions TEXT NOT NULL, started_at TEXT NOT NULL, ended_at TEXT,
    status TEXT NOT NULL CHECK (status IN ('running', 'finished', 'failed')), error TEXT);
CREATE TABLE results (run_id TEXT NOT NULL REFERENCES runs(id), protocol TEXT NOT NULL,
    test_modalities TEXT NOT NULL, condition TEXT NOT NULL, corruption TEXT NOT NULL, metric TEXT NOT NULL,
    class TEXT NOT NULL DEFAULT '', value REAL);
CREATE INDEX results_run_id ON results(run_id);
INSERT INTO runs VALUES ('r1', 'mlesam', 'unified+aux', 'synthetic', 'rgb,depth', 'tiny',
    '{"protocol": "full", "eval_split": "val", "miou_convention": "present"}', 3, NULL, '{}',
    '2026-01-01T00:00:00+00:00', '2026-01-01T00:01:00+00:00', 'finished', NULL);
INSERT INTO results VALUES ('r1', 'full', 'rgb,depth', 'all', 'none', 'miou', '', 0.25);
PRAGMA application_id = 1296844098;
PRAGMA user_version = 1;
"""


def _v1_store(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(_V1_SCHEMA)
    conn.close()
    return path


def test_an_old_store_is_refused_untouched_then_migrated(tmp_path: Path):
    path = _v1_store(tmp_path / "old.sqlite")
    before = path.read_bytes()
    with pytest.raises(ConfigError, match=r"has schema version 1; .*`mlebench results migrate --results "):
        ResultsStore(path)
    result = invoke("results", "list", "--results", str(path))
    assert result.exit_code == 1 and "mlebench results migrate" in result.output
    assert path.read_bytes() == before  # never silently rewritten
    result = invoke("results", "migrate", "--results", str(path))
    assert result.exit_code == 0, result.output
    backup = tmp_path / "old.sqlite.v1.bak"
    assert f"original kept at {backup}" in result.output and backup.read_bytes() == before
    store = ResultsStore(path)
    run = store.runs().iloc[0]
    assert (run["protocol"], run["split"], run["miou_convention"], run["seed"]) == ("full", "val", "present", 3)
    frame = store.results()
    assert frame["value"].tolist() == [0.25] and math.isnan(frame["ci_low"].iloc[0])
    assert store.case_counts("r1") == []
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()
    # migrating again is a no-op; a second old file with an existing backup is refused
    assert migrate(path) == (SCHEMA_VERSION, path)
    other = _v1_store(tmp_path / "other.sqlite")
    (tmp_path / "other.sqlite.v1.bak").write_text("keep me")
    with pytest.raises(ConfigError, match="backup .*other.sqlite.v1.bak already exists"):
        migrate(other)
    assert (tmp_path / "other.sqlite.v1.bak").read_text() == "keep me"
    # a run without per-sample counts cannot be compared, and says why
    ids = store_with(path, [{"ids": ["x"], "counts": np.ones((1, 3, 25), dtype=np.int64)}])
    with pytest.raises(ConfigError, match="run r1 has no per-sample counts"):
        compare_runs(ResultsStore(path), "r1", ids[0])
