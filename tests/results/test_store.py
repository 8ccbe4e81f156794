"""The results store's API on both back ends (an SQLite file and a PostgreSQL database; the
``store_target`` fixture): round trips, atomic runs, killed and concurrent writers; then, for
SQLite files, foreign files, a newer schema and an empty file adopted (exports:
report/test_export.py; SQLite file handling: results/test_sqlite.py; PostgreSQL's own guards:
results/test_postgres.py)."""

from __future__ import annotations

import io
import json
import math
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import traceback
from pathlib import Path

import pandas as pd
import pytest

from mlebench.errors import ConfigError
from mlebench.report.export import EXPORT_COLUMNS
from mlebench.results import (
    APPLICATION_ID,
    RESULT_COLUMNS,
    SCHEMA_VERSION,
    ResultRow,
    ResultsStore,
)

from ..helpers import REPO_ROOT
from ..postgres import sql
from .stores import ROWS, begin_run, count_rows, expected_frame, export_text


def _sql(path: Path, query: str, params=()) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(query, params).fetchall()
    finally:
        conn.close()


# -- round trip ------------------------------------------------------------------------------


def test_round_trip(store_target) -> None:
    store = ResultsStore(store_target)
    run_id = begin_run(store)
    assert len(run_id) == 32 and int(run_id, 16) >= 0

    store.finish_run(run_id, ROWS)

    frame = store.results()
    assert list(frame.columns) == list(RESULT_COLUMNS)
    pd.testing.assert_frame_equal(frame, expected_frame(run_id))
    assert math.isnan(frame.loc[2, "value"])
    assert frame.loc[0, "value"] == ROWS[0].value  # no precision lost

    runs = store.runs()
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["id"] == run_id
    assert run["status"] == "finished"
    assert run["ended_at"] >= run["started_at"]
    assert run["started_at"].endswith("+00:00")
    assert run["train_modalities"] == "rgb,depth"
    assert run["config"] == {"lr": 1e-4, "epochs": 2}
    assert run["versions"] == {"mlebench": "0.1.0"}
    assert run["seed"] == 0 and run["git_commit"] == "0" * 40
    assert run["error"] is None
    assert run["heartbeat_at"] >= run["started_at"] and run["state"] == "finished"

    # Reopening an existing store keeps everything.
    pd.testing.assert_frame_equal(ResultsStore(store_target).results(), expected_frame(run_id))
    assert store.backend.version == SCHEMA_VERSION


def test_a_new_file_is_marked_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "folder" / "results.sqlite"
    ResultsStore(path)
    assert path.is_file()
    assert _sql(path, "PRAGMA application_id") == [(APPLICATION_ID,)]
    assert _sql(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert _sql(path, "PRAGMA journal_mode") == [("wal",)]
    assert _sql(path, "SELECT version_num FROM mlebench_alembic_version") == [(f"{SCHEMA_VERSION:04d}",)]


def test_empty_store(store_target) -> None:
    store = ResultsStore(store_target)
    assert store.runs().empty and store.results().empty
    assert list(store.results().columns) == list(RESULT_COLUMNS)
    assert export_text(store, "csv") == ",".join(EXPORT_COLUMNS) + "\n"
    assert json.loads(export_text(store, "json")) == []


def test_runs_newest_first_and_filter_by_run_id(store_target) -> None:
    store = ResultsStore(store_target)
    first = begin_run(store, seed=1)
    second = begin_run(store, seed=2)
    store.finish_run(first, ROWS[:1])
    store.finish_run(second, ROWS[1:2])
    assert list(store.runs()["id"]) == [second, first]
    assert list(store.results()["run_id"]) == [first, second]
    assert list(store.results(run_ids=[second])["run_id"]) == [second]
    with pytest.raises(ConfigError, match="nosuchrun"):
        store.results(run_ids=["nosuchrun"])


def test_default_versions_come_from_package_versions(store_target) -> None:
    store = ResultsStore(store_target)
    run_id = begin_run(store, versions=None)
    versions = store.runs().set_index("id").loc[run_id, "versions"]
    assert set(versions) == {"mlebench", "torch", "numpy"}  # a method adds its own packages


def test_bad_arguments(store_target) -> None:
    store = ResultsStore(store_target)
    with pytest.raises(TypeError, match="train_modalities"):
        begin_run(store, train_modalities="rgb")  # would silently become "r,g,b"
    run_id = begin_run(store)
    with pytest.raises(ConfigError, match="status"):
        store.finish_run(run_id, ROWS, status="done")
    with pytest.raises(ConfigError, match="no run"):
        store.finish_run("f" * 32, ROWS)
    store.finish_run(run_id, ROWS)
    with pytest.raises(ConfigError, match="already ended"):
        store.finish_run(run_id, ROWS)
    assert len(store.results()) == len(ROWS)


# -- unfinished and failed runs --------------------------------------------------------------


def test_unfinished_runs_are_excluded_by_default(store_target) -> None:
    store = ResultsStore(store_target)
    finished = begin_run(store)
    running = begin_run(store)
    failed = begin_run(store)
    failed_with_rows = begin_run(store)
    store.finish_run(finished, ROWS)
    store.fail_run(failed, "CUDA out of memory")
    store.finish_run(failed_with_rows, ROWS[:2], status="failed")

    assert set(store.results()["run_id"]) == {finished}
    exported = json.loads(export_text(store, "json"))
    assert {r["run_id"] for r in exported} == {finished}
    assert set(pd.read_csv(io.StringIO(export_text(store, "csv")))["run_id"]) == {finished}

    everything = store.results(include_unfinished=True)
    assert everything["run_id"].value_counts().to_dict() == {finished: 4, failed_with_rows: 2}

    runs = store.runs().set_index("id")
    assert runs.loc[running, "status"] == "running" and runs.loc[running, "ended_at"] is None
    assert runs.loc[failed, "status"] == "failed"
    assert runs.loc[failed, "error"] == "CUDA out of memory"
    assert runs.loc[failed, "ended_at"] is not None
    with pytest.raises(ConfigError, match="already ended"):
        store.fail_run(finished, "too late")


# -- killed runs and atomic finish -----------------------------------------------------------

_CHILD = """
import sys, time
from mlebench.results import ResultRow, ResultsStore

store = ResultsStore(sys.argv[1])
run_id = store.start_run(method="mlesam", variant="base", dataset="deliver",
                         train_modalities=["rgb"], preset="smoke", config={}, seed=0,
                         versions={})
print(run_id, flush=True)

def rows():
    for i in range(100):
        if i == 50:
            print("inside finish_run", flush=True)
            time.sleep(600)
        yield ResultRow("full", ("rgb",), "all", "", "mIoU", i / 100)

if sys.argv[2] == "finish":
    store.finish_run(run_id, rows())
else:
    print("training", flush=True)
    time.sleep(600)
"""


def _run_and_kill(target, mode: str) -> str:
    """Start a run in a child process, wait until it reaches ``mode``'s sleep, SIGKILL it."""
    pythonpath = os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": pythonpath}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(target), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        run_id = child.stdout.readline().strip()
        reached = child.stdout.readline().strip()
        assert reached, f"child died early: {child.stderr.read()}"
        if mode == "finish" and isinstance(target, Path):
            # The child really is inside the write transaction: the write lock is taken.
            probe = sqlite3.connect(target, timeout=0, isolation_level=None)
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                probe.execute("BEGIN IMMEDIATE")
            probe.close()
        elif mode == "finish":  # PostgreSQL: the child's session is inside a transaction
            assert sql(target, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                               "AND state = 'idle in transaction'") == [(1,)]
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate()
    assert child.returncode == -signal.SIGKILL
    return run_id


@pytest.mark.parametrize("mode", ["train", "finish"])
def test_killed_run_leaves_running_row_and_no_results(store_target, mode: str) -> None:
    store = ResultsStore(store_target)
    run_id = _run_and_kill(store_target, mode)

    runs = store.runs()
    assert list(runs["id"]) == [run_id]
    assert runs.iloc[0]["status"] == "running"
    assert runs.iloc[0]["ended_at"] is None
    assert count_rows(store, "results") == 0
    assert store.results(include_unfinished=True).empty

    # The file is still fully usable, including for writes.
    other = begin_run(store)
    store.finish_run(other, ROWS)
    pd.testing.assert_frame_equal(store.results(), expected_frame(other))


def test_exception_inside_finish_run_writes_nothing(store_target) -> None:
    store = ResultsStore(store_target)
    run_id = begin_run(store)

    def rows():
        yield from ROWS[:3]
        raise RuntimeError("evaluation crashed")

    with pytest.raises(RuntimeError, match="evaluation crashed"):
        store.finish_run(run_id, rows())
    assert count_rows(store, "results") == 0
    assert store.runs().iloc[0]["status"] == "running"

    # A bad row halfway is rolled back the same way.
    with pytest.raises(TypeError):
        store.finish_run(run_id, [ROWS[0], "not a row"])
    assert count_rows(store, "results") == 0

    # The run can still be finished (or failed) afterwards.
    store.finish_run(run_id, ROWS)
    pd.testing.assert_frame_equal(store.results(), expected_frame(run_id))


# -- concurrent writers ----------------------------------------------------------------------

N_WORKERS, N_RUNS, N_ROWS = 8, 3, 50


def _value(worker: int, run: int, row: int) -> float:
    return worker * 1e6 + run * 1e3 + row


def _writer(path: str, worker: int, go, errors) -> None:
    try:
        go.wait(60)
        store = ResultsStore(path)  # the file does not exist yet: creation races too
        for run in range(N_RUNS):
            run_id = store.start_run(
                method="mlesam", variant="base", dataset="deliver", train_modalities=["rgb"],
                preset="smoke", config={"worker": worker}, seed=run, versions={},
            )
            rows = [
                ResultRow("full", ("rgb",), "all", "", "IoU", _value(worker, run, i), f"c{i}")
                for i in range(N_ROWS)
            ]
            store.finish_run(run_id, rows)
        errors.put(None)
    except BaseException:  # report everything to the parent, including 'database is locked'
        errors.put(traceback.format_exc())


def test_concurrent_writers(store_target, tmp_path: Path) -> None:
    """8 processes each write 3 runs into one store that does not exist yet (SQLite: no file;
    PostgreSQL: an empty database), all at once: 24 finished runs, every row present once, no
    lock error."""
    path = tmp_path / "shared" / "results.db" if isinstance(store_target, Path) else store_target
    ctx = multiprocessing.get_context("fork")
    go, errors = ctx.Event(), ctx.Queue()
    workers = [
        ctx.Process(target=_writer, args=(str(path), w, go, errors)) for w in range(N_WORKERS)
    ]
    for proc in workers:
        proc.start()
    go.set()
    reports = [errors.get(timeout=300) for _ in workers]
    for proc in workers:
        proc.join(60)
    assert reports == [None] * N_WORKERS, "\n".join(filter(None, reports))
    assert [proc.exitcode for proc in workers] == [0] * N_WORKERS

    store = ResultsStore(path)
    runs = store.runs()
    assert len(runs) == N_WORKERS * N_RUNS
    assert (runs["status"] == "finished").all()
    frame = store.results()
    assert len(frame) == N_WORKERS * N_RUNS * N_ROWS
    assert sorted(frame["value"]) == sorted(
        _value(w, r, i) for w in range(N_WORKERS) for r in range(N_RUNS) for i in range(N_ROWS)
    )
    assert frame.groupby("run_id").size().eq(N_ROWS).all()


# -- foreign files ---------------------------------------------------------------------------


def _text_file(path: Path) -> None:
    path.write_text("run,value\nabc,1\n")


def _other_table(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE photos (name TEXT)")
    conn.execute("INSERT INTO photos VALUES ('cat.jpg')")
    conn.commit()
    conn.close()


def _other_application(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id = 1234")
    conn.execute("CREATE TABLE runs (id TEXT)")  # even with a table of the same name
    conn.commit()
    conn.close()


def _other_application_no_tables(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id = 1234")
    conn.close()


def _binary_junk(path: Path) -> None:
    path.write_bytes(b"\x00\x01\x02" * 1000)


@pytest.mark.parametrize(
    "make",
    [_text_file, _other_table, _other_application, _other_application_no_tables, _binary_junk],
)
def test_refuses_foreign_files(tmp_path: Path, make) -> None:
    path = tmp_path / "not-ours.db"
    make(path)
    before = path.read_bytes()
    listing = sorted(os.listdir(tmp_path))
    with pytest.raises(ConfigError, match="is not an mlebench results file") as info:
        ResultsStore(path)
    assert str(path) in str(info.value)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == listing  # no journal or WAL files left behind


def test_refuses_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not an mlebench results file"):
        ResultsStore(tmp_path)


def test_refuses_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    ResultsStore(path)
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(ConfigError, match="newer"):
        ResultsStore(path)


def test_adopts_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    path.touch()
    store = ResultsStore(path)
    run_id = begin_run(store)
    store.finish_run(run_id, ROWS)
    assert _sql(path, "PRAGMA application_id") == [(APPLICATION_ID,)]
    assert len(store.results()) == len(ROWS)
