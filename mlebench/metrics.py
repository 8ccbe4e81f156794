"""Streaming confusion matrix and the segmentation metrics computed from it.

Per batch, :meth:`ConfusionMatrix.update` adds a ``bincount`` of (target, prediction) pairs on
the tensors' own device; metrics are computed once at the end (mmseg's ``IoUMetric`` pattern).
Matrices from several workers or processes combine with :meth:`ConfusionMatrix.merge` or, under
``torch.distributed``, :meth:`ConfusionMatrix.all_reduce`.

Two mIoU conventions, because the literature uses both and they differ a lot whenever a class
is absent from the evaluated split:

``deliver``
    The DELIVER/CMNeXt reference (``semseg/metrics.py``): IoU of a class whose union is empty
    (0/0 = NaN) is set to 0, and the mean runs over *all* classes. Paper tables on DELIVER,
    MCubeS and MUSES computed with that code use this.
``present``
    mmseg's convention: NaN-mean over the classes whose union is non-empty, i.e. classes that
    occur in the ground truth or in the prediction. A class predicted but absent from the
    ground truth therefore still counts (with IoU 0).

F1 (Dice) per class follows the same two conventions.
"""

from __future__ import annotations

from typing import Any

import torch

CONVENTIONS = ("deliver", "present")


class ConfusionMatrix:
    """``matrix[t, p]`` counts pixels of true class ``t`` predicted as ``p``."""

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        device: torch.device | str | None = None,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    # --- accumulation ---------------------------------------------------------------------
    def update(self, pred: torch.Tensor, target: torch.Tensor, validate: bool = True) -> None:
        """Add predicted labels ``pred`` against ``target`` (same shape, ignore in target only).

        With ``validate`` (the default), label values outside ``0..num_classes-1`` (and the
        ignore index, for targets) raise ``ValueError``: a silently miscounted class would
        corrupt every number computed later. The check costs one device sync; pass
        ``validate=False`` where labels are known good (argmax predictions, checked loaders).
        """
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
        if pred.is_floating_point() or target.is_floating_point():
            raise ValueError("update() takes integer class labels; use logits.argmax(1) first")
        if self.matrix.device != target.device:
            self.matrix = self.matrix.to(target.device)
        target = target.reshape(-1).long()
        pred = pred.reshape(-1).long().to(target.device)
        valid = target != self.ignore_index
        target, pred = target[valid], pred[valid]
        k = self.num_classes
        if validate:
            for name, values, allowed in (
                ("target", target, f"0..{k - 1} and {self.ignore_index}"),
                ("prediction", pred, f"0..{k - 1}"),
            ):
                bad = (values < 0) | (values >= k)
                if bool(bad.any()):
                    shown = torch.unique(values[bad])[:10].tolist()
                    raise ValueError(f"{name} holds values outside {allowed}: {shown}")
        self.matrix += torch.bincount(target * k + pred, minlength=k * k).reshape(k, k)

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        """Add another matrix of the same shape into this one (in place); returns ``self``."""
        if other.num_classes != self.num_classes or other.ignore_index != self.ignore_index:
            raise ValueError(
                f"cannot merge a {other.num_classes}-class matrix (ignore {other.ignore_index}) "
                f"into a {self.num_classes}-class one (ignore {self.ignore_index})"
            )
        self.matrix += other.matrix.to(self.matrix.device)
        return self

    def all_reduce(self) -> "ConfusionMatrix":
        """Sum the matrix over all ``torch.distributed`` ranks (no-op when not initialised)."""
        import torch.distributed as dist

        from mlebench.distributed import is_distributed

        if is_distributed():
            dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM)
        return self

    def reset(self) -> None:
        self.matrix.zero_()

    # --- metrics ----------------------------------------------------------------------------
    @property
    def total(self) -> int:
        return int(self.matrix.sum())

    def _stats(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m = self.matrix.double()
        tp = m.diag()
        fp = m.sum(0) - tp  # predicted as the class, truly another
        fn = m.sum(1) - tp  # truly the class, predicted as another
        return tp, fp, fn

    def iou(self) -> torch.Tensor:
        """Per-class IoU (float64); NaN where the class's union is empty."""
        tp, fp, fn = self._stats()
        return tp / (tp + fp + fn)

    def f1(self) -> torch.Tensor:
        """Per-class F1 / Dice (float64); NaN where the class never occurs."""
        tp, fp, fn = self._stats()
        return 2 * tp / (2 * tp + fp + fn)

    def miou(self, convention: str = "deliver") -> float:
        return mean_over_classes(self.iou(), convention)

    def mean_f1(self, convention: str = "deliver") -> float:
        return mean_over_classes(self.f1(), convention)

    def pixel_accuracy(self) -> float:
        """Correct pixels / labelled pixels (NaN when nothing was labelled)."""
        total = self.matrix.sum()
        if int(total) == 0:
            return float("nan")
        return float(self.matrix.diag().sum().double() / total.double())

    def compute(self, convention: str = "deliver") -> dict[str, Any]:
        """All metrics as plain Python numbers (percentages are left to the reports)."""
        return {
            "miou": self.miou(convention),
            "mean_f1": self.mean_f1(convention),
            "pixel_accuracy": self.pixel_accuracy(),
            "iou": self.iou().tolist(),
            "f1": self.f1().tolist(),
            "convention": convention,
        }


def mean_over_classes(per_class: torch.Tensor, convention: str) -> float:
    """The mean of per-class values (IoU, F1) under ``convention``; NaN marks an empty union.

    :mod:`mlebench.stats` calls this too, so mIoUs from per-sample counts equal the matrix's
    bit for bit."""
    if convention == "deliver":
        return float(torch.nan_to_num(per_class, nan=0.0).mean())
    if convention == "present":
        present = per_class[~per_class.isnan()]
        return float(present.mean()) if present.numel() else float("nan")
    raise ValueError(f"unknown mIoU convention {convention!r}; known: {', '.join(CONVENTIONS)}")


def predict_labels(logits: torch.Tensor) -> torch.Tensor:
    """Per-pixel class: the first maximum over dim 1 of (B, K, H, W) logits (as ``argmax``).

    ``argmax`` is fast on channels-last logits and slow on contiguous ones, where
    ``max().indices`` (same result, first maximum on ties) is faster; use whichever suits.
    """
    if logits.is_contiguous(memory_format=torch.channels_last) and not logits.is_contiguous():
        return logits.argmax(1)
    return logits.max(1).indices


def per_sample_counts(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """Per sample and class: true positives, false positives, false negatives, as an int64
    tensor (B, 3, K) on the inputs' device. ``pred`` and ``target`` are (B, H, W) labels.

    Summed over samples they equal the confusion matrix's ``diag``, ``colsum - diag`` and
    ``rowsum - diag``: three bincounts, the sample index folded into the bin.
    """
    if pred.shape != target.shape or pred.ndim < 1:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    b, k = target.shape[0], num_classes
    target = target.reshape(b, -1).long()
    pred = pred.reshape(b, -1).long().to(target.device)
    valid = target != ignore_index
    offset = (torch.arange(b, device=target.device) * k)[:, None]
    t, p = (target + offset)[valid], (pred + offset)[valid]
    truth = torch.bincount(t, minlength=b * k)
    predicted = torch.bincount(p, minlength=b * k)
    tp = torch.bincount(t[t == p], minlength=b * k)
    return torch.stack([tp, predicted - tp, truth - tp]).reshape(3, b, k).permute(1, 0, 2)
