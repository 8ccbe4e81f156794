"""A real sweep, on a real one-node Slurm (a job array) and on local processes, into a real
PostgreSQL store: a 4-cell grid of 2-step runs finishes; the same sweep again submits nothing;
a cell whose run was deleted from the store is the only one re-run; a cell killed mid-run is
reaped and re-run. Each cell's numbers equal a plain `mlebench run` of the same options."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from mlebench.results import ResultsStore

from ..helpers import invoke, subprocess_env


def _grid_args(data: Path, store: str, folder: Path) -> list[str]:
    return ["--grid", "seed=0,1", "--grid", "train_modalities=rgb,depth", "--set", "protocol=full",
            "--set", "steps=2", "--set", f"data_root={data}", "--results", store, "--folder", str(folder)]


def _status(args: list[str]) -> dict[str, dict]:
    result = invoke("sweep", "status", *args, "--json")
    assert result.exit_code == 0, result.output
    return {c["cell"]: c for c in json.loads(result.output)}


def _delete_run(url: str, run_id: str) -> None:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        for table in ("results", "case_counts", "run_samples", "artifacts", "runs"):
            conn.execute(sa.text(f"DELETE FROM {table} WHERE {'id' if table == 'runs' else 'run_id'} = :r"),
                         {"r": run_id})


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["local", "slurm"])
def test_a_sweep_finishes_once_and_reruns_only_what_is_missing(executor: str, request, sweep_data: Path,
                                                              postgres_url: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch):
    if executor == "slurm":
        request.getfixturevalue("slurm")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the cells' processes, two at a time on 2 cores
    folder = tmp_path / "sweep"
    args = _grid_args(sweep_data, postgres_url, folder)
    submit = ["sweep", *args, "--executor", executor, "--max-parallel", "2", "--cpus-per-task", "1",
              "--mem-gb", "1", "--wait"]
    result = invoke(*submit)
    assert result.exit_code == 0, result.output
    assert ("as Slurm job array" in result.output) == (executor == "slurm")
    states = _status(args)
    assert [c["state"] for c in states.values()] == ["finished"] * 4, states
    store = ResultsStore(postgres_url)
    runs = store.runs()
    assert len(runs) == 4 and set(runs["config"].map(lambda c: c["sweep_cell"])) == set(states)
    for cell in states.values():  # the headline is the store's number; the timing was measured
        run = runs.set_index("id").loc[cell["run_id"]]
        assert run["seed"] == cell["options"]["seed"] and run["train_modalities"] == cell["options"]["train_modalities"]
        value = store.results(run_ids=[cell["run_id"]])
        full = value[(value.metric == "miou") & (value.test_modalities == run["train_modalities"])].value.iloc[0]
        assert cell["headline"] == {"metric": "miou", "value": full}
        assert all(v is not None and v >= 0 for v in cell["timing_s"].values())
    assert len(list((folder / "logs").glob("*.log"))) == 4

    # The same sweep again: nothing to submit, nothing new in the store.
    again = invoke(*submit)
    assert again.exit_code == 0 and "nothing to submit: every cell is finished or running" in again.output
    assert len(store.runs()) == 4

    # One cell's run deleted: only that cell runs again.
    gone = next(iter(states.values()))
    _delete_run(postgres_url, gone["run_id"])
    dry = invoke(*submit, "--dry-run")
    assert dry.output.count("would submit") == 1 and f"would submit {gone['cell']} [pending]" in dry.output
    result = invoke(*submit)
    assert result.exit_code == 0, result.output
    after = _status(args)
    assert [c["state"] for c in after.values()] == ["finished"] * 4
    changed = {k for k in after if after[k]["run_id"] != states[k]["run_id"]}
    assert changed == {gone["cell"]} and after[gone["cell"]]["headline"] == gone["headline"]  # same numbers

    # A cell killed mid-run (its own command line, as its job runs it): reaped and run again.
    killed = list(after.values())[1]
    cell_argv = next(line for line in (folder / "logs" / f"{killed['cell']}.log").read_text().splitlines()
                     if line.startswith("=== ")).split(" ", 2)[2].split()
    child = subprocess.Popen(cell_argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env=subprocess_env(OMP_NUM_THREADS="1"))
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and _status(args)[killed["cell"]]["state"] != "running":
            time.sleep(0.5)
        assert _status(args)[killed["cell"]]["state"] == "running"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(60)
    assert _status(args)[killed["cell"]]["state"] == "stale"
    result = invoke(*submit)
    assert result.exit_code == 0, result.output
    assert "reaped " in result.output and "stale (process gone)" in result.output
    final = _status(args)
    assert [c["state"] for c in final.values()] == ["finished"] * 4
    assert final[killed["cell"]]["headline"] == killed["headline"]
    reaped = store.runs()
    reaped = reaped[reaped["status"] == "failed"]
    assert len(reaped) == 1 and reaped.iloc[0]["error"].startswith("reaped: stale (process gone)")


def test_a_failed_cell_is_retried_only_when_asked(sweep_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A cell that fails on its own (a broken evaluation file, found by the job) stays failed,
    its log named, until --retry-failed; then, with the file mended, it finishes."""
    import shutil

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    data = shutil.copytree(sweep_data, tmp_path / "data")
    broken = next(p for p in sorted(data.rglob("*_rgb_front.png")) if "/val/" in p.as_posix())
    good = broken.read_bytes()
    broken.write_bytes(b"not a png")
    store, folder = tmp_path / "r.sqlite", tmp_path / "sweep"
    args = ["--grid", "seed=0", "--set", "protocol=full", "--set", "steps=1", "--set", f"data_root={data}",
            "--set", "train_modalities=rgb", "--results", str(store), "--folder", str(folder)]
    result = invoke("sweep", *args, "--executor", "local")
    assert result.exit_code == 0, result.output
    (cell,) = _status(args).values()
    log = folder / "logs" / f"{cell['cell']}.log"
    assert cell["state"] == "failed" and cell["log"] == str(log) and str(broken) in log.read_text()
    status = invoke("sweep", "status", *args)
    assert f"{cell['cell']} failed: the job exited with status 1 before its run was recorded (log: {log})" \
        in status.output
    again = invoke("sweep", *args, "--executor", "local")
    assert "nothing to submit: 1 failed (--retry-failed submits them again)" in again.output
    broken.write_bytes(good)
    retried = invoke("sweep", *args, "--executor", "local", "--retry-failed")
    assert retried.exit_code == 0, retried.output
    assert [c["state"] for c in _status(args).values()] == ["finished"]
