"""`mlebench compare` and ``compare_runs``: paired differences of two runs over the same images,
recomputed from the stored per-sample counts, the table and JSON output, and runs that cannot be
paired (another split, data set or sample set) refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mlebench import stats
from mlebench.errors import ConfigError
from mlebench.report.compare import compare_runs
from mlebench.results import ResultsStore

from ..helpers import RDEL, invoke
from ..results.stores import store_with


def test_compare_pairs_the_same_images(evaluated):
    db, ids = evaluated
    store = ResultsStore(db)
    frame = compare_runs(store, ids[0], ids[1])
    assert len(frame[frame.metric == "miou"]) == 15
    a = {c.key.test_modalities: c for c in store.case_counts(ids[0])}
    b = {c.key.test_modalities: c for c in store.case_counts(ids[1])}
    row = frame[(frame.metric == "miou") & (frame.test_modalities == "rgb,lidar")].iloc[0]
    ref = stats.paired_difference(tuple(a[("rgb", "lidar")].counts.transpose(1, 0, 2)),
                                  tuple(b[("rgb", "lidar")].counts.transpose(1, 0, 2)), "present")
    assert (row.difference, row.ci_low, row.ci_high, row.p_value) == (ref.difference, ref.low, ref.high, ref.p_value)
    assert set(frame[frame.test_modalities == "*"].metric) == {"miou_avg", "miou_e_p0.2", "miou_e_p0.1",
                                                               "miou_e_p0.05"}
    # a run against itself: no difference, p = 1
    same = compare_runs(store, ids[0], ids[0])
    assert (same.difference == 0).all() and (same.p_value == 1).all()
    # a missing-modality run and a conditions run share exactly the full clean case
    mixed = compare_runs(store, ids[0], ids[2])
    assert list(mixed.test_modalities) == [",".join(RDEL)] and list(mixed.condition) == ["all"]
    assert mixed.difference.iloc[0] == 0  # the same checkpoint, the same images


def test_compare_cli_table_and_json(evaluated):
    db, ids = evaluated
    result = invoke("compare", ids[0], ids[1], "--results", str(db), "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["run_a"] == ids[0] and len(payload["cases"]) == 15 + 4
    frame = compare_runs(ResultsStore(db), ids[0], ids[1])
    assert [c["difference"] for c in payload["cases"]] == list(frame.difference)
    table = invoke("compare", ids[0], ids[1], "--results", str(db))
    assert table.exit_code == 0
    line = next(ln for ln in table.output.splitlines() if ln.startswith("rgb-lidar "))
    row = frame[(frame.metric == "miou") & (frame.test_modalities == "rgb,lidar")].iloc[0]
    assert f"{100 * row.difference:+.2f}" in line and f"[{100 * row.ci_low:.2f}, {100 * row.ci_high:.2f}]" in line


def test_compare_refuses_runs_that_cannot_be_paired(tmp_path: Path):
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 50, size=(4, 3, 5))
    ids = store_with(tmp_path / "r.sqlite", [
        {"ids": list("abcd"), "counts": counts},
        {"ids": list("abcd"), "counts": counts, "split": "test"},
        {"ids": list("abcd"), "counts": counts, "dataset": "deliver"},
        {"ids": list("abce"), "counts": counts},
        {"ids": list("dcba"), "counts": counts[::-1]},
    ])
    store = ResultsStore(tmp_path / "r.sqlite")
    with pytest.raises(ConfigError, match=r"are on different splits \(val vs test\)"):
        compare_runs(store, ids[0], ids[1])
    with pytest.raises(ConfigError, match=r"are on different data sets \(synthetic vs deliver\)"):
        compare_runs(store, ids[0], ids[2])
    with pytest.raises(ConfigError, match=r"scored different samples for rgb \(1 only in a, 1 only in b\)"):
        compare_runs(store, ids[0], ids[3])
    with pytest.raises(ConfigError, match="no run nope"):
        compare_runs(store, ids[0], "nope")
    # the same samples in another order are aligned by id: identical counts, no difference
    aligned = compare_runs(store, ids[0], ids[4])
    assert aligned.difference.iloc[0] == 0 and aligned.p_value.iloc[0] == 1
    result = invoke("compare", ids[0], ids[1], "--results", str(tmp_path / "r.sqlite"))
    assert result.exit_code == 1 and "different splits" in result.output
