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
    # a run against itself is said to be that
    with pytest.raises(ConfigError, match=f"RUN_A and RUN_B are the same run \\({ids[0]}\\)"):
        compare_runs(store, ids[0], ids[0])
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


def test_compare_aligns_by_sample_id_what_another_order_stored(tmp_path: Path):
    """Run b stored its samples in the reverse order and is better on one image only: the paired
    bootstrap must pair each image with itself (a misalignment keeps the summed mIoU but not the
    interval or the p-value), and b - a is b minus a, not the other way round."""
    rng = np.random.default_rng(3)
    ids_ab = list("abcdefgh")
    a = rng.integers(0, 40, size=(8, 3, 5))
    b = a.copy()
    b[0, 0] += 60  # image 'a': many more true positives...
    b[0, 2] = 0  # ...and no misses
    ids = store_with(tmp_path / "r.sqlite", [{"ids": ids_ab, "counts": a},
                                             {"ids": ids_ab[::-1], "counts": b[::-1]}])
    frame = compare_runs(ResultsStore(tmp_path / "r.sqlite"), ids[0], ids[1], resamples=400, seed=5)
    ref = stats.paired_difference(tuple(a.transpose(1, 0, 2)), tuple(b.transpose(1, 0, 2)), "present",
                                  resamples=400, seed=5)
    row = frame.iloc[0]
    assert (row.difference, row.ci_low, row.ci_high, row.p_value) == (ref.difference, ref.low, ref.high, ref.p_value)
    assert row.difference > 0 and row.ci_low >= 0  # b is the better run: b - a > 0 on every resample
    backwards = compare_runs(ResultsStore(tmp_path / "r.sqlite"), ids[1], ids[0], resamples=400, seed=5)
    assert backwards.difference.iloc[0] == -row.difference and backwards.ci_high.iloc[0] <= 0


def test_compare_refuses_runs_on_other_data_with_the_same_ids(tmp_path: Path):
    """Two synthetic sets of different seeds share every sample id: their fingerprints tell them
    apart, and the pairing is refused in one line naming both."""
    rng = np.random.default_rng(1)
    counts = rng.integers(0, 50, size=(4, 3, 5))
    data = {"dataset": "synthetic", "split": "val", "samples": 4, "root": "/data/seed0", "fingerprint": "aaaa"}
    ids = store_with(tmp_path / "r.sqlite", [
        {"ids": list("abcd"), "counts": counts, "config": {"data": data}},
        {"ids": list("abcd"), "counts": counts, "config": {"data": {**data, "root": "/data/seed1",
                                                                    "fingerprint": "bbbb"}}},
        {"ids": list("abcd"), "counts": counts, "config": {"data": {**data, "root": "/copy/of/seed0"}}},
        {"ids": list("abcd"), "counts": counts},  # stored before runs recorded their data
    ])
    store = ResultsStore(tmp_path / "r.sqlite")
    with pytest.raises(ConfigError, match=f"runs {ids[0]} and {ids[1]} were evaluated on different data "
                                          r"\(synthetic/val at /data/seed0, 4 samples, fingerprint aaaa vs "
                                          r"synthetic/val at /data/seed1, 4 samples, fingerprint bbbb\)"):
        compare_runs(store, ids[0], ids[1])
    assert compare_runs(store, ids[0], ids[2]).difference.iloc[0] == 0  # the same files elsewhere: paired
    assert compare_runs(store, ids[0], ids[3]).difference.iloc[0] == 0  # no identity recorded: by id, as before
    result = invoke("compare", ids[0], ids[1], "--results", str(tmp_path / "r.sqlite"))
    assert result.exit_code == 1 and result.output.count("Error:") == 1 and "different data" in result.output


def test_compare_resamples_scenes_where_recorded_and_images_when_told(tmp_path: Path):
    """Frames in scenes of five with a scene effect on run b's gain: the paired interval and
    p-value resample whole scenes (stored with the counts), agree with each other, and equal
    stats.paired_difference with those clusters; --unit image gives the image bootstrap."""
    rng = np.random.default_rng(4)
    n, k = 40, 6
    ids = [f"f{i:02d}" for i in range(n)]
    scenes = [f"scene{i // 5}" for i in range(n)]
    truth = rng.integers(100, 300, size=(n, k))
    tp_a = (truth * 0.5).astype(np.int64)
    gain = np.repeat(rng.integers(-30, 40, size=(n // 5, 1)), 5, axis=0)  # what b gains, per scene
    tp_b = np.clip(tp_a + gain, 0, truth)
    fp = rng.integers(0, 50, size=(n, k))
    a = np.stack([tp_a, fp, truth - tp_a], axis=1)
    b = np.stack([tp_b, fp, truth - tp_b], axis=1)
    db = tmp_path / "r.sqlite"
    run_a, run_b = store_with(db, [{"ids": ids, "counts": a, "scenes": scenes}, {"ids": ids, "counts": b,
                                                                                 "scenes": scenes}])
    store = ResultsStore(db)
    assert store.case_counts(run_a)[0].scenes == tuple(scenes)
    by_scene = compare_runs(store, run_a, run_b).iloc[0]
    by_image = compare_runs(store, run_a, run_b, unit="image").iloc[0]
    triple = lambda c: (c[:, 0], c[:, 1], c[:, 2])  # noqa: E731
    ref = stats.paired_difference(triple(a), triple(b), "present", clusters=scenes)
    assert (by_scene.ci_low, by_scene.ci_high, by_scene.p_value, by_scene.unit) == (ref.low, ref.high, ref.p_value,
                                                                                    "scene")
    assert by_image.unit == "image" and by_image.ci_high - by_image.ci_low < by_scene.ci_high - by_scene.ci_low
    for row in (by_scene, by_image):
        assert (row.p_value < 0.05) == (row.ci_low > 0 or row.ci_high < 0)
    table = invoke("compare", run_a, run_b, "--results", db, "--unit", "image")
    assert table.exit_code == 0 and "paired bootstrap over images" in table.output
    assert "paired bootstrap over scenes" in invoke("compare", run_a, run_b, "--results", db).output
