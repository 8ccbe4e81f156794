"""ConfusionMatrix against hand-computed matrices and both mIoU conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mlebench.metrics import ConfusionMatrix


def _labels():
    # 4 classes; class 3 never occurs in target nor prediction; 255 is ignored.
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 0]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 3, 0]])
    return pred, target


def test_matrix_matches_hand_count():
    pred, target = _labels()
    cm = ConfusionMatrix(4)
    cm.update(pred, target)
    # rows = truth, cols = prediction; the ignored pixel (pred 3) is dropped.
    expected = torch.tensor(
        [
            [2, 1, 0, 0],  # truth 0: (0->0) x2, (0->1) x1
            [0, 2, 0, 0],  # truth 1: both right
            [1, 0, 1, 0],  # truth 2: one right, one predicted 0
            [0, 0, 0, 0],
        ]
    )
    assert torch.equal(cm.matrix, expected)
    assert cm.total == 7


def test_iou_f1_and_both_conventions():
    pred, target = _labels()
    cm = ConfusionMatrix(4)
    cm.update(pred, target)
    # class 0: tp 2, fp 1 (truth 2 -> 0), fn 1 -> IoU 2/4; F1 4/6
    # class 1: tp 2, fp 1, fn 0 -> IoU 2/3; F1 4/5
    # class 2: tp 1, fp 0, fn 1 -> IoU 1/2; F1 2/3
    # class 3: 0/0 -> NaN
    iou = cm.iou()
    assert iou[:3].tolist() == pytest.approx([0.5, 2 / 3, 0.5])
    assert math.isnan(iou[3].item())
    assert cm.f1()[:3].tolist() == pytest.approx([4 / 6, 4 / 5, 2 / 3])
    assert cm.miou("deliver") == pytest.approx((0.5 + 2 / 3 + 0.5 + 0.0) / 4)
    assert cm.miou("present") == pytest.approx((0.5 + 2 / 3 + 0.5) / 3)
    assert cm.mean_f1("present") == pytest.approx((4 / 6 + 4 / 5 + 2 / 3) / 3)
    assert cm.pixel_accuracy() == pytest.approx(5 / 7)
    # DELIVER convention: the absent class's F1 counts as 0 as well.
    assert cm.mean_f1("deliver") == pytest.approx((4 / 6 + 4 / 5 + 2 / 3 + 0.0) / 4)
    result = cm.compute("present")
    assert result["miou"] == pytest.approx((0.5 + 2 / 3 + 0.5) / 3)
    assert result["mean_f1"] == pytest.approx((4 / 6 + 4 / 5 + 2 / 3) / 3)
    assert result["pixel_accuracy"] == pytest.approx(5 / 7)
    assert result["iou"][:3] == pytest.approx([0.5, 2 / 3, 0.5]) and math.isnan(result["iou"][3])
    assert result["f1"][:3] == pytest.approx([4 / 6, 4 / 5, 2 / 3]) and math.isnan(result["f1"][3])
    assert result["convention"] == "present"
    assert cm.compute()["miou"] == pytest.approx((0.5 + 2 / 3 + 0.5 + 0.0) / 4)  # default: deliver


def test_three_classes_by_hand():
    # truth:      0 0 0 | 1 1 | 2 2 2 2 | ignored
    # prediction: 0 1 0 | 1 2 | 2 2 0 1 | 2
    target = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 255])
    pred = torch.tensor([0, 1, 0, 1, 2, 2, 2, 0, 1, 2])
    cm = ConfusionMatrix(3)
    cm.update(pred.reshape(2, 5), target.reshape(2, 5))
    assert cm.matrix.tolist() == [[2, 1, 0], [0, 1, 1], [1, 1, 2]]
    # class 0: tp 2, fp 1, fn 1 -> IoU 2/4, F1 4/6
    # class 1: tp 1, fp 2, fn 1 -> IoU 1/4, F1 2/5
    # class 2: tp 2, fp 1, fn 2 -> IoU 2/5, F1 4/7
    assert cm.iou().tolist() == pytest.approx([1 / 2, 1 / 4, 2 / 5])
    assert cm.f1().tolist() == pytest.approx([4 / 6, 2 / 5, 4 / 7])
    for convention in ("deliver", "present"):  # every class occurs: the conventions agree
        assert cm.miou(convention) == pytest.approx((1 / 2 + 1 / 4 + 2 / 5) / 3)
        assert cm.mean_f1(convention) == pytest.approx((4 / 6 + 2 / 5 + 4 / 7) / 3)
    assert cm.pixel_accuracy() == pytest.approx(5 / 9) and cm.total == 9
    # Another ignore value: 255 is then an out-of-range class, and -1 is skipped.
    other = ConfusionMatrix(3, ignore_index=-1)
    with pytest.raises(ValueError, match=r"target holds values outside 0..2 and -1: \[255\]"):
        other.update(pred, target)
    other.update(pred, torch.where(target == 255, -1, target))
    assert torch.equal(other.matrix, cm.matrix)
    cm.reset()
    assert cm.total == 0 and math.isnan(cm.pixel_accuracy())


def test_predicted_but_absent_class_counts_as_zero_in_present():
    # Class 2 is absent from the truth but predicted once: union 1, IoU 0 - it counts.
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 0, 2]), torch.tensor([0, 0, 0]))
    assert cm.iou()[2].item() == 0.0
    assert math.isnan(cm.iou()[1].item())
    assert cm.miou("present") == pytest.approx((2 / 3 + 0.0) / 2)
    assert cm.miou("deliver") == pytest.approx((2 / 3 + 0 + 0) / 3)


def test_streaming_equals_one_shot_and_merge():
    rng = np.random.default_rng(0)
    target = torch.from_numpy(rng.integers(0, 6, size=(4, 16, 16)))
    target[0, :3] = 255
    pred = torch.from_numpy(rng.integers(0, 5, size=(4, 16, 16)))
    whole = ConfusionMatrix(5, ignore_index=255)
    with pytest.raises(ValueError, match=r"target holds values outside 0..4 and 255: \[5\]"):
        whole.update(pred, target)
    target[target == 5] = 255
    whole.update(pred, target)
    parts = [ConfusionMatrix(5) for _ in range(4)]
    for i, cm in enumerate(parts):
        cm.update(pred[i], target[i])
    merged = parts[0]
    for cm in parts[1:]:
        merged.merge(cm)
    assert torch.equal(merged.matrix, whole.matrix)
    # Reference: numpy histogram of (truth, pred) pairs.
    valid = target != 255
    ref, _, _ = np.histogram2d(
        target[valid].numpy(), pred[valid].numpy(), bins=5, range=[[0, 5], [0, 5]]
    )
    assert np.array_equal(whole.matrix.numpy(), ref.astype(np.int64))


def test_bad_inputs_raise_clear_errors():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="prediction holds values outside 0..2: \\[7\\]"):
        cm.update(torch.tensor([0, 7]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.tensor([0, 1, 2]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="argmax"):
        cm.update(torch.zeros(2), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="cannot merge a 4-class matrix"):
        cm.merge(ConfusionMatrix(4))
    with pytest.raises(ValueError, match="unknown mIoU convention 'mean'"):
        cm.miou("mean")
    assert math.isnan(cm.pixel_accuracy())


def test_all_reduce_without_distributed_is_identity():
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([0, 1]), torch.tensor([0, 0]))
    before = cm.matrix.clone()
    assert torch.equal(cm.all_reduce().matrix, before)
