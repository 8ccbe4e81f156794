"""Per-sample counts in the store: they sum to each case's confusion matrix (cached or not, at any
batch size), the stored mIoU and its bootstrap interval are those of the stored counts, summary
intervals resample all subsets together, and the counts are stored compactly."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch

from mlebench import stats
from mlebench.data import load_dataset
from mlebench.data.transforms import Normalize
from mlebench.engine.evaluate import evaluate_cases
from mlebench.metrics import ConfusionMatrix
from mlebench.protocols import EvalCase
from mlebench.results import ResultsStore
from mlebench.results.rows import BootstrapSpec, CaseKey, case_counts, result_rows

from ..helpers import RDEL, perturbed_method


@pytest.fixture(scope="module")
def root(counts_synthetic: Path) -> Path:
    """The data set the ``evaluated`` store was evaluated on (tests/conftest.py)."""
    return counts_synthetic


def test_per_sample_counts_sum_to_the_confusion_matrix(root: Path):
    ds = load_dataset("synthetic", root, "val", RDEL)
    model = perturbed_method(0)
    cases = [EvalCase(("rgb",)), EvalCase(RDEL, "night"), EvalCase(RDEL, "cloud")]
    for cache in (True, False):
        for r in evaluate_cases(model, ds, cases, batch_size=4, feature_cache=cache):
            assert r.counts.shape == (r.samples, 3, model.num_classes)
            expected_ids = [ref.id for ref in ds.refs if r.case.condition in ("all", *ref.meta.values())]
            assert r.sample_ids == expected_ids  # data-set order, only the condition's samples
            assert stats.iou_from_counts(*r.counts.transpose(1, 0, 2)).tolist() == pytest.approx(
                r.iou, nan_ok=True, abs=0)
            assert stats.miou_from_counts(*r.counts.transpose(1, 0, 2), convention="present") == r.miou
            # one sample's counts against a confusion matrix of that sample alone
            index = [ref.id for ref in ds.refs].index(r.sample_ids[-1])
            sample = ds[index]
            norm = Normalize(ds.info, RDEL)(sample)
            feats = {m: model.encode(m, norm[m][None]) for m in r.case.test_modalities}
            with torch.no_grad():
                pred = model.decode(feats, (64, 64)).logits.argmax(1)[0]
            cm = ConfusionMatrix(model.num_classes)
            cm.update(pred, sample["label"])
            m = cm.matrix.numpy()
            assert r.counts[-1].tolist() == [np.diag(m).tolist(), (m.sum(0) - np.diag(m)).tolist(),
                                             (m.sum(1) - np.diag(m)).tolist()]
    batch1 = evaluate_cases(model, ds, cases[:1], batch_size=1)[0]
    batch4 = evaluate_cases(model, ds, cases[:1], batch_size=4)[0]
    assert np.array_equal(batch1.counts, batch4.counts)


def test_stored_miou_equals_the_miou_of_the_stored_counts(evaluated):
    db, ids = evaluated
    store = ResultsStore(db)
    frame = store.results()
    for run_id in ids:
        counts = store.case_counts(run_id)
        assert counts, run_id
        convention = store.runs().set_index("id").loc[run_id, "miou_convention"]
        assert convention == "present"
        for c in counts:
            stored = frame[(frame.run_id == run_id) & (frame.metric == "miou")
                           & (frame.test_modalities == ",".join(c.key.test_modalities))
                           & (frame.condition == c.key.condition)]
            assert len(stored) == 1
            if not c.sample_ids:  # a condition without samples in this split
                assert math.isnan(stored["value"].iloc[0]) and math.isnan(stored["ci_low"].iloc[0])
                continue
            assert stored["value"].iloc[0] == stats.miou_from_counts(*c.counts.transpose(1, 0, 2), convention)
            # the interval is the scene bootstrap of the same counts (1000 resamples, seed 0)
            assert c.scenes is not None and len(c.scenes) == len(c.sample_ids)
            interval = stats.miou_interval(*c.counts.transpose(1, 0, 2), convention=convention, clusters=c.scenes)
            assert (stored["ci_low"].iloc[0], stored["ci_high"].iloc[0]) == (interval.low, interval.high)
            assert stored["ci_unit"].iloc[0] == "scene"
            assert interval.low <= stored["value"].iloc[0] <= interval.high
            samples = frame[(frame.run_id == run_id) & (frame.metric == "samples")
                            & (frame.test_modalities == ",".join(c.key.test_modalities))
                            & (frame.condition == c.key.condition)]["value"].iloc[0]
            assert len(c.sample_ids) == samples


def test_summary_intervals_resample_all_subsets_together(evaluated):
    db, ids = evaluated
    store = ResultsStore(db)
    frame = store.results(run_ids=[ids[0]])
    counts = {c.key.test_modalities: c.counts for c in store.case_counts(ids[0])}
    assert len(counts) == 15
    avg = frame[frame.metric == "miou_avg"].iloc[0]
    subsets = list(counts)
    interval = stats.summary_interval([tuple(counts[s].transpose(1, 0, 2)) for s in subsets],
                                      lambda m: m.mean(axis=-1), convention="present")
    assert avg["value"] == pytest.approx(interval.estimate, abs=1e-15)
    assert (avg["ci_low"], avg["ci_high"]) == pytest.approx((interval.low, interval.high), abs=1e-12)
    terms = store.summary_terms(ids[0])
    key = ("missing-modality", "*", "all", "none", "miou_e_p0.2")
    assert sum(w for _, w in terms[key]) == pytest.approx(1.0) and len(terms[key]) == 15


def test_counts_are_compact(evaluated):
    db, _ = evaluated
    conn = sqlite3.connect(db)
    try:
        size = conn.execute("SELECT sum(length(counts) + length(sample_index)) FROM case_counts").fetchone()[0]
        n = conn.execute("SELECT sum(n_samples) FROM case_counts").fetchone()[0]
    finally:
        conn.close()
    # well under the raw 3 x 25 x 4 bytes per sample and case
    assert size < n * 3 * 25 * 4 / 2


def test_intervals_resample_the_recorded_scenes_unless_told_images():
    """A case whose frames come in scenes of four: the stored interval is the scene bootstrap
    (wider than the image bootstrap of the same counts), recorded as such; BootstrapSpec(unit=
    "image") gives the image bootstrap; the scenes travel with the counts."""
    from mlebench.protocols.base import CaseResult

    rng = np.random.default_rng(3)
    scene_effect = np.repeat(rng.integers(0, 40, size=(10, 1, 4)), 4, axis=0)
    counts = rng.integers(20, 60, size=(40, 3, 4)) + scene_effect * np.array([1, 0, 0])[None, :, None]
    scenes = [f"s{i // 4}" for i in range(40)]
    ids = [f"id{i}" for i in range(40)]
    tp, fp, fn = counts.transpose(1, 0, 2)
    result = CaseResult(case=EvalCase(("rgb",)), miou=stats.miou_from_counts(tp, fp, fn), pixel_accuracy=0.5,
                        mean_f1=0.5, iou=[0.5] * 4, samples=40, sample_ids=ids, counts=counts, scenes=scenes)
    by_scene = result_rows("full", [result], [], list("abcd"), "deliver", BootstrapSpec())[0]
    by_image = result_rows("full", [result], [], list("abcd"), "deliver", BootstrapSpec(unit="image"))[0]
    expected = stats.miou_interval(tp, fp, fn, clusters=scenes)
    assert (by_scene.ci_low, by_scene.ci_high, by_scene.ci_unit) == (expected.low, expected.high, "scene")
    image = stats.miou_interval(tp, fp, fn)
    assert (by_image.ci_low, by_image.ci_high, by_image.ci_unit) == (image.low, image.high, "image")
    assert by_scene.ci_high - by_scene.ci_low > image.high - image.low
    # a summary of two cases over the same frames resamples the same scenes
    from mlebench.protocols.base import SummaryRow

    other = CaseResult(**{**result.__dict__, "case": EvalCase(("depth",)), "counts": counts[::-1].copy()})
    mean = SummaryRow("miou_avg", 0.5, terms=((result.case, 0.5), (other.case, 0.5)))
    summary = result_rows("full", [result, other], [mean], list("abcd"), "deliver", BootstrapSpec())[-1]
    both = [tuple(c.transpose(1, 0, 2)) for c in (counts, other.counts)]
    joint = stats.summary_interval(both, lambda m: m @ np.array([0.5, 0.5]), "deliver", clusters=scenes)
    assert (summary.metric, summary.ci_low, summary.ci_high, summary.ci_unit) == ("miou_avg", joint.low, joint.high,
                                                                                  "scene")
    (stored,) = case_counts("full", [result])
    assert stored.key == CaseKey("full", ("rgb",), "all", "none") and stored.scenes == tuple(scenes)
    no_scenes = CaseResult(**{**result.__dict__, "scenes": None})
    assert result_rows("full", [no_scenes], [], list("abcd"), "deliver", BootstrapSpec())[0].ci_unit == "image"
