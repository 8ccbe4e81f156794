"""Submitting a sweep's cells through submitit: a Slurm job array, or processes on this machine.

Each cell's job runs the cell's own command line (``mlebench run ...``, or ``torchrun ... -m
mlebench run ...`` for a cell with several GPUs) in a process of its own, with its output in the
cell's log (``<folder>/logs/<cell id>.log``) and its times in ``<folder>/cells/<cell id>.json``.
What is done is decided by the store (:mod:`mlebench.sweep.status`), not by these files.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from mlebench.errors import ConfigError
from mlebench.fsutil import atomic_path
from mlebench.sweep.grid import Cell

EXECUTORS = ("auto", "slurm", "local")
#: Slurm settings a grid file's ``slurm:`` section (or the options) may give: submitit's names
SLURM_KEYS = {"partition": "slurm_partition", "gpus_per_node": "gpus_per_node", "cpus_per_task": "cpus_per_task",
              "mem_gb": "mem_gb", "timeout_min": "timeout_min", "array_parallelism": "slurm_array_parallelism",
              "additional_parameters": "slurm_additional_parameters", "account": "slurm_account",
              "qos": "slurm_qos", "constraint": "slurm_constraint"}


class _QuietSacct(logging.Filter):
    """Slurm without an accounting database: submitit falls back to squeue and says so at every
    poll; say it once."""

    said = False

    def filter(self, record: logging.LogRecord) -> bool:
        if "Bypassing sacct error" not in record.getMessage():
            return True
        first, _QuietSacct.said = not _QuietSacct.said, True
        return first


logging.getLogger("submitit").addFilter(_QuietSacct())


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def run_cell(argv: Sequence[str], cell_id: str, folder: str, submitted_at: str, gpus: int = 1) -> None:
    """The job of one cell (runs where submitit starts it): the cell's command in a process of
    its own, its output appended to the cell's log; a non-zero exit raises (submitit records it)."""
    folder_path = Path(folder)
    log = folder_path / "logs" / f"{cell_id}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    times = {"cell": cell_id, "submitted_at": submitted_at, "job_started_at": _now(), "host": os.uname().nodename,
             "slurm_job_id": os.environ.get("SLURM_JOB_ID")}
    command = [sys.executable, "-m", "mlebench", *argv, "--sweep-cell", cell_id]
    if gpus > 1:  # several GPUs: torchrun inside the job, as a single run does
        torchrun = shutil.which("torchrun") or "torchrun"
        command = [torchrun, f"--nproc-per-node={gpus}", "-m", "mlebench", *argv, "--sweep-cell", cell_id]
    with open(log, "ab") as out:
        out.write(f"\n=== {_now()} {' '.join(command)}\n".encode())
        out.flush()
        code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ}).returncode
    times.update(job_ended_at=_now(), exit=code, log=str(log))
    (folder_path / "cells").mkdir(exist_ok=True)
    with atomic_path(folder_path / "cells" / f"{cell_id}.json") as tmp:
        tmp.write_text(json.dumps(times, indent=1))
    if code != 0:
        raise RuntimeError(f"cell {cell_id} exited with status {code}; see {log}")


def resolve_executor(kind: str) -> str:
    """``auto``: Slurm where ``sbatch`` exists, else local processes."""
    if kind not in EXECUTORS:
        raise ConfigError(f"--executor {kind!r}; choose from {', '.join(EXECUTORS)}")
    if kind == "auto":
        return "slurm" if shutil.which("sbatch") else "local"
    if kind == "slurm" and not shutil.which("sbatch"):
        raise ConfigError("--executor slurm: there is no sbatch on this machine (use --executor local, or run "
                          "the sweep where Slurm is installed)")
    return kind


def slurm_parameters(settings: dict[str, Any], name: str) -> dict[str, Any]:
    """submitit's parameters from a grid's ``slurm:`` settings (an unknown key is named)."""
    unknown = sorted(set(settings) - set(SLURM_KEYS))
    if unknown:
        raise ConfigError(f"slurm: unknown setting(s) {', '.join(unknown)}; known: {', '.join(SLURM_KEYS)}")
    params = {SLURM_KEYS[k]: v for k, v in settings.items() if v is not None}
    params.setdefault("timeout_min", 24 * 60)
    params.setdefault("slurm_job_name", f"mlebench-{name}")
    return params


@dataclass
class Submitted:
    """What a submission did: per cell id, the job id (Slurm array task or local process)."""

    executor: str
    jobs: dict[str, str]


def submit(cells: Sequence[Cell], folder: Path, executor: str, slurm: dict[str, Any], max_parallel: int,
           name: str, echo: Callable[[str], None] = print, wait: bool = False,
           extra_argv: Sequence[str] = ()) -> Submitted:
    """Submit ``cells``: a Slurm job array (returns once submitted, or when every task ended
    with ``wait``), or local processes, at most ``max_parallel`` at a time (returns when all
    ended). ``extra_argv`` is added to every cell's command line (where the results go)."""
    import submitit

    folder.mkdir(parents=True, exist_ok=True)
    gpus = int(slurm.get("gpus_per_node") or 1)
    submitted_at = _now()
    args = [([*c.argv, *extra_argv], c.cell_id, str(folder), submitted_at, gpus) for c in cells]
    if executor == "slurm":
        ex = submitit.AutoExecutor(folder=folder / "submitit", cluster="slurm")
        ex.update_parameters(**slurm_parameters(slurm, name))
        jobs = ex.map_array(run_cell, *zip(*args))
        ids = {cell.cell_id: job.job_id for cell, job in zip(cells, jobs)}
        _record(folder, ids, executor, submitted_at)
        echo(f"submitted {len(jobs)} cell(s) as Slurm job array {jobs[0].job_id.split('_')[0]}; logs in {folder}/logs")
        if wait:
            _wait(jobs, echo)
        return Submitted(executor, ids)
    ex = submitit.AutoExecutor(folder=folder / "submitit", cluster="local")
    ex.update_parameters(timeout_min=int(slurm.get("timeout_min") or 24 * 60))
    queue, running, ids = list(zip(cells, args)), [], {}
    while queue or running:
        while queue and len(running) < max_parallel:
            cell, arg = queue.pop(0)
            job = ex.submit(run_cell, *arg)
            ids[cell.cell_id] = str(job.job_id)
            running.append((cell, job))
            echo(f"started cell {cell.cell_id} ({cell.label}) as process {job.job_id}")
        time.sleep(0.5)
        for cell, job in [r for r in running if r[1].done()]:
            running.remove((cell, job))
            echo(f"cell {cell.cell_id} {'failed' if job.state != 'FINISHED' or _failed(job) else 'done'}")
    _record(folder, ids, executor, submitted_at)
    return Submitted(executor, ids)


def _failed(job: Any) -> bool:
    try:
        job.result()
        return False
    except Exception:  # the cell's own error is in its log and the store
        return True


def _wait(jobs: Sequence[Any], echo: Callable[[str], None]) -> None:
    while not all(job.done() for job in jobs):
        time.sleep(2)
    echo(f"{sum(not _failed(j) for j in jobs)} of {len(jobs)} cell(s) ended without error")


def _record(folder: Path, ids: dict[str, str], executor: str, submitted_at: str) -> None:
    """Append this submission to ``<folder>/submissions.jsonl`` (for people; the store decides)."""
    with open(folder / "submissions.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"submitted_at": submitted_at, "executor": executor, "jobs": ids}) + "\n")
