"""The ↑/↓ marks of report tables: each single-run cell of a non-reference method against the
reference method's run on the same training modalities and images, by the paired bootstrap of
:func:`mlebench.report.compare.compare_runs` (whole scenes where the data set records them).

A table compares many cells at once, so the marks are corrected for their number: Holm's
step-down procedure over every cell of the table that has a comparison keeps the chance of any
false mark in the table at most ``SIGNIFICANCE`` (statsmodels' ``multipletests``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import pandas as pd

from mlebench.errors import ConfigError
from mlebench.results.store import ResultsStore

SIGNIFICANCE = 0.05


@dataclass(frozen=True)
class Comparison:
    """One cell against the reference: ``b - a`` and its uncorrected two-sided p-value."""

    difference: float
    p_value: float
    unit: str


class SignificanceCache:
    """Paired-bootstrap comparisons of a run against the reference method's run, computed once per
    pair of runs."""

    def __init__(self, store: ResultsStore) -> None:
        self.store = store
        self.cache: dict[tuple[str, str], pd.DataFrame | None] = {}
        self.other_data = False  # some reference run was evaluated on other data: left unmarked

    def compare(self, row: Any, reference: str, frame: pd.DataFrame) -> Comparison | None:
        """The cell ``row`` (a single run's value) against the reference's run; None when there
        is nothing to compare with."""
        runs = frame.drop_duplicates("run_id").set_index("run_id")
        if row.run_id not in runs.index or runs.loc[row.run_id, "method"] == reference:
            return None
        me = runs.loc[row.run_id]
        same = runs[(runs["method"] == reference) & (runs["train_modalities"] == me["train_modalities"])]
        if same.empty:
            return None
        pair = (same.index[-1], row.run_id)
        if pair not in self.cache:
            from mlebench.report.compare import OtherData, compare_runs

            try:
                self.cache[pair] = compare_runs(self.store, *pair)
            except OtherData:
                self.cache[pair] = None
                self.other_data = True
            except ConfigError:
                self.cache[pair] = None
        found = self.cache[pair]
        if found is None:
            return None
        hit = found[(found["test_modalities"] == row.test_modalities) & (found["condition"] == row.condition)
                    & (found["corruption"] == row.corruption) & (found["metric"] == row.metric)]
        if hit.empty or hit["p_value"].isna().iloc[0]:
            return None
        return Comparison(float(hit["difference"].iloc[0]), float(hit["p_value"].iloc[0]), str(hit["unit"].iloc[0]))


def holm_marks(comparisons: Sequence[Comparison], alpha: float = SIGNIFICANCE) -> list[str]:
    """"↑", "↓" or "" per comparison: significant after Holm's correction over all of them."""
    if not comparisons:
        return []
    from statsmodels.stats.multitest import multipletests

    reject = multipletests([c.p_value for c in comparisons], alpha=alpha, method="holm")[0]
    return [("↑" if c.difference > 0 else "↓") if r else "" for c, r in zip(comparisons, reject)]


def marks_note(reference: str, compared: int, units: set[str]) -> str:
    over = " / ".join(sorted(f"{u}s" for u in units)) or "images"
    return (f"↑/↓: better/worse than {reference} on the same images (paired bootstrap over {over}), "
            f"Holm-corrected over the {compared} cell(s) compared in this table: the chance of any false "
            f"mark in the table is at most {SIGNIFICANCE:g}.")
