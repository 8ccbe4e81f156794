"""Where each cell of a sweep stands, read from the results store: the newest run that carries
the cell's id (``config.sweep_cell``) decides. What a re-run of the sweep submits follows from it:

- ``finished``: done, never submitted again;
- ``running``: a live run (its process, or its heartbeat within the grace period): left alone;
- ``stale``: its job died without a word (SIGKILL, a lost node): reaped, then submitted again;
- ``interrupted``: its job was stopped (Ctrl-C, SIGTERM: a preemption or a time limit) or its
  run was reaped: submitted again;
- ``failed``: the run failed on its own (an error): submitted again only with ``--retry-failed``;
  a job that failed before its run was recorded (its log says why) counts as failed too;
- ``pending``: no run yet: submitted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from mlebench.results.liveness import DEFAULT_GRACE_S
from mlebench.results.store import ResultsStore
from mlebench.sweep.grid import Cell

#: errors of runs that were stopped rather than failing: a re-run finishes them
INTERRUPTED = ("KeyboardInterrupt", "Terminated", "reaped:")
TO_SUBMIT = ("pending", "stale", "interrupted")


@dataclass
class CellState:
    cell: Cell
    state: str
    run_id: str | None = None
    miou: float | None = None
    metric: str | None = None
    error: str | None = None
    log: str | None = None
    timing: dict[str, float] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"cell": self.cell.cell_id, "options": self.cell.options, "state": self.state, "run_id": self.run_id,
                "headline": None if self.miou is None else {"metric": self.metric, "value": self.miou},
                "error": self.error, "log": self.log, "timing_s": self.timing}


def cell_states(cells: Sequence[Cell], store: ResultsStore | None, folder: Path,
                grace: float = DEFAULT_GRACE_S) -> list[CellState]:
    """Every cell's state as it stands now (``store`` None: nothing run yet)."""
    runs = store.runs(grace=grace) if store is not None else pd.DataFrame(columns=["config"])
    by_cell: dict[str, Any] = {}
    for run in runs.itertuples():  # newest first: the first run of a cell is its latest
        cell_id = run.config.get("sweep_cell") if isinstance(run.config, dict) else None
        if cell_id and cell_id not in by_cell:
            by_cell[cell_id] = run
    heads = _headlines(store, [r.id for r in by_cell.values() if r.status == "finished"])
    out = []
    for cell in cells:
        times = _times(folder, cell.cell_id)
        log = str(folder / "logs" / f"{cell.cell_id}.log")
        run = by_cell.get(cell.cell_id)
        if run is None:
            failed_early = times is not None and times.get("exit") not in (0, None)
            out.append(CellState(cell, "failed" if failed_early else "pending", log=log if failed_early else None,
                                 error=f"the job exited with status {times['exit']} before its run was recorded"
                                 if failed_early else None))
            continue
        state = run.state
        if run.status == "running":
            state = "stale" if str(run.state).startswith("stale") else "running"
        elif run.status == "failed":
            state = "interrupted" if str(run.error or "").startswith(INTERRUPTED) else "failed"
        head = heads.get(run.id)
        out.append(CellState(cell, state, run.id, miou=head[1] if head else None, metric=head[0] if head else None,
                             error=run.error if state in ("failed", "interrupted") else None,
                             log=log if state in ("failed", "interrupted", "stale") else None,
                             timing=_timing(times, run) if state == "finished" else None))
    return out


def _times(folder: Path, cell_id: str) -> dict[str, Any] | None:
    try:
        return json.loads((folder / "cells" / f"{cell_id}.json").read_text())
    except (OSError, ValueError):
        return None


def _seconds(a: str | None, b: str | None) -> float | None:
    if not a or not b:
        return None
    return round((datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds(), 3)


def _timing(times: dict[str, Any] | None, run: Any) -> dict[str, float] | None:
    """Scheduling overhead of a finished cell: submit -> job start (the scheduler), job start ->
    run recorded as started (process start, imports, checks), run recorded as ended -> job end."""
    if times is None or times.get("job_started_at") is None:
        return None
    return {"queued": _seconds(times.get("submitted_at"), times.get("job_started_at")),
            "start_to_run": _seconds(times.get("job_started_at"), run.started_at),
            "run": _seconds(run.started_at, run.ended_at),
            "recorded_to_exit": _seconds(run.ended_at, times.get("job_ended_at"))}


def _headlines(store: ResultsStore | None, run_ids: list[str]) -> dict[str, tuple[str, float]]:
    """Each finished run's headline number (what `results list` shows)."""
    if store is None or not run_ids:
        return {}
    from mlebench.report.console import headline_rows

    heads = headline_rows(store.results(run_ids=run_ids), store.runs())
    return {r.run_id: (r.metric, float(r.value)) for r in heads.itertuples()}


def format_status(states: Sequence[CellState]) -> str:
    """The grid as a table: one line per cell; then the log and error of every failed cell."""
    rows = []
    for s in states:
        rows.append({"cell": s.cell.cell_id, "state": s.state, "headline": "" if s.miou is None
                     else f"{100 * s.miou:.2f}" + ("" if s.metric == "miou" else f" {s.metric}"),
                     "run": (s.run_id or "")[:12], "options": s.cell.label})
    lines = [pd.DataFrame(rows).to_string(index=False)] if rows else ["no cells"]
    counts = pd.Series([s.state for s in states]).value_counts()
    lines.append(", ".join(f"{n} {state}" for state, n in counts.items()))
    for s in states:
        if s.state in ("failed", "interrupted", "stale") and (s.error or s.log):
            lines.append(f"{s.cell.cell_id} {s.state}: {s.error or ''} (log: {s.log})")
    return "\n".join(lines)
