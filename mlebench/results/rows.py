"""The row vocabulary of the results store, and the mapping from evaluation results to rows.

A run's evaluation gives :class:`~mlebench.protocols.CaseResult` s (one per case, with per-sample
counts) and the protocol's :class:`~mlebench.protocols.SummaryRow` s. :func:`result_rows` turns
them into :class:`ResultRow` s — every mIoU-type value with its bootstrap interval, computed from
the per-sample counts by :mod:`mlebench.stats` — and :func:`case_counts` into the per-sample
records the store keeps for later statistics (``mlebench compare``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from mlebench import stats
from mlebench.protocols.base import CaseResult, EvalCase, SummaryRow, case_label

#: metrics that get a bootstrap interval (an mIoU of summed counts, or a weighted sum of them)
INTERVAL_METRICS = ("miou",)


@dataclass(frozen=True)
class CaseKey:
    """What identifies an evaluation case inside a run (and across runs, for comparisons)."""

    protocol: str
    test_modalities: tuple[str, ...]
    condition: str
    corruption: str

    @classmethod
    def of(cls, protocol: str, case: EvalCase) -> "CaseKey":
        return cls(protocol, tuple(case.test_modalities), case.condition, case.corruption_name)

    @property
    def label(self) -> str:
        return case_label(self.test_modalities, self.condition, self.corruption)


@dataclass(frozen=True)
class ResultRow:
    """One metric value of a run under one evaluation setting.

    ``class_name`` is ``""`` for aggregate metrics and the class name for per-class values.
    ``ci_low``/``ci_high`` bound the 95% bootstrap interval where one exists (NaN otherwise);
    ``ci_unit`` says what it resampled: "scene" or "image" ("" without an interval).
    ``terms`` (summary rows only): the cases and weights whose mIoUs the value sums.
    """

    protocol: str
    test_modalities: tuple[str, ...]
    condition: str
    corruption: str
    metric: str
    value: float
    class_name: str = ""
    ci_low: float = math.nan
    ci_high: float = math.nan
    terms: tuple[tuple[CaseKey, float], ...] = ()
    ci_unit: str = ""


@dataclass(frozen=True)
class CaseCounts:
    """The per-sample counts of one case: ``counts`` (N, 3, K) int (tp, fp, fn per class), and
    each sample's scene where the data set records them (None otherwise)."""

    key: CaseKey
    sample_ids: tuple[str, ...]
    counts: np.ndarray
    scenes: tuple[str, ...] | None = None

    def clusters(self, unit: str = "scene") -> tuple[str, ...] | None:
        """What a bootstrap of ``unit`` resamples: the scenes, or None (single images)."""
        return self.scenes if unit == "scene" else None


@dataclass(frozen=True)
class BootstrapSpec:
    """How intervals are drawn: resamples, seed, level and unit (recorded with the run).

    ``unit``: "scene" resamples whole scenes where the data set records them and single images
    where it does not; "image" always resamples single images (the choice: scenes, since frames
    of one scene or sequence are related; see docs/benchmark.md for the coverage simulation).
    """

    resamples: int = 1000
    seed: int = 0
    level: float = 0.95
    unit: str = "scene"

    def clusters(self, scenes: Sequence[str] | None) -> Sequence[str] | None:
        return scenes if self.unit == "scene" and scenes is not None else None


def _triple(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return counts[:, 0], counts[:, 1], counts[:, 2]


def case_counts(protocol: str, results: Sequence[CaseResult]) -> list[CaseCounts]:
    return [CaseCounts(CaseKey.of(protocol, r.case), tuple(r.sample_ids), np.asarray(r.counts),
                       tuple(r.scenes) if r.scenes is not None else None)
            for r in results if r.counts is not None]


def result_rows(
    protocol: str,
    results: Sequence[CaseResult],
    summary: Sequence[SummaryRow],
    classes: Sequence[str],
    convention: str,
    bootstrap: BootstrapSpec | None = None,
) -> list[ResultRow]:
    """Every case metric, per-class IoU and summary number, mIoU-type values with intervals.

    ``bootstrap=None`` skips the intervals (NaN bounds).
    """
    rows: list[ResultRow] = []
    by_case = {r.case: r for r in results}
    for r in results:
        key = CaseKey.of(protocol, r.case)
        base = {"protocol": protocol, "test_modalities": key.test_modalities, "condition": key.condition,
                "corruption": key.corruption}  # fmt: skip
        low = high = math.nan
        unit = ""
        if bootstrap is not None and r.counts is not None and len(r.sample_ids):
            interval = stats.miou_interval(*_triple(r.counts), convention=convention,
                                           resamples=bootstrap.resamples, seed=bootstrap.seed, level=bootstrap.level,
                                           clusters=bootstrap.clusters(r.scenes))
            low, high, unit = interval.low, interval.high, interval.unit
        rows.append(ResultRow(metric="miou", value=r.miou, ci_low=low, ci_high=high, ci_unit=unit, **base))
        rows.append(ResultRow(metric="pixel_accuracy", value=r.pixel_accuracy, **base))
        rows.append(ResultRow(metric="mean_f1", value=r.mean_f1, **base))
        rows.append(ResultRow(metric="samples", value=float(r.samples), **base))
        rows += [ResultRow(metric="iou", value=v, class_name=c, **base) for c, v in zip(classes, r.iou)]
    for s in summary:
        low = high = math.nan
        unit = ""
        terms = tuple((CaseKey.of(protocol, case), float(w)) for case, w in s.terms)
        if bootstrap is not None and s.terms:
            low, high, unit = summary_interval(s, by_case, convention, bootstrap)
        rows.append(ResultRow(protocol=protocol, test_modalities=tuple(s.test_modalities), condition=s.condition,
                              corruption=s.corruption, metric=s.metric, value=s.value, ci_low=low, ci_high=high,
                              terms=terms, ci_unit=unit))  # fmt: skip
    return rows


def summary_interval(
    row: SummaryRow, by_case: dict[EvalCase, CaseResult], convention: str, bootstrap: BootstrapSpec
) -> tuple[float, float, str]:
    """Interval of a weighted sum of case mIoUs, all cases resampled together (same samples),
    and its unit."""
    members = [by_case[case] for case, _ in row.terms]
    if any(m.counts is None for m in members) or len({tuple(m.sample_ids) for m in members}) != 1:
        return math.nan, math.nan, ""  # the cases do not share their samples: no joint resampling
    weights = np.array([w for _, w in row.terms])
    interval = stats.summary_interval([_triple(m.counts) for m in members], lambda m: m @ weights,
                                      convention=convention, resamples=bootstrap.resamples, seed=bootstrap.seed,
                                      level=bootstrap.level, clusters=bootstrap.clusters(members[0].scenes))
    return interval.low, interval.high, interval.unit
