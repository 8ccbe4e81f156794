"""A cell's job as submitit runs it: its own command line (under torchrun with several GPUs), its
output in the cell's log, its times in the cell's file; a failing cell raises, naming its log.
Executors and Slurm settings are checked before anything is submitted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mlebench.errors import ConfigError
from mlebench.sweep import submit as submit_module
from mlebench.sweep.submit import resolve_executor, run_cell, slurm_parameters


def _fake_run(calls: list, code: int):
    def run(command, stdout, stderr, env):
        calls.append(command)
        stdout.write(b"the cell's output\n")
        return subprocess.CompletedProcess(command, code)
    return run


def test_a_cell_runs_its_command_and_keeps_its_log_and_times(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    calls: list = []
    monkeypatch.setattr(submit_module.subprocess, "run", _fake_run(calls, 0))
    run_cell(["run", "--seed", "1"], "abc", str(tmp_path), "2026-01-01T00:00:00+00:00")
    monkeypatch.setattr(submit_module.shutil, "which", lambda name: f"/opt/bin/{name}")
    run_cell(["run", "--seed", "2"], "def", str(tmp_path), "2026-01-01T00:00:00+00:00", gpus=4)
    assert calls == [[sys.executable, "-m", "mlebench", "run", "--seed", "1", "--sweep-cell", "abc"],
                     ["/opt/bin/torchrun", "--nproc-per-node=4", "-m", "mlebench", "run", "--seed", "2",
                      "--sweep-cell", "def"]]
    log = (tmp_path / "logs" / "abc.log").read_text()
    assert log.startswith("\n=== ") and log.endswith("the cell's output\n") and "--sweep-cell abc" in log
    times = json.loads((tmp_path / "cells" / "abc.json").read_text())
    assert times["exit"] == 0 and times["submitted_at"] <= times["job_started_at"] <= times["job_ended_at"]
    calls.clear()
    monkeypatch.setattr(submit_module.subprocess, "run", _fake_run(calls, 3))
    with pytest.raises(RuntimeError, match=f"cell xyz exited with status 3; see {tmp_path}/logs/xyz.log"):
        run_cell(["run"], "xyz", str(tmp_path), "2026-01-01T00:00:00+00:00")
    assert json.loads((tmp_path / "cells" / "xyz.json").read_text())["exit"] == 3


def test_executors_and_slurm_settings_are_checked(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(submit_module.shutil, "which", lambda name: None)
    assert resolve_executor("auto") == "local"
    with pytest.raises(ConfigError, match="--executor slurm: there is no sbatch on this machine"):
        resolve_executor("slurm")
    monkeypatch.setattr(submit_module.shutil, "which", lambda name: "/usr/bin/sbatch")
    assert resolve_executor("auto") == "slurm"
    assert slurm_parameters({"partition": "gpu", "gpus_per_node": 2, "array_parallelism": 8,
                             "additional_parameters": {"account": "lab"}}, "tab6") == {
        "slurm_partition": "gpu", "gpus_per_node": 2, "slurm_array_parallelism": 8,
        "slurm_additional_parameters": {"account": "lab"}, "timeout_min": 1440, "slurm_job_name": "mlebench-tab6"}
    with pytest.raises(ConfigError, match="slurm: unknown setting\\(s\\) gpus; known: partition"):
        slurm_parameters({"gpus": 2}, "x")
