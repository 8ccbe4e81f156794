"""``mlebench compare``: is the difference between two runs real?

For every case the two runs share (same test modalities, condition and corruption, whatever
protocol produced it), the difference in mIoU ``b - a`` with a paired-bootstrap 95% interval and
a two-sided p-value (:func:`mlebench.stats.paired_difference`): both runs are resampled with the
SAME resampled scenes (whole scenes where the data set records them, single images where it does
not, or always images with ``unit="image"``), so what is hard for one is hard for the other and
only the difference varies. The p-value and the interval come from the same resampled
differences: p < 0.05 exactly when the 95% interval excludes 0. Summary numbers (mIoU^Avg, mIoU^E) whose cases are all shared are compared the same way.

Runs are only comparable on the same data set, split, mIoU convention and scored samples; any
other pairing is refused with a message that says what differs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from mlebench import stats
from mlebench.errors import ConfigError
from mlebench.protocols import case_label
from mlebench.results.rows import CaseCounts
from mlebench.results.store import ResultsStore

COMPARE_COLUMNS = ("protocol", "test_modalities", "condition", "corruption", "metric", "a", "b", "difference",
                   "ci_low", "ci_high", "p_value", "n_samples", "unit")  # fmt: skip
UNITS = ("scene", "image")


def _run(store: ResultsStore, run_id: str) -> Any:
    runs = store.runs()
    found = runs[runs["id"] == run_id]
    if found.empty:
        raise ConfigError(f"no run {run_id} in results file {store.path}")
    run = found.iloc[0]
    if run["status"] != "finished":
        raise ConfigError(f"run {run_id} is {run['status']}, not finished: nothing to compare")
    return run


class OtherData(ConfigError):
    """Two runs were evaluated on different data (their fingerprints differ)."""


def check_same_data(run_a: str, config_a: dict[str, Any], run_b: str, config_b: dict[str, Any]) -> None:
    """Refuse a pairing of runs whose data identities (recorded by every run since they were
    introduced, see :meth:`mlebench.data.base.MultiModalDataset.identity`) differ: the same
    sample ids on other images would pair unrelated numbers. Runs that record none are paired by
    sample id alone, as before."""
    ida, idb = (config_a or {}).get("data"), (config_b or {}).get("data")
    if not ida or not idb or ida.get("fingerprint") == idb.get("fingerprint"):
        return
    raise OtherData(f"runs {run_a} and {run_b} were evaluated on different data ({_where(ida)} vs {_where(idb)}); "
                    "a paired comparison needs the same images")


def _where(identity: dict[str, Any]) -> str:
    return (f"{identity.get('dataset')}/{identity.get('split')} at {identity.get('root')}, "
            f"{identity.get('samples')} samples, fingerprint {identity.get('fingerprint')}")


def _case_key(c: CaseCounts) -> tuple[str, str, str]:
    return (",".join(c.key.test_modalities), c.key.condition, c.key.corruption)


def compare_runs(store: ResultsStore, run_a: str, run_b: str, resamples: int = 1000, seed: int = 0,
                 level: float = 0.95, unit: str = "scene") -> pd.DataFrame:
    """One row per shared case and summary metric: ``a``, ``b``, ``b - a`` with interval, p and
    the unit resampled."""
    if unit not in UNITS:
        raise ConfigError(f"unit {unit!r}: resample 'scene' or 'image'")
    if run_a == run_b:
        raise ConfigError(f"RUN_A and RUN_B are the same run ({run_a}); compare two different runs")
    a, b = _run(store, run_a), _run(store, run_b)
    for field, what in (("dataset", "data sets"), ("split", "splits"), ("miou_convention", "mIoU conventions")):
        if a[field] != b[field]:
            raise ConfigError(f"runs {run_a} and {run_b} are on different {what} "
                              f"({a[field]} vs {b[field]}); they cannot be compared")
    check_same_data(run_a, a["config"], run_b, b["config"])
    counts_a, counts_b = store.case_counts(run_a), store.case_counts(run_b)
    for run_id, counts in ((run_a, counts_a), (run_b, counts_b)):
        if not counts:
            raise ConfigError(f"run {run_id} has no per-sample counts (stored before schema 2, or empty); "
                              f"re-run its evaluation to compare it")
    by_a = {_case_key(c): c for c in counts_a}
    by_b = {_case_key(c): c for c in counts_b}
    shared = [k for k in by_a if k in by_b and (by_a[k].sample_ids or by_b[k].sample_ids)]  # empty: nothing to pair
    if not shared:
        raise ConfigError(f"runs {run_a} and {run_b} share no evaluation case "
                          f"(a: {', '.join(case_label(*k) for k in by_a)}; b: {', '.join(case_label(*k) for k in by_b)})")
    convention = a["miou_convention"] or "deliver"
    aligned: dict[tuple[str, str, str], tuple[CaseCounts, np.ndarray]] = {}
    for key in shared:
        ca, cb = by_a[key], by_b[key]
        if set(ca.sample_ids) != set(cb.sample_ids):
            only_a = len(set(ca.sample_ids) - set(cb.sample_ids))
            only_b = len(set(cb.sample_ids) - set(ca.sample_ids))
            raise ConfigError(f"runs {run_a} and {run_b} scored different samples for {case_label(*key)} "
                              f"({only_a} only in a, {only_b} only in b); they cannot be paired")
        if ca.counts.shape[2] != cb.counts.shape[2]:
            raise ConfigError(f"runs {run_a} and {run_b} have {ca.counts.shape[2]} vs {cb.counts.shape[2]} classes")
        order = {sid: i for i, sid in enumerate(cb.sample_ids)}
        aligned[key] = (ca, cb.counts[[order[sid] for sid in ca.sample_ids]])
    rows = []
    for key in shared:
        ca, cb_counts = aligned[key]
        paired = stats.paired_difference(_triple(ca.counts), _triple(cb_counts), convention, resamples, seed, level,
                                         clusters=ca.clusters(unit))
        rows.append(_row(ca.key.protocol, key, "miou", paired, ca.counts, cb_counts, convention))
    rows += _summary_rows(store, run_a, run_b, aligned, convention, resamples, seed, level, unit)
    return pd.DataFrame(rows, columns=list(COMPARE_COLUMNS))


def _triple(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return counts[:, 0], counts[:, 1], counts[:, 2]


def _row(protocol: str, key: tuple[str, str, str], metric: str, paired: stats.PairedResult, a_counts: np.ndarray,
         b_counts: np.ndarray | None, convention: str, a_value: float | None = None,
         b_value: float | None = None) -> dict[str, Any]:
    if a_value is None:
        a_value = stats.miou_from_counts(*_triple(a_counts), convention=convention)
        b_value = stats.miou_from_counts(*_triple(b_counts), convention=convention)
    return {"protocol": protocol, "test_modalities": key[0], "condition": key[1], "corruption": key[2],
            "metric": metric, "a": a_value, "b": b_value, "difference": paired.difference, "ci_low": paired.low,
            "ci_high": paired.high, "p_value": paired.p_value, "n_samples": paired.n_samples,
            "unit": paired.unit}  # fmt: skip


def _summary_rows(store: ResultsStore, run_a: str, run_b: str, aligned: dict, convention: str, resamples: int,
                  seed: int, level: float, unit: str) -> list[dict[str, Any]]:
    terms_a, terms_b = store.summary_terms(run_a), store.summary_terms(run_b)
    rows = []
    for (protocol, mods, condition, corruption, metric), terms in terms_a.items():
        other = next((t for (p, m, c, k, name), t in terms_b.items()
                      if (m, c, k, name) == (mods, condition, corruption, metric)), None)
        if other is None:
            continue
        keys_a = [((",".join(case.test_modalities), case.condition, case.corruption), w) for case, w in terms]
        keys_b = [((",".join(case.test_modalities), case.condition, case.corruption), w) for case, w in other]
        if sorted(keys_a) != sorted(keys_b) or any(k not in aligned for k, _ in keys_a):
            continue  # a different set of cases or weights: not the same summary
        weights = np.array([w for _, w in keys_a])
        a_cases = [_triple(aligned[k][0].counts) for k, _ in keys_a]
        b_cases = [_triple(aligned[k][1]) for k, _ in keys_a]
        paired = stats.paired_summary_difference(a_cases, b_cases, lambda m: m @ weights, convention, resamples,
                                                 seed, level, clusters=aligned[keys_a[0][0]][0].clusters(unit))
        a_value = float(np.array([stats.miou_from_counts(*c, convention=convention) for c in a_cases]) @ weights)
        b_value = float(np.array([stats.miou_from_counts(*c, convention=convention) for c in b_cases]) @ weights)
        rows.append(_row(protocol, (mods, condition, corruption), metric, paired, None, None, convention,
                         a_value, b_value))
    return rows
