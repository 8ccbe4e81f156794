"""Plain-text tables for the terminal: a run's results, the run list, multi-seed summaries,
comparisons."""

from __future__ import annotations

from typing import Any, Sequence

import pandas as pd

from mlebench.protocols import CaseResult, SummaryRow, case_label
from mlebench.results.rows import ResultRow
from mlebench.results.liveness import DEFAULT_GRACE_S
from mlebench.results.store import ResultsStore


def _pct(value: float, width: int = 6) -> str:
    return f"{100 * value:{width}.2f}" if value == value else " " * (width - 1) + "–"


def _interval(low: float, high: float) -> str:
    return f"[{100 * low:.2f}, {100 * high:.2f}]" if low == low and high == high else ""


def headline_rows(results: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Per run, the number that sums it up: the mIoU of the training modalities on all clean
    samples where the protocol has that case, else its first summary mIoU (e.g. mIoU^Avg)."""
    picked = []
    for run in runs.itertuples():
        mine = results[results["run_id"] == run.id]
        full = mine[(mine["metric"] == "miou") & (mine["test_modalities"] == run.train_modalities)
                    & (mine["condition"] == "all") & (mine["corruption"] == "none")]
        if full.empty:
            full = mine[mine["metric"].str.startswith("miou") & (mine["test_modalities"] == "*")]
        if not full.empty:
            picked.append(full.iloc[0])
    return pd.DataFrame(picked)


def _mean_std(values: pd.Series, table: bool = False) -> str:
    """``mean ± std`` over seeds in percent; one finished seed has no spread to show (its value
    alone, said so) rather than ``± nan``."""
    if len(values) < 2:
        return f"{100 * values.mean():7.2f} (1 seed)" if table else f"{100 * values.mean():.2f} (one finished seed)"
    std = values.std(ddof=1)
    return (f"{100 * values.mean():7.2f} ± {100 * std:5.2f}" if table
            else f"{100 * values.mean():.2f} ± {100 * std:.2f} (mean ± std)")


def format_run_list(store: ResultsStore, grace: float = DEFAULT_GRACE_S) -> str:
    """One line per run with its state as it stands now (``grace``: seconds without a heartbeat
    before a running run counts as stale)."""
    runs = store.runs(grace=grace)
    if runs.empty:
        return "no runs"
    results = store.results(include_unfinished=False)
    heads = headline_rows(results, runs)
    head_by_run = {r.run_id: r for r in heads.itertuples()} if not heads.empty else {}
    table = runs[["id", "method", "variant", "dataset", "train_modalities", "protocol", "preset", "seed", "split",
                  "miou_convention", "status", "started_at"]].copy()
    # The status as it stands now: a run whose process died without ending it is "stale".
    table["status"] = runs["state"]
    table = table.rename(columns={"miou_convention": "convention", "train_modalities": "train"})
    table["mIoU"] = [(_pct(head_by_run[i].value).strip() + (f" {head_by_run[i].metric}" if head_by_run[i].metric != "miou" else ""))
                     if i in head_by_run else "" for i in runs["id"]]  # fmt: skip
    table["95% CI"] = [_interval(head_by_run[i].ci_low, head_by_run[i].ci_high) if i in head_by_run else ""
                       for i in runs["id"]]
    table["group"] = [g[:8] if g else "" for g in runs["group_id"]]
    table = table.fillna("")
    lines = [table.to_string(index=False)]
    groups = [g for g in dict.fromkeys(runs["group_id"]) if g]
    for group in groups:
        lines.append("")
        lines.append(format_seed_summary(store, group, headline_only=True))
    return "\n".join(lines)


def format_seed_summary(store: ResultsStore, group: str, headline_only: bool = False) -> str:
    """mIoU per case over the seeds of one group: each seed's value and interval, mean ± std."""
    runs = store.runs()
    members = runs[(runs["group_id"] == group) & (runs["status"] == "finished")].sort_values("seed")
    if members.empty:
        return f"group {group[:8]}: no finished runs"
    results = store.results(run_ids=list(members["id"]))
    first = members.iloc[0]
    title = (f"group {group[:8]}: {first['method']} {first['protocol']} on {first['dataset']}/{first['split']}, "
             f"seeds {', '.join(str(s) for s in members['seed'])}")
    miou = results[results["metric"].str.startswith("miou") & (results["class"] == "")]
    if headline_only:
        heads = headline_rows(results, members)
        if heads.empty:
            return title
        return f"{title}: {heads.iloc[0]['metric']} {_mean_std(heads['value'])}"
    lines = [title]
    width = 8 + 26 * len(members)
    key = ["protocol", "test_modalities", "condition", "corruption", "metric"]
    header = f"{'case':<34} " + " ".join(f"{'seed ' + str(s):>24}" for s in members["seed"]) + f"  {'mean ± std':>16}"
    lines.append(header[: 34 + width + 20])
    for case, frame in miou.groupby(key, sort=False):
        by_run = {r.run_id: r for r in frame.itertuples()}
        cells = []
        for run_id in members["id"]:
            r = by_run.get(run_id)
            cells.append(f"{_pct(r.value)} {_interval(r.ci_low, r.ci_high):>17}" if r else f"{'':>24}")
        label = case_label(case[1], case[2], case[3], metric=case[4])
        lines.append(f"{label:<34} " + " ".join(cells) + f"  {_mean_std(frame['value'], table=True)}")
    return "\n".join(lines)


def format_comparison(frame: pd.DataFrame, run_a: str, run_b: str, resamples: int) -> str:
    lines = [f"b - a in mIoU (points), a = {run_a}, b = {run_b}",
             f"paired bootstrap over {_units(frame)}, {resamples} resamples; * p < 0.05 (the 95% CI excludes 0)"]
    width = max([len(_case_label(r)) for r in frame.itertuples()] + [10])
    lines.append(f"{'case':<{width}}  {'a':>6}  {'b':>6}  {'b - a':>7}  {'95% CI':^18}  {'p':>6}  {'n':>5}")
    for r in frame.itertuples():
        star = "*" if r.p_value < 0.05 else " "
        lines.append(f"{_case_label(r):<{width}}  {_pct(r.a)}  {_pct(r.b)}  {100 * r.difference:+7.2f}  "
                     f"{_interval(r.ci_low, r.ci_high):^18}  {r.p_value:6.3f}{star} {r.n_samples:5d}")
    return "\n".join(lines)


def _units(frame: pd.DataFrame) -> str:
    """"scenes", "images", or both where cases differ."""
    units = sorted(set(frame["unit"])) if "unit" in frame else ["image"]
    return " / ".join(f"{u}s" for u in units) or "images"


def _case_label(r: Any) -> str:
    return case_label(r.test_modalities, r.condition, r.corruption, metric=r.metric)


def format_results(results: Sequence[CaseResult], summary: Sequence[SummaryRow],
                   rows: Sequence[ResultRow] = ()) -> str:
    """A readable table: one line per case, then the protocol's summary numbers; with the stored
    ``rows``, each mIoU-type value shows its 95% bootstrap interval."""
    intervals = {(r.test_modalities, r.condition, r.corruption, r.metric): (r.ci_low, r.ci_high)
                 for r in rows if r.metric.startswith("miou") and not r.class_name}

    def ci(key: tuple[Any, ...]) -> str:
        low, high = intervals.get(key, (float("nan"), float("nan")))
        return f"[{100 * low:6.2f}, {100 * high:6.2f}]" if low == low else ""

    width = max([len(r.case.label) for r in results] + [10])
    lines = [f"{'case':<{width}}  {'mIoU':>7}  {'95% CI':^16}  {'pixAcc':>7}  {'mF1':>7}  {'n':>5}"]
    for r in results:
        key = (tuple(r.case.test_modalities), r.case.condition, r.case.corruption_name, "miou")
        lines.append(f"{r.case.label:<{width}}  {100 * r.miou:7.2f}  {ci(key):^16}  {100 * r.pixel_accuracy:7.2f}  "
                     f"{100 * r.mean_f1:7.2f}  {r.samples:5d}")
    for s in summary:
        label = case_label(s.test_modalities, s.condition, s.corruption, metric=s.metric)
        scale = 100 if s.metric.startswith("miou") else 1
        key = (tuple(s.test_modalities), s.condition, s.corruption, s.metric)
        lines.append(f"{label:<{width}}  {scale * s.value:7.2f}  {ci(key):^16}")
    units = sorted({r.ci_unit for r in rows if r.ci_unit})
    if units:
        lines.append(f"95% CI: bootstrap over {' / '.join(u + 's' for u in units)}")
    return "\n".join(lines)
