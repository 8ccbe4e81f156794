"""``missing-modality``: every non-empty subset of the training modalities, from ONE model.

Summary numbers (paper Sec. IV-D, Tab. VI/VII and the "Mean" column):

- ``miou_avg``: the plain mean of mIoU over all subsets;
- ``miou_e_p{p}``: the expected mIoU when each modality is missing independently with rate p:
  subset S weighted by ``p^(#missing) (1-p)^(#present)``, renormalised over the non-empty
  subsets (the empty set has no prediction), for p in 0.2, 0.1, 0.05.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Sequence

from mlebench.data.base import DatasetInfo
from mlebench.protocols.base import (
    CaseResult,
    EvalCase,
    Protocol,
    SummaryRow,
    TableSpec,
    all_subset_labels,
    ordered,
    register_protocol,
    subset_label,
)

MISSING_RATES = (0.2, 0.1, 0.05)


def all_subsets(modalities: Sequence[str]) -> list[tuple[str, ...]]:
    """Non-empty subsets, smallest first, each in the given order (15 for four)."""
    return [s for r in range(1, len(modalities) + 1) for s in itertools.combinations(modalities, r)]


def expected_weights(subsets: Sequence[tuple[str, ...]], modalities: Sequence[str], p: float) -> dict[tuple[str, ...], float]:
    """Each subset's probability when every modality is missing independently with rate p,
    renormalised over the given (non-empty) subsets."""
    n = len(modalities)
    weights = {s: p ** (n - len(s)) * (1 - p) ** len(s) for s in subsets}
    total = sum(weights.values())
    return {s: w / total for s, w in weights.items()}


def expected_miou(miou_by_subset: dict[tuple[str, ...], float], modalities: Sequence[str], p: float) -> float:
    weights = expected_weights(list(miou_by_subset), modalities, p)
    return sum(w * miou_by_subset[s] for s, w in weights.items())


SUMMARY_COLUMNS = {"miou_avg": "Mean", **{f"miou_e_p{p:g}": f"E[p={p:g}]" for p in MISSING_RATES}}


def _by_subset(frame: Any, info: DatasetInfo) -> Any:
    out = frame[(frame.metric == "miou") | frame.metric.isin(list(SUMMARY_COLUMNS))].copy()
    out["test"] = [SUMMARY_COLUMNS.get(metric, subset_label(mods, info) if metric == "miou" else metric)
                   for metric, mods in zip(out.metric, out.test_modalities)]
    out["test"] = ordered(out.test, [*all_subset_labels(info), *SUMMARY_COLUMNS.values()])
    out["train"] = ordered([subset_label(m, info) for m in out.train_modalities], all_subset_labels(info))
    return out


@register_protocol("missing-modality")
class MissingModality(Protocol):
    description = "every non-empty subset of the training modalities (mIoU^Avg, mIoU^E)"

    def cases(self, train_modalities: Sequence[str], info: DatasetInfo) -> list[EvalCase]:
        return [EvalCase(s) for s in all_subsets(train_modalities)]

    def summary(
        self, results: Sequence[CaseResult], train_modalities: Sequence[str], artifacts: Path | None = None
    ) -> list[SummaryRow]:
        by_subset = {r.case.test_modalities: r.miou for r in results}
        cases = {r.case.test_modalities: r.case for r in results}
        uniform = tuple((cases[s], 1 / len(cases)) for s in cases)
        rows = [SummaryRow("miou_avg", sum(by_subset.values()) / len(by_subset), terms=uniform)]
        for p in MISSING_RATES:
            weights = expected_weights(list(by_subset), train_modalities, p)
            rows.append(SummaryRow(f"miou_e_p{p:g}", expected_miou(by_subset, train_modalities, p),
                                   terms=tuple((cases[s], w) for s, w in weights.items())))
        return rows

    @classmethod
    def tables(cls) -> list[TableSpec]:
        return [TableSpec(
            "missing-modality", "mIoU (%) of one model per training combination on every test subset, with the "
            "mean over subsets and the expected mIoU when each modality is missing with rate p (as the paper's "
            "Tab. VI-VII)", rows=("method", "train"), columns=("test",), prepare=_by_subset, delta_rows=True,
        )]
