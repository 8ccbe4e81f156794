"""Whether a run is still running: a run whose process was killed lists as stale (and can still be
marked failed), and a running run's state follows its process: this one, a reused pid, or a
process on another machine."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from mlebench.report.console import format_run_list
from mlebench.results.store import STALE, UNKNOWN_LIVENESS, ResultsStore

from ..helpers import invoke
from .stores import start_runner


def test_killed_run_lists_as_stale(tmp_path: Path):
    path = tmp_path / "r.sqlite"
    store = ResultsStore(path)
    child, run_id = start_runner(path)
    assert store.runs().set_index("id").loc[run_id, "state"] == "running"
    assert re.search(rf"{run_id} .* running ", format_run_list(store))
    child.kill()
    child.communicate(timeout=120)
    run = store.runs().set_index("id").loc[run_id]
    assert (run["status"], run["state"]) == ("running", STALE)
    assert re.search(rf"{run_id} .* stale \(process gone\) ", format_run_list(store)), format_run_list(store)
    result = invoke("results", "list", "--results", str(path))
    assert result.exit_code == 0 and "stale (process gone)" in result.output
    # The store is still fully writable and the stale run can be marked failed.
    store.fail_run(run_id, "killed")
    assert store.runs().set_index("id").loc[run_id, "state"] == "failed"


def test_running_state_of_live_reused_and_foreign_processes(tmp_path: Path):
    path = tmp_path / "r.sqlite"
    store = ResultsStore(path)
    run_id = store.start_run(method="m", variant="v", dataset="synthetic", train_modalities=["rgb"], preset="tiny",
                             config={}, seed=0, versions={})
    state = lambda: store.runs().set_index("id").loc[run_id, "state"]  # noqa: E731
    assert state() == "running"  # this very process
    with sqlite3.connect(path) as conn:  # the pid now belongs to a process younger than the run
        conn.execute("UPDATE runs SET started_at = '2000-01-01T00:00:00.000000+00:00'")
    assert state() == STALE
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE runs SET host = 'another-machine'")
    assert state() == UNKNOWN_LIVENESS == "running?"
    assert "running?" in format_run_list(store)
