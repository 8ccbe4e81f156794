"""Results stores built for tests: a few rows in a known run (the store API and its exports), a
realistic finished missing-modality run with intervals and per-sample counts (read-only, corrupt
and interrupted stores), runs with chosen per-sample counts (compare, migration), and a run held
open by a child process (signals, liveness)."""

from __future__ import annotations

import io
import math
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from mlebench import stats
from mlebench.data import dataset_info
from mlebench.protocols import CaseResult, get_protocol
from mlebench.report.export import export_results
from mlebench.results import (
    RESULT_COLUMNS,
    BootstrapSpec,
    CaseCounts,
    CaseKey,
    ResultRow,
    ResultsStore,
    case_counts,
    result_rows,
)

from ..helpers import subprocess_env


# -- a known run of a few rows (results/test_store.py, report/test_export.py) ----------------------
ROWS = [
    ResultRow("full", ("rgb", "depth"), "all", "", "mIoU", 0.5123456789012345),
    ResultRow("full", ("rgb", "depth"), "all", "", "IoU", 0.75, class_name="car"),
    ResultRow("full", ("rgb", "depth"), "all", "", "IoU", float("nan"), class_name="bicycle"),
    ResultRow("missing", ("depth",), "night", "gaussian_noise_3", "mIoU", 0.25),
]


def begin_run(store: ResultsStore, **overrides) -> str:
    fields = dict(
        method="mlesam",
        variant="base",
        dataset="deliver",
        train_modalities=["rgb", "depth"],
        preset="smoke",
        config={"lr": 1e-4, "epochs": 2},
        seed=0,
        git_commit="0" * 40,
        versions={"mlebench": "0.1.0"},
    )
    fields.update(overrides)
    return store.start_run(**fields)


def count_rows(store: ResultsStore, table: str) -> int:
    """How many rows ``table`` of the store holds (finished or not)."""
    import sqlalchemy as sa

    with store.backend.transaction() as conn:
        return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()


def expected_frame(run_id: str, rows=ROWS, train="rgb,depth") -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "run_id": run_id,
                "method": "mlesam",
                "variant": "base",
                "dataset": "deliver",
                "train_modalities": train,
                "preset": "smoke",
                "seed": 0,
                "split": None,
                "miou_convention": None,
                "group_id": None,
                "protocol": r.protocol,
                "test_modalities": ",".join(r.test_modalities),
                "condition": r.condition,
                "corruption": r.corruption,
                "metric": r.metric,
                "class": r.class_name,
                "value": r.value,
                "ci_low": math.nan,
                "ci_high": math.nan,
                "ci_unit": "",
            }
            for r in rows
        ],
        columns=list(RESULT_COLUMNS),
    )


def export_text(store: ResultsStore, fmt: str) -> str:
    out = io.StringIO()
    export_results(store, fmt, out)
    return out.getvalue()


# -- realistic finished runs (results/test_sqlite.py, test_signals.py) -----------------------------
SYN = dataset_info("synthetic")
MODS = ("rgb", "depth")
SAMPLE_IDS = [f"s{i:02d}" for i in range(8)]


def store_run(store: ResultsStore, method: str, quality: float, seed: int) -> str:
    """A finished missing-modality run with realistic rows, intervals and per-sample counts."""
    proto = get_protocol("missing-modality")
    results = []
    for i, case in enumerate(proto.cases(MODS, SYN)):
        rng = np.random.default_rng(seed * 100 + i)
        truth = rng.integers(0, 400, size=(len(SAMPLE_IDS), SYN.num_classes)) * (rng.random((8, SYN.num_classes)) < .4)
        tp = np.floor(truth * quality).astype(np.int64)
        counts = np.stack([tp, rng.integers(0, 30, size=truth.shape) * (truth > 0), truth - tp], axis=1)
        iou = stats.iou_from_counts(counts[:, 0], counts[:, 1], counts[:, 2]).tolist()
        miou = stats.miou_from_counts(counts[:, 0], counts[:, 1], counts[:, 2], SYN.miou_convention)
        results.append(CaseResult(case, miou, 0.5, 0.5, iou, len(SAMPLE_IDS), sample_ids=SAMPLE_IDS, counts=counts))
    rows = result_rows("missing-modality", results, proto.summary(results, MODS), SYN.classes, SYN.miou_convention,
                       BootstrapSpec(50))
    run_id = store.start_run(method=method, variant="v", dataset="synthetic", train_modalities=MODS, preset="tiny",
                             config={"parameters": {"trainable": 1000}}, seed=seed, versions={"mlebench": "t"},
                             protocol="missing-modality", split="val", miou_convention=SYN.miou_convention)
    store.finish_run(run_id, rows, counts=case_counts("missing-modality", results))
    return run_id


def make_store(path: Path, runs: int = 2) -> list[str]:
    store = ResultsStore(path)
    return [store_run(store, "mlesam" if i % 2 == 0 else "cmnext", 0.6 - 0.1 * i, i) for i in range(runs)]


def make_store_with_wal(path: Path) -> None:
    """A store whose last run lives only in its -wal file, as a writer that died leaves it: a
    second connection holds the WAL open while the run is written, then the files are copied."""
    scratch = Path(tempfile.mkdtemp())
    try:
        first = scratch / path.name
        make_store(first, runs=1)
        holder = sqlite3.connect(first)
        holder.execute("SELECT count(*) FROM runs").fetchone()
        store_run(ResultsStore(first), "cmnext", 0.5, 1)
        assert Path(f"{first}-wal").stat().st_size > 0
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(first, path)
        shutil.copyfile(f"{first}-wal", f"{path}-wal")
        holder.close()
    finally:
        shutil.rmtree(scratch)


# -- runs with chosen per-sample counts (report/test_compare.py, results/test_migrate.py) ----------
def store_with(path: Path, runs: list[dict]) -> list[str]:
    store = ResultsStore(path)
    ids = []
    for spec in runs:
        run_id = store.start_run(method="m", variant="v", dataset=spec.get("dataset", "synthetic"),
                                 train_modalities=["rgb"], preset="tiny", config=spec.get("config", {}), seed=0,
                                 protocol="full", split=spec.get("split", "val"), miou_convention="present")
        scenes = tuple(spec["scenes"]) if "scenes" in spec else None
        counts = [CaseCounts(CaseKey("full", ("rgb",), "all", "none"), tuple(spec["ids"]), spec["counts"], scenes)]
        store.finish_run(run_id, [ResultRow("full", ("rgb",), "all", "none", "miou", 0.5)], counts=counts)
        ids.append(run_id)
    return ids


# -- a run held open by a child process (test_signals.py, results/test_liveness.py) ----------------
RUNNER = r"""
import sys, time
from mlebench.results.store import ResultsStore
from mlebench.signals import Terminated, exit_interrupted, terminate_as_exception
store = ResultsStore(sys.argv[1])
try:
    with terminate_as_exception():          # what run_job's body is wrapped in
        run_id = store.start_run(method="mlesam", variant="v", dataset="synthetic", train_modalities=["rgb"],
                                 preset="tiny", config={}, seed=0, versions={})
        try:
            print(run_id, flush=True)        # ready: the handler is installed and the run started
            time.sleep(600)                  # "training"
        except BaseException as exc:         # run_job's handler
            store.fail_run(run_id, f"{type(exc).__name__}: {exc}")
            raise
except (KeyboardInterrupt, Terminated) as exc:  # the CLI's handler
    exit_interrupted(exc)
"""


def start_runner(path: Path) -> tuple[subprocess.Popen, str]:
    child = subprocess.Popen([sys.executable, "-c", RUNNER, str(path)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=subprocess_env())
    run_id = child.stdout.readline().strip()
    if not run_id:
        child.kill()
        raise AssertionError(f"child died early: {child.communicate()[1]}")
    return child, run_id
