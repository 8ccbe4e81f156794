"""Statistics from per-sample counts against ConfusionMatrix, reference loops and hand values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mlebench.metrics import ConfusionMatrix
from mlebench.stats import (
    Interval,
    bootstrap_mious,
    bootstrap_p_value,
    bootstrap_weights,
    iou_from_counts,
    miou_from_counts,
    miou_interval,
    paired_difference,
    paired_summary_difference,
    percentile_interval,
    summary_interval,
)

K = 5


def _counts(cm: ConfusionMatrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    m = cm.matrix.numpy()
    tp = np.diag(m).copy()
    return tp, m.sum(0) - tp, m.sum(1) - tp


def _images(rng: np.random.Generator, n: int, k: int = K, side: int = 8, absent: tuple[int, ...] = ()):
    """Targets and noisy predictions; each sample has its own error rate (varying difficulty)."""
    target = rng.integers(0, k, size=(n, side, side))
    for c in absent:  # class c never in the truth
        target[target == c] = (c + 1) % k
    err = rng.uniform(0.05, 0.6, size=(n, 1, 1))
    wrong = rng.random((n, side, side)) < err
    pred = np.where(wrong, rng.integers(0, k, size=(n, side, side)), target)
    return target, pred


def _per_sample(target: np.ndarray, pred: np.ndarray, k: int = K):
    """Per-sample (N, K) counts via one ConfusionMatrix per sample, and the whole-set matrix."""
    rows = []
    whole = ConfusionMatrix(k)
    for t, p in zip(target, pred):
        cm = ConfusionMatrix(k)
        cm.update(torch.from_numpy(p), torch.from_numpy(t))
        whole.update(torch.from_numpy(p), torch.from_numpy(t))
        rows.append(_counts(cm))
    tp, fp, fn = (np.stack(x) for x in zip(*rows))
    return (tp, fp, fn), whole


def _case(seed: int, n: int, absent: tuple[int, ...] = ()):
    rng = np.random.default_rng(seed)
    return _per_sample(*_images(rng, n, absent=absent))[0]


def _reference_miou(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, convention: str) -> float:
    """Plain-python mIoU from summed counts (no ConfusionMatrix, no numpy reductions)."""
    ious = []
    for t, f, n in zip(tp.tolist(), fp.tolist(), fn.tolist()):
        union = t + f + n
        ious.append(t / union if union else math.nan)
    if convention == "deliver":
        return sum(0.0 if math.isnan(x) else x for x in ious) / len(ious)
    present = [x for x in ious if not math.isnan(x)]
    return sum(present) / len(present) if present else math.nan


# --- exact point estimates ------------------------------------------------------------------
@pytest.mark.parametrize("k", [5, 19, 40])
def test_miou_from_counts_is_bit_identical_to_confusion_matrix(k):
    rng = np.random.default_rng(k)
    for trial in range(30):
        m = rng.integers(0, 1000, size=(k, k)) * (rng.random((k, k)) < 0.6)
        m[trial % k, :] = 0  # class never in the ground truth ...
        m[:, trial % k] = 0  # ... nor predicted: empty union (NaN)
        only_predicted = (trial + 1) % k
        m[only_predicted, :] = 0  # predicted, never in the ground truth: IoU 0
        m[(trial + 2) % k, only_predicted] = 7
        cm = ConfusionMatrix(k)
        cm.matrix = torch.from_numpy(m).long()
        tp, fp, fn = _counts(cm)
        for convention in ("deliver", "present"):
            assert miou_from_counts(tp, fp, fn, convention) == cm.miou(convention)
        np.testing.assert_array_equal(iou_from_counts(tp, fp, fn), cm.iou().numpy())
        assert math.isnan(iou_from_counts(tp, fp, fn)[trial % k])
        assert iou_from_counts(tp, fp, fn)[only_predicted] == 0.0


def test_summed_per_sample_counts_equal_whole_set_miou():
    rng = np.random.default_rng(1)
    target, pred = _images(rng, 12, absent=(3,))
    pred[pred == 4] = 0  # class 4: in the truth, never predicted
    (tp, fp, fn), whole = _per_sample(target, pred)
    assert tp[:, 3].sum() == 0 and fp[:, 3].sum() > 0  # predicted but absent from the truth
    for convention in ("deliver", "present"):
        assert miou_from_counts(tp, fp, fn, convention) == whole.miou(convention)
        assert miou_from_counts(tp.sum(0), fp.sum(0), fn.sum(0), convention) == whole.miou(convention)
    # Not the mean of per-image mIoUs (a different statistic): make sure the data tell them apart.
    per_image = np.mean([miou_from_counts(tp[i], fp[i], fn[i]) for i in range(len(tp))])
    assert abs(per_image - whole.miou("deliver")) > 1e-3


def test_all_empty_present_is_nan_and_unknown_convention_raises():
    z = np.zeros((3, 4), dtype=np.int64)
    assert math.isnan(miou_from_counts(z, z, z, "present"))
    assert miou_from_counts(z, z, z, "deliver") == 0.0
    with pytest.raises(ValueError, match="unknown mIoU convention 'mmseg'"):
        miou_from_counts(z, z, z, "mmseg")


# --- bootstrap ------------------------------------------------------------------------------
def test_bootstrap_weights_are_multiplicities_of_n_draws():
    w = bootstrap_weights(7, resamples=50, seed=3)
    assert w.shape == (50, 7) and w.dtype.kind == "i"
    assert (w.sum(1) == 7).all()
    assert len({tuple(r) for r in w}) > 40  # rows differ


@pytest.mark.parametrize("convention", ["deliver", "present"])
def test_vectorised_bootstrap_equals_reference_loop(convention):
    tp, fp, fn = _case(2, 15, absent=(1,))
    for x in (tp, fp, fn):  # class 4 only in samples 0 and 1: many resamples lack it entirely
        x[2:, 4] = 0
    weights = bootstrap_weights(15, resamples=200, seed=5)
    assert (weights[:, :2].sum(1) == 0).sum() > 10
    got = bootstrap_mious(tp, fp, fn, weights, convention)
    n = tp.shape[0]
    for r in range(weights.shape[0]):
        idx = np.repeat(np.arange(n), weights[r])
        expected = _reference_miou(tp[idx].sum(0), fp[idx].sum(0), fn[idx].sum(0), convention)
        assert got[r] == pytest.approx(expected, abs=1e-12, rel=0)


def test_interval_contains_estimate_and_shrinks_with_n():
    small = miou_interval(*_case(10, 20), resamples=1000, seed=0)
    large = miou_interval(*_case(11, 400), resamples=1000, seed=0)
    for iv in (small, large):
        assert isinstance(iv, Interval)
        assert iv.low < iv.estimate < iv.high
    ratio = (small.high - small.low) / (large.high - large.low)
    assert 2 < ratio < 8  # ~ sqrt(400 / 20) = 4.5


def test_percentile_interval_values_and_nan_handling():
    values = np.arange(101, dtype=float)[::-1]  # 0..100, unsorted
    # R = 101, alpha = 0.1: k = ceil(0.1 * 102 / 2) - 1 = 5 -> the 5th smallest and 5th largest
    assert percentile_interval(values, 0.9) == (4.0, 96.0)
    # R = 1000, alpha = 0.05: k = ceil(25.025) - 1 = 25; R = 999: k = ceil(25) - 1 = 24
    assert percentile_interval(np.arange(1000.0)) == (24.0, 975.0)
    assert percentile_interval(np.arange(999.0)) == (23.0, 975.0)
    assert percentile_interval(np.arange(10.0)) == (0.0, 9.0)  # too few resamples: the range
    assert percentile_interval(np.append(values, [np.nan, np.nan]), 0.9) == percentile_interval(values, 0.9)
    low, high = percentile_interval(np.full(4, np.nan))
    assert math.isnan(low) and math.isnan(high)
    with pytest.raises(ValueError, match="level must be in"):
        percentile_interval(values, 95)


def test_summary_interval_shares_weights_across_cases():
    cases = [_case(s, 30) for s in (20, 21, 22)]
    mean = lambda x: np.mean(x, axis=-1)  # noqa: E731
    iv = summary_interval(cases, mean, "deliver", resamples=300, seed=4)
    exact = [miou_from_counts(*c) for c in cases]
    assert iv.estimate == np.mean(exact)
    w = bootstrap_weights(30, 300, 4)
    per_case = np.stack([bootstrap_mious(*c, w, "deliver") for c in cases], axis=1)
    assert (iv.low, iv.high) == percentile_interval(per_case.mean(1))
    # One case repeated: the summary interval is that case's own interval.
    single = summary_interval([cases[0]] * 3, mean, "deliver", resamples=300, seed=4)
    own = miou_interval(*cases[0], resamples=300, seed=4)
    assert single.low == pytest.approx(own.low, abs=1e-12)
    assert single.high == pytest.approx(own.high, abs=1e-12)
    # A weighted combine (mIoU^E style) gives its own estimate.
    weighted = summary_interval(cases, lambda x: x @ np.array([0.5, 0.25, 0.25]), resamples=300, seed=4)
    assert weighted.estimate == pytest.approx(0.5 * exact[0] + 0.25 * exact[1] + 0.25 * exact[2])


# --- paired comparisons ---------------------------------------------------------------------
def test_identical_runs_have_zero_difference_and_p_one():
    a = _case(30, 40)
    res = paired_difference(a, tuple(x.copy() for x in a), "present", resamples=500, seed=1)
    assert (res.difference, res.low, res.high, res.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert (res.resamples, res.n_samples) == (500, 40)


def test_strictly_better_run_is_significant():
    rng = np.random.default_rng(31)
    target, pred_a = _images(rng, 40)
    pred_a[:, 0, 0] = (target[:, 0, 0] + 1) % K  # every sample has an error
    # b fixes half of a's wrong pixels on every sample and adds no new error.
    fix = (pred_a != target) & (rng.random(target.shape) < 0.5)
    fix[:, 0, 0] = True
    pred_b = np.where(fix, target, pred_a)
    assert all(fix[i].any() for i in range(len(fix)))
    a = _per_sample(target, pred_a)[0]
    b = _per_sample(target, pred_b)[0]
    res = paired_difference(a, b, resamples=1000, seed=0)
    assert res.difference == miou_from_counts(*b) - miou_from_counts(*a)
    assert res.difference > 0 and res.low > 0
    assert res.p_value < 0.01
    assert res.p_value == pytest.approx(2 / 1001)
    flipped = paired_difference(b, a, resamples=1000, seed=0)
    assert flipped.difference == -res.difference and flipped.high < 0


def test_bootstrap_p_value_formula_by_hand():
    d = np.array([-0.2, -0.1, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6])  # R = 9
    # #{d <= 0} = 3, #{d >= 0} = 7 -> 2 * min(4/10, 8/10) = 0.8
    assert bootstrap_p_value(d) == pytest.approx(0.8)
    assert bootstrap_p_value(np.append(d, np.nan)) == pytest.approx(0.8)  # NaN ignored
    # All positive: 2 * (0 + 1) / (9 + 1) = 0.2
    assert bootstrap_p_value(np.arange(1, 10) / 10) == pytest.approx(0.2)
    # Mostly negative, so the upper tail is the smaller one: #{d <= 0} = 5, #{d >= 0} = 1 (R = 6)
    # -> 2 * min(6/7, 2/7) = 4/7; a formula that always took the lower tail would give 1.
    assert bootstrap_p_value(np.array([-0.5, -0.4, -0.3, -0.2, -0.1, 0.1])) == pytest.approx(4 / 7)
    assert bootstrap_p_value(-np.arange(1, 10) / 10) == pytest.approx(0.2)  # all negative
    assert bootstrap_p_value(np.zeros(9)) == 1.0
    assert math.isnan(bootstrap_p_value(np.array([np.nan])))


def test_paired_interval_is_much_narrower_than_each_run():
    a = _case(40, 60)
    tp, fp, fn = (x.copy() for x in a)
    for i in (3, 17, 41):  # one more correct pixel on a few samples
        c = int(np.argmax(fn[i]))
        tp[i, c] += 1
        fn[i, c] -= 1
    b = (tp, fp, fn)
    res = paired_difference(a, b, resamples=1000, seed=2)
    own_a = miou_interval(*a, resamples=1000, seed=2)
    own_b = miou_interval(*b, resamples=1000, seed=2)
    paired_width = res.high - res.low
    assert res.difference > 0
    assert paired_width < 0.1 * (own_a.high - own_a.low)
    assert paired_width < 0.1 * (own_b.high - own_b.low)
    assert res.low >= 0  # b is never worse than a on any resample


def test_paired_summary_difference_of_mean_over_cases():
    a_cases = [_case(s, 25) for s in (50, 51)]
    b_cases = [_case(s, 25) for s in (52, 53)]
    mean = lambda x: np.mean(x, axis=-1)  # noqa: E731
    res = paired_summary_difference(a_cases, b_cases, mean, resamples=300, seed=6)
    exact_a = np.mean([miou_from_counts(*c) for c in a_cases])
    exact_b = np.mean([miou_from_counts(*c) for c in b_cases])
    assert res.difference == exact_b - exact_a
    w = bootstrap_weights(25, 300, 6)
    ra = np.mean([bootstrap_mious(*c, w) for c in a_cases], axis=0)
    rb = np.mean([bootstrap_mious(*c, w) for c in b_cases], axis=0)
    assert (res.low, res.high) == percentile_interval(rb - ra)
    assert res.p_value == bootstrap_p_value(rb - ra)


# --- determinism and validation -------------------------------------------------------------
def test_seeded_and_deterministic():
    a, b = _case(60, 30), _case(61, 30)
    assert np.array_equal(bootstrap_weights(30, 100, 7), bootstrap_weights(30, 100, 7))
    assert not np.array_equal(bootstrap_weights(30, 100, 7), bootstrap_weights(30, 100, 8))
    assert miou_interval(*a, seed=7) == miou_interval(*a, seed=7)
    assert miou_interval(*a, seed=7) != miou_interval(*a, seed=8)
    assert paired_difference(a, b, seed=7) == paired_difference(a, b, seed=7)
    assert paired_difference(a, b, seed=7) != paired_difference(a, b, seed=8)


def test_shape_errors_name_the_shapes():
    a = _case(70, 10)
    short = tuple(x[:8] for x in a)
    fewer_classes = tuple(x[:, :4] for x in a)
    with pytest.raises(ValueError, match=r"tp, fp, fn shapes differ: \(10, 5\), \(8, 5\), \(10, 5\)"):
        miou_from_counts(a[0], short[1], a[2])
    with pytest.raises(ValueError, match=r"same \(N samples, K classes\); got shapes \[\(10, 5\), \(8, 5\)\]"):
        summary_interval([a, short], lambda x: x.mean(-1))
    with pytest.raises(ValueError, match=r"got shapes \[\(10, 5\), \(10, 4\)\]"):
        summary_interval([a, fewer_classes], lambda x: x.mean(-1))
    with pytest.raises(ValueError, match=r"runs differ in shape: a is \(10, 5\), b is \(8, 5\)"):
        paired_difference(a, short)
    with pytest.raises(ValueError, match=r"runs differ in shape: a is \(10, 5\), b is \(10, 4\)"):
        paired_difference(a, fewer_classes)
    with pytest.raises(ValueError, match=r"runs differ in shape: a has 2 case\(s\) of \(10, 5\), b has 1"):
        paired_summary_difference([a, a], [a], lambda x: x.mean(-1))
    with pytest.raises(ValueError, match=r"weights cover 8 samples but the counts have 10"):
        bootstrap_mious(*a, bootstrap_weights(8, 10), "deliver")
    with pytest.raises(ValueError, match="integer counts"):
        miou_from_counts(a[0] + 0.5, a[1], a[2])
    with pytest.raises(ValueError, match="negative counts"):
        miou_from_counts(-a[0], a[1], a[2])


@pytest.mark.parametrize("resamples", [100, 999, 1000, 2000])
def test_p_value_and_interval_agree_on_every_resampled_difference(resamples: int):
    """p < 0.05 exactly when 0 lies outside the 95% interval, for differences centred anywhere
    near the boundary (where tail counts and interpolated percentiles used to disagree)."""
    rng = np.random.default_rng(resamples)
    disagreements = 0
    for shift in np.linspace(0, 3, 301):
        d = rng.normal(shift, 1.0, size=resamples)
        if rng.random() < 0.2:
            d[: resamples // 50] = 0.0  # ties at exactly zero
        low, high = percentile_interval(d, 0.95)
        disagreements += (bootstrap_p_value(d) < 0.05) != (low > 0 or high < 0)
    assert disagreements == 0


def test_cluster_weights_move_whole_scenes():
    scenes = ["s2", "s2", "s0", "s1", "s1", "s1"]
    w = bootstrap_weights(6, resamples=300, seed=9, clusters=scenes)
    assert w.shape == (300, 6)
    assert (w[:, 0] == w[:, 1]).all() and (w[:, 3] == w[:, 4]).all() and (w[:, 4] == w[:, 5]).all()
    # each row draws the 3 scenes 3 times: the scene multiplicities sum to 3
    assert ((w[:, 0] + w[:, 2] + w[:, 3]) == 3).all()
    # every scene a frame of its own: exactly the image bootstrap of the same seed
    assert (bootstrap_weights(6, 300, 9, clusters=list("abcdef")) == bootstrap_weights(6, 300, 9)).all()
    with pytest.raises(ValueError, match="clusters give 2 labels for 6 samples"):
        bootstrap_weights(6, 10, 0, clusters=["a", "b"])


def test_intervals_record_what_they_resampled():
    case = _case(7, 12)
    scenes = [i // 3 for i in range(12)]
    assert miou_interval(*case, resamples=200).unit == "image"
    by_scene = miou_interval(*case, resamples=200, clusters=scenes)
    assert by_scene.unit == "scene" and by_scene.estimate == miou_interval(*case, resamples=200).estimate
    assert paired_difference(case, case, resamples=200, clusters=scenes).unit == "scene"


def test_the_scene_bootstrap_covers_where_the_image_bootstrap_does_not():
    """The coverage simulation (docs/benchmark.md has the 2,000-repetition figures): with a scene
    effect, 95% scene-bootstrap intervals hold the true mIoU about 95% of the time; image-bootstrap
    intervals, which treat related frames as independent, far less often."""
    from mlebench.bench.coverage import simulate_coverage

    result = simulate_coverage(repetitions=300, resamples=500, seed=1)
    assert 0.91 <= result["coverage"]["scene"] <= 0.98, result["coverage"]
    assert result["coverage"]["image"] <= 0.80, result["coverage"]
