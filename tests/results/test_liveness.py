"""Whether a run is still running, on any host: a run whose process was killed lists as stale at
once on its own host (and can still be marked failed); on another host it is judged by its
heartbeat, which a live job writes from a background thread and a killed one stops writing; stale
runs are reaped; durations parse. On both back ends where a store is involved."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from mlebench.errors import ConfigError
from mlebench.report.console import format_run_list
from mlebench.results.heartbeat import Heartbeat
from mlebench.results.liveness import STALE, parse_duration, run_state
from mlebench.results.store import ResultsStore

from ..helpers import invoke, subprocess_env
from .stores import start_runner


def _set(store: ResultsStore, run_id: str, **values) -> None:
    """Change a run's row behind the store's back (what another host's process would look like)."""
    table = sa.table("runs", sa.column("id"), *[sa.column(k) for k in values])
    with store.backend.transaction(writing=True) as conn:
        conn.execute(table.update().where(table.c.id == run_id).values(**values))


def _state(store: ResultsStore, run_id: str, grace: float = 600) -> str:
    return store.runs(grace=grace).set_index("id").loc[run_id, "state"]


def test_killed_run_lists_as_stale(store_target):
    store = ResultsStore(store_target)
    child, run_id = start_runner(store_target)
    assert _state(store, run_id) == "running"
    assert re.search(rf"{run_id} .* running ", format_run_list(store))
    child.kill()
    child.communicate(timeout=120)
    run = store.runs().set_index("id").loc[run_id]
    assert (run["status"], run["state"]) == ("running", STALE)
    assert re.search(rf"{run_id} .* stale \(process gone\) ", format_run_list(store)), format_run_list(store)
    result = invoke("results", "list", "--results", str(store_target))
    assert result.exit_code == 0 and "stale (process gone)" in result.output
    # The store is still fully writable and the stale run can be marked failed.
    store.fail_run(run_id, "killed")
    assert _state(store, run_id) == "failed"


def test_running_state_of_live_reused_and_foreign_processes(tmp_path: Path):
    store = ResultsStore(tmp_path / "r.sqlite")
    run_id = store.start_run(method="m", variant="v", dataset="synthetic", train_modalities=["rgb"], preset="tiny",
                             config={}, seed=0, versions={})
    assert _state(store, run_id) == "running"  # this very process
    assert _state(store, run_id, grace=0) == "running"  # its process lives: no heartbeat needed
    _set(store, run_id, started_at="2000-01-01T00:00:00.000000+00:00")  # the pid is younger than the run
    assert _state(store, run_id) == STALE
    # Another machine: its heartbeat decides; the heartbeat is fresh, the start long ago.
    _set(store, run_id, host="another-machine")
    assert _state(store, run_id) == "running"
    assert _state(store, run_id, grace=0) .startswith("stale (no heartbeat since ")
    old = (datetime.now(timezone.utc) - timedelta(minutes=11)).isoformat(timespec="microseconds")
    _set(store, run_id, heartbeat_at=old)
    expected = f"stale (no heartbeat since {old[:10]} {old[11:19]} UTC)"
    assert _state(store, run_id) == expected  # the default grace: 10 min
    assert _state(store, run_id, grace=12 * 60) == "running"
    assert expected in format_run_list(store)
    # A run from before heartbeats is judged by its start.
    _set(store, run_id, heartbeat_at=None)
    assert _state(store, run_id).startswith("stale (no heartbeat since 2000-01-01 00:00:00 UTC)")


def test_run_state_rules():
    now = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    beat = (now - timedelta(seconds=30)).isoformat()
    assert run_state("finished", None, None, None, None, now) == "finished"
    assert run_state("running", None, "elsewhere", beat, beat, now, grace=60) == "running"
    assert run_state("running", None, "elsewhere", beat, beat, now, grace=29).startswith("stale")
    assert run_state("running", None, None, None, None, now) == "stale (no heartbeat since never)"


def test_durations():
    assert [parse_duration(t) for t in ["0", "45", "30s", "10m", "1.5h", "1d", " 2m "]] == [
        0, 45, 30, 600, 5400, 86400, 120]
    for bad in ["", "ten", "-5", "5 minutes", "inf", "1e3"]:
        with pytest.raises(ConfigError, match=r"--grace .* (is not a duration|must be)"):
            parse_duration(bad)
    result = invoke("results", "list", "--grace", "soon")
    assert result.exit_code == 2 and "Invalid value for --grace: 'soon' is not a duration" in result.output


def test_heartbeat_beats_while_the_block_runs_and_stops_with_it(store_target):
    store = ResultsStore(store_target)
    run_id = store.start_run(method="m", variant="v", dataset="synthetic", train_modalities=["rgb"], preset="tiny",
                             config={}, seed=0, versions={})
    first = store.runs().set_index("id").loc[run_id, "heartbeat_at"]
    with Heartbeat(store, run_id, interval=0.05) as heartbeat:
        deadline = time.monotonic() + 30
        while heartbeat.beats < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert heartbeat.beats >= 3 and not heartbeat._thread.is_alive()
    last = store.runs().set_index("id").loc[run_id, "heartbeat_at"]
    assert last > first
    time.sleep(0.2)
    assert store.runs().set_index("id").loc[run_id, "heartbeat_at"] == last  # stopped with the block
    # A reaped run: the heartbeat says so and stops.
    store.fail_run(run_id, "reaped elsewhere")
    said = []
    with Heartbeat(store, run_id, interval=0.02, warn=said.append) as heartbeat:
        heartbeat._thread.join(30)
    assert heartbeat.beats == 0 and said == [
        f"warning: run {run_id} is no longer running in {store.target} (reaped?); its results will not be stored"]
    with pytest.raises(ConfigError, match="heartbeat_interval must be > 0"):
        Heartbeat(store, run_id, interval=0)


_ELSEWHERE = r"""
import sys, time
from mlebench.results.heartbeat import Heartbeat
from mlebench.results.store import ResultsStore
import mlebench.results.liveness as liveness
store = ResultsStore(sys.argv[1])
run_id = store.start_run(method="m", variant="v", dataset="synthetic", train_modalities=["rgb"], preset="tiny",
                         config={}, seed=0, versions={})
with Heartbeat(store, run_id, interval=float(sys.argv[2])):
    print(run_id, flush=True)
    time.sleep(600)
"""


def test_a_killed_writer_of_another_host_becomes_stale_and_is_reaped(store_target):
    """A writer beating every 0.2 s is killed with SIGKILL; seen from "another host" (its host
    renamed in the store, so the process check cannot help), it stays running while it beats
    and for the grace period after, then is stale; reap marks it, and only it, failed."""
    store = ResultsStore(store_target)
    bystander = store.start_run(method="m", variant="v", dataset="synthetic", train_modalities=["rgb"],
                                preset="tiny", config={}, seed=1, versions={})  # this process: alive
    child = subprocess.Popen([sys.executable, "-c", _ELSEWHERE, str(store_target), "0.2"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=subprocess_env())
    try:
        run_id = child.stdout.readline().strip()
        assert run_id, child.stderr.read()
        _set(store, run_id, host="node-17")
        time.sleep(1.5)  # well past a 1 s grace: only beats keep it running
        assert _state(store, run_id, grace=1) == "running"
    finally:
        child.kill()
        child.communicate(timeout=60)
    assert _state(store, run_id, grace=60) == "running"  # within the grace period after its last beat
    time.sleep(1.5)
    state = _state(store, run_id, grace=1)
    assert state.startswith("stale (no heartbeat since ")
    dry = invoke("results", "reap", "--grace", "1s", "--dry-run", "--results", str(store_target))
    assert dry.exit_code == 0 and f"would reap {run_id} m seed 0: {state}" in dry.output
    assert _state(store, run_id, grace=1) == state  # a dry run changes nothing
    result = invoke("results", "reap", "--grace", "1s", "--results", str(store_target))
    assert result.exit_code == 0, result.output
    assert f"reaped {run_id}: {state}" in result.output and "marked 1 stale run(s) failed" in result.output
    runs = store.runs().set_index("id")
    assert runs.loc[run_id, "status"] == "failed"
    assert runs.loc[run_id, "error"] == f"reaped: {state} (grace 1 s)"
    assert runs.loc[bystander, "status"] == "running"  # its process lives, whatever the grace
    assert invoke("results", "reap", "--grace", "0", "--results", str(store_target)).output.endswith(
        "marked 0 stale run(s) failed in " + str(store.target) + "\n")
