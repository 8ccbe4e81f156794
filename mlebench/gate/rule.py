"""The gate's decision: which numbers decide, and by how much each may fall.

The decision is taken on a few **gated figures** per method — the full-modality mIoU (protocol
``full``) and mIoU^Avg, the mean over the 15 modality subsets (protocol ``missing-modality``) —
with a **family-wise** error rate: when nothing but the training seed changes, the whole gate
(every method, every figure) passes with probability at least ``1 - FAMILY_ALPHA``. With ``F``
gated figures in the check, each is tested at ``alpha = FAMILY_ALPHA / F`` (Bonferroni; valid
whatever the figures' correlation), and fails when

    now < mean - max(t(1 - alpha, n - 1) * sd * sqrt(1 + 1/n), thread_delta, FLOOR_POINTS)

``mean``, ``sd`` and ``n`` are over the baseline's training seeds that have a value, and the
checked run is a seed that is not one of them: the bound is the one-sided prediction bound of one
*new* run of the same recipe. ``thread_delta`` is how much the figure moved when the first
baseline seed was re-run at another thread count; ``FLOOR_POINTS`` keeps a figure whose seeds
agree exactly from failing on rounding. The rate is measured, not assumed: docs/benchmark.md
lists the held-out seeds checked with ``mlebench check --seed N`` and how many passed.

Every other case (each subset, mIoU^E) is compared with its own uncorrected 95% bound and
only reported ("watch"): about 1 case in 20 is below it by chance with no change at all.
A case of the baseline that the run no longer produces fails the gate, as does a registered
method without a baseline and a baseline method that is no longer registered.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Sequence

import pandas as pd
from scipy import stats as scipy_stats

from mlebench.gate.baseline import COMPARED_PACKAGES, Baseline, BaselineCase
from mlebench.gate.measure import Measures

FAMILY_ALPHA = 0.05
CASE_ALPHA = 0.05  # the uncorrected per-case "watch" bound (reported, never failing)
FLOOR_POINTS = 0.05
POWER = 0.95  # "reliably detected": caught 95% of the time
#: (protocol, metric) of the figures that decide; one case each per method.
GATED = (("full", "miou"), ("missing-modality", "miou_avg"))

COLUMNS = ["method", "protocol", "case", "metric", "gated", "n", "baseline", "sd", "now", "delta", "alpha",
           "allowed_drop", "detectable_drop", "status"]


def is_gated(case: BaselineCase) -> bool:
    return (case.protocol, case.metric) in GATED


def prediction_bound(values: Sequence[float], alpha: float) -> float:
    """``t(1 - alpha, n - 1) * sd * sqrt(1 + 1/n)``: how far below the mean of ``n`` runs one new
    run falls with probability ``alpha`` (normal seed-to-seed spread)."""
    n = len(values)
    if n < 2:
        raise ValueError(f"a prediction bound needs at least 2 values, got {n}")
    return float(scipy_stats.t.ppf(1 - alpha, n - 1)) * statistics.stdev(values) * math.sqrt(1 + 1 / n)


def allowed_drop(values: Sequence[float], alpha: float, thread_delta: float) -> float:
    return max(prediction_bound(values, alpha), thread_delta, FLOOR_POINTS)


def detectable_drop(allowed: float, sd: float, power: float = POWER) -> float:
    """The smallest true drop the figure catches with probability ``power``: a new run falls
    about normally around ``mean - drop`` with the seeds' spread, so a drop of ``allowed +
    z(power) * sd`` lands below the bound ``power`` of the time."""
    return allowed + float(scipy_stats.norm.ppf(power)) * sd


def thread_delta(case: BaselineCase, thread_seed: int) -> float:
    """How far the first seed moved at the other thread count (0 when either has no value)."""
    base = case.seeds.get(thread_seed)
    return abs(case.other_threads - base) if case.other_threads is not None and base is not None else 0.0


@dataclass
class GateResult:
    table: pd.DataFrame  # one row per compared case
    missing_methods: list[str] = field(default_factory=list)  # checked, no baseline
    retired_methods: list[str] = field(default_factory=list)  # in the baseline, not registered
    warnings: list[str] = field(default_factory=list)
    family_alpha: float = FAMILY_ALPHA

    @property
    def gated(self) -> pd.DataFrame:
        return self.table[self.table["gated"]]

    @property
    def failed(self) -> pd.DataFrame:
        return self.table[self.table["status"].isin(["fell", "gone"])]

    @property
    def watched(self) -> pd.DataFrame:
        return self.table[self.table["status"] == "watch"]

    @property
    def improved(self) -> pd.DataFrame:
        return self.table[self.table["status"] == "improved"]

    @property
    def passed(self) -> bool:
        return self.failed.empty and not self.missing_methods and not self.retired_methods


def compare_with_baseline(now: Measures, baseline: Baseline, methods: Sequence[str],
                          registered: Sequence[str], versions: dict[str, str] | None = None,
                          family_alpha: float = FAMILY_ALPHA) -> GateResult:
    """Compare the new run of ``methods`` (registered ones, being checked) with the baseline."""
    cases = [c for c in baseline.cases if c.method in methods]
    n_gated = sum(is_gated(c) for c in cases)
    rows = []
    for c in cases:
        record = baseline.methods[c.method]
        values = c.values
        gated = is_gated(c)
        alpha = family_alpha / n_gated if gated else CASE_ALPHA
        allowed = allowed_drop(values, alpha, thread_delta(c, record.thread_seed))
        mean = statistics.fmean(values)
        got = now.get(c.key)
        value = got.value if got is not None else math.nan
        delta = value - mean
        if not math.isfinite(value):
            status = "gone"  # a case the run no longer produces (or a NaN) is a regression
        elif delta < -allowed:
            status = "fell" if gated else "watch"
        elif delta > allowed and gated:
            status = "improved"
        else:
            status = "ok"
        rows.append({"method": c.method, "protocol": c.protocol, "case": c.case, "metric": c.metric,
                     "gated": gated, "n": len(values), "baseline": mean, "sd": statistics.stdev(values),
                     "now": value, "delta": delta, "alpha": alpha, "allowed_drop": allowed,
                     "detectable_drop": detectable_drop(allowed, statistics.stdev(values)), "status": status})
    table = pd.DataFrame(rows, columns=COLUMNS)
    known = set(baseline.methods)
    return GateResult(table, missing_methods=[m for m in methods if m not in known],
                      retired_methods=sorted(known - set(registered)),
                      warnings=version_warnings(baseline, methods, versions or {}), family_alpha=family_alpha)


def version_warnings(baseline: Baseline, methods: Sequence[str], running: dict[str, str]) -> list[str]:
    """One line per package whose running version differs from the one a method's baseline was
    measured with: such a change moves numbers by about a seed's worth, so it is not a failure."""
    lines = []
    for name in COMPARED_PACKAGES:
        now = running.get(name)
        was = sorted({r.versions.get(name, "unknown") for m, r in baseline.methods.items() if m in methods} - {now})
        if now is not None and was:
            users = [m for m, r in baseline.methods.items() if m in methods and r.versions.get(name, "unknown") != now]
            lines.append(f"warning: {name} {now} runs, the baseline of {', '.join(users)} was measured with "
                         f"{name} {', '.join(was)}; numbers may move by about a seed's spread")
    return lines


def _label(row) -> str:  # type: ignore[no-untyped-def]
    label = row.case.replace("|all|none", "").replace(",", "-") if row.metric == "miou" else row.metric
    return f"{row.protocol} {label}"


def format_gate(result: GateResult) -> str:
    """The gated figures, then what fell, what to watch and what improved, then the verdict."""
    lines = []
    head = f"  {'method':<24} {'figure':<36} {'baseline':>14} {'n':>2} {'now':>7} {'change':>7} {'allowed drop':>12}"

    def block(title: str, frame: pd.DataFrame, status: bool = False) -> None:
        lines.append(title)
        lines.append(head + (f" {'detects':>8}  status" if status else ""))
        for r in frame.itertuples():
            now = f"{r.now:7.2f}" if math.isfinite(r.now) else "   gone"
            lines.append(f"  {r.method:<24} {_label(r):<36} {r.baseline:7.2f} ± {r.sd:4.2f} {r.n:2d} {now} "
                         f"{r.delta:+7.2f} {r.allowed_drop:12.2f}"
                         + (f" {r.detectable_drop:8.2f}  {r.status}" if status else ""))

    gated = result.gated
    if not gated.empty:
        alpha = gated["alpha"].iloc[0]
        block(f"gated figures: {len(gated)}, each at alpha = {result.family_alpha:g}/{len(gated)} = {alpha:.4f} "
              f"(family-wise {result.family_alpha:g}); 'detects': the drop caught {POWER:.0%} of the time",
              gated, status=True)
    gone = result.table[result.table["status"] == "gone"]
    if not gone.empty:
        block(f"FELL: {len(gone)} case(s) of the baseline are gone from the run", gone)
    fell = result.table[result.table["status"] == "fell"]
    if not fell.empty:
        lines.append(f"FELL: {len(fell)} gated figure(s) below the baseline by more than the allowed drop")
    if not result.watched.empty:
        block(f"watch: {len(result.watched)} of {len(result.table) - len(gated)} other cases below their own "
              f"uncorrected {1 - CASE_ALPHA:.0%} bound (about 1 in 20 is, with no change at all; not a failure)",
              result.watched)
    if not result.improved.empty:
        lines.append(f"improved: {len(result.improved)} gated figure(s) above the baseline by more than the allowed "
                     "drop (update the baseline to keep the gain: mlebench check --update)")
    for method in result.missing_methods:
        lines.append(f"FELL: method {method} has no baseline; add it with `mlebench check --update --methods "
                     f"{method}` and commit the baseline")
    for method in result.retired_methods:
        lines.append(f"FELL: the baseline has method {method}, which is not registered; install it again, or "
                     "drop it by re-measuring with `mlebench check --update`")
    lines.extend(result.warnings)
    ok = (gated["status"] == "ok").sum()
    lines.append(f"{'FAILED' if not result.passed else 'passed'}: {len(gated)} gated figures, {ok} within "
                 f"tolerance, {len(result.improved)} improved, {len(fell)} fell; {len(result.table)} cases "
                 f"compared, {len(gone)} gone, {len(result.watched)} to watch")
    return "\n".join(lines)
