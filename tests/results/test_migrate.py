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


def _differences(url) -> list:
    """What Alembic's autogenerate finds between the database at ``url`` and the schema module."""
    import sqlalchemy as sa
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from mlebench.results.schema import VERSION_TABLE, metadata

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        # SQLite reflects a '' default as text Alembic cannot compare; PostgreSQL compares it.
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE, "compare_type": True,
                                                         "compare_server_default": engine.name != "sqlite"})
        return compare_metadata(context, metadata)


def test_migrations_from_an_empty_database_give_the_schema_a_new_store_gets(store_target):
    """A new store is created from schema.py and stamped; the migrations from nothing must end at
    exactly those tables (columns, types, nullability, defaults, indexes, keys)."""
    import sqlalchemy as sa
    from alembic import command

    from mlebench.results.migration import alembic_config, current_revision, head_revision
    from mlebench.results.target import parse_target

    url = parse_target(store_target).url
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "head")
    with engine.connect() as conn:
        assert current_revision(conn) == head_revision() == f"{SCHEMA_VERSION:04d}"
    assert _differences(url) == []
    created = ResultsStore(store_target if isinstance(store_target, str) else store_target.with_name("new.sqlite"))
    assert _differences(created.target.url) == []


def test_an_older_database_is_refused_untouched_then_migrated(postgres_url):
    """PostgreSQL: a store at schema 2 (the migrations up to 0002) is refused for reading and
    writing, naming `results migrate`, which upgrades it in place keeping its rows."""
    import sqlalchemy as sa
    from alembic import command

    from mlebench.results.migration import alembic_config

    from ..postgres import sql

    engine = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0002")
    sql(postgres_url, "INSERT INTO runs (id, method, variant, dataset, train_modalities, preset, config, seed, "
                      "versions, started_at, status) VALUES ('r1', 'm', 'v', 'synthetic', 'rgb', 'tiny', '{}', 0, "
                      "'{}', '2026-01-01T00:00:00+00:00', 'finished')")
    sql(postgres_url, "INSERT INTO results (run_id, protocol, test_modalities, condition, corruption, metric, value, "
                      "ci_low, ci_high) VALUES ('r1', 'full', 'rgb', 'all', 'none', 'miou', 0.25, 0.2, 0.3)")
    for readonly in (False, True):
        with pytest.raises(ConfigError, match=rf"has schema version 2; this mlebench reads version {SCHEMA_VERSION}\. Upgrade it "
                                              r"with `mlebench results migrate --results postgresql\+psycopg://"):
            ResultsStore(postgres_url, readonly=readonly)
    assert sql(postgres_url, "SELECT version_num FROM mlebench_alembic_version") == [("0002",)]
    result = invoke("results", "migrate", "--results", postgres_url)
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith(f"from schema version 2 to {SCHEMA_VERSION}")
    store = ResultsStore(postgres_url)
    assert store.results()["value"].tolist() == [0.25]
    assert store.results()["ci_unit"].tolist() == ["image"]  # an older run's interval resampled images
    assert store.runs().iloc[0]["heartbeat_at"] is None
    assert _differences(postgres_url) == []
    again = invoke("results", "migrate", "--results", postgres_url)
    assert again.exit_code == 0 and f"is already at schema version {SCHEMA_VERSION}" in again.output
