"""Exports of the results store: every row with its interval and, for multi-seed groups, the
mean and standard deviation over seeds; and the per-sample counts behind them.

Seed statistics: rows of runs that share a ``group_id`` (one ``mlebench run --seeds ...``
command) and the same (protocol, test modalities, condition, corruption, metric, class) are
one measurement repeated over training seeds; ``seeds_n``, ``seeds_mean`` and ``seeds_std``
(sample standard deviation, ddof=1; NaN for a single seed) describe them. Runs without a group
count as a group of one.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, TextIO

import pandas as pd

from mlebench.errors import ConfigError
from mlebench.results.store import RESULT_COLUMNS, ResultsStore

EXPORT_FORMATS = ("csv", "json")
SEED_COLUMNS = ("seeds_n", "seeds_mean", "seeds_std")
#: Columns of every export, in order.
EXPORT_COLUMNS = (*RESULT_COLUMNS, *SEED_COLUMNS)
PER_SAMPLE_COLUMNS = ("run_id", "method", "dataset", "split", "protocol", "test_modalities", "condition",
                      "corruption", "sample_id", "class", "tp", "fp", "fn")
_ROW_KEY = ["protocol", "test_modalities", "condition", "corruption", "metric", "class"]


def with_seed_statistics(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (columns :data:`RESULT_COLUMNS`) plus :data:`SEED_COLUMNS`."""
    out = frame.copy()
    group = out["group_id"].where(out["group_id"].notna(), out["run_id"])
    keys = [group] + [out[c] for c in _ROW_KEY]
    grouped = out.groupby(keys, dropna=False, sort=False)["value"]
    out["seeds_n"] = grouped.transform("count").astype("int64")
    out["seeds_mean"] = grouped.transform("mean")
    out["seeds_std"] = grouped.transform(lambda v: v.std(ddof=1) if v.count() > 1 else math.nan)
    return out


def export_results(store: ResultsStore, fmt: str, out: TextIO, *, run_ids: Iterable[str] | None = None,
                   include_unfinished: bool = False) -> None:
    """Every result row (columns :data:`EXPORT_COLUMNS`) as CSV or JSON to ``out``.

    CSV: a header row; NaN is an empty cell. JSON: a list of records; NaN or infinity is null.
    """
    fmt = fmt.lower()
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    frame = with_seed_statistics(store.results(run_ids=run_ids, include_unfinished=include_unfinished))
    if fmt == "csv":
        frame.to_csv(out, index=False, lineterminator="\n")
        return
    records = [{c: json_value(v) for c, v in zip(EXPORT_COLUMNS, record)}
               for record in frame[list(EXPORT_COLUMNS)].itertuples(index=False, name=None)]
    out.write(json.dumps(records, indent=1, allow_nan=False) + "\n")


def json_value(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item"):  # numpy scalars
        return json_value(value.item())
    return value


def export_per_sample(store: ResultsStore, fmt: str, out: TextIO, *, run_ids: Iterable[str] | None = None) -> int:
    """One row per (run, case, sample, class) with tp, fp, fn; returns the number of rows.

    Written case by case, so memory stays at one case's counts whatever the store's size.
    """
    fmt = fmt.lower()
    if fmt != "csv":
        raise ConfigError(f"--per-sample exports csv only (one row per sample and class), not {fmt!r}")
    runs = store.runs()
    runs = runs[runs["status"] == "finished"]
    if run_ids is not None:
        wanted = list(run_ids)
        unknown = [r for r in wanted if r not in set(store.runs()["id"])]
        if unknown:
            raise ConfigError(f"no run {', '.join(unknown)} in results file {store.path}")
        runs = runs[runs["id"].isin(wanted)]
    header, total = True, 0
    for run in runs.sort_values("started_at").itertuples():
        classes = None
        for case in store.case_counts(run.id):
            n, _, k = case.counts.shape
            if classes is None:
                classes = _class_names(store, run.id, k)
            frame = pd.DataFrame({
                "run_id": run.id, "method": run.method, "dataset": run.dataset, "split": run.split,
                "protocol": case.key.protocol, "test_modalities": ",".join(case.key.test_modalities),
                "condition": case.key.condition, "corruption": case.key.corruption,
                "sample_id": [s for s in case.sample_ids for _ in range(k)],
                "class": classes * n,
                "tp": case.counts[:, 0].reshape(-1), "fp": case.counts[:, 1].reshape(-1),
                "fn": case.counts[:, 2].reshape(-1),
            })  # fmt: skip
            frame.to_csv(out, index=False, header=header, lineterminator="\n")
            header, total = False, total + len(frame)
    if header:
        out.write(",".join(PER_SAMPLE_COLUMNS) + "\n")
    return total


def _class_names(store: ResultsStore, run_id: str, k: int) -> list[str]:
    """The class names in the order of the counts (from the run's per-class IoU rows)."""
    frame = store.results(run_ids=[run_id])
    names = list(dict.fromkeys(frame.loc[frame["metric"] == "iou", "class"]))
    return names if len(names) == k else [str(i) for i in range(k)]


def write_atomically(path: Path, write: Any) -> None:
    """Call ``write(fh)`` on a temporary file next to ``path`` and rename it into place."""
    from mlebench.fsutil import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        write(fh)


def comparison_json(frame: pd.DataFrame, run_a: str, run_b: str, resamples: int, seed: int) -> str:
    """``mlebench compare --json``: the paired comparison (:func:`mlebench.report.compare.compare_runs`)."""
    records = [{k: json_value(v) for k, v in row.items()} for row in frame.to_dict("records")]
    return json.dumps({"run_a": run_a, "run_b": run_b, "resamples": resamples, "seed": seed, "cases": records},
                      indent=1, allow_nan=False)
