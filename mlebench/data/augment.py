"""Training augmentations, applied consistently across the modalities of a sample.

The DELIVER reference pipeline, step by step (``semseg/augmentations_mm.py``
``get_train_augmentation``, lines 365-372; docs/benchmark.md has the table line by line):

1. colour jitter, p 0.2 (l. 51): brightness, contrast, saturation, each factor uniform in
   ``[0.5, 1.5]`` (l. 52-57), on the RGB camera only;
2. horizontal flip, p 0.5 (l. 113-115), every modality and the label;
3. 3x3 Gaussian blur, p 0.2 (l. 102-103; torchvision's default sigma 0.8), RGB only;
4. random resized crop (l. 315-361): ``ratio`` uniform in ``[0.5, 2.0]``, target sizes
   ``(int(tH * ratio), int(4 * tW * ratio))`` and ``factor = min(max / long side, min / short
   side)`` (so the short side becomes ``int(tH * ratio)`` unless the image is wider than 4:1),
   resize (bilinear for modalities, nearest for the label), rounded as ``int(x + 0.5)``; then a
   crop at offsets drawn from ``randint(0, margin + 1)``, both ends inclusive (a quirk: an offset
   of ``margin + 1`` yields a crop one pixel short), THEN padding on the right and bottom to the
   crop size, modalities with 0 and the label with 255 (``seg_fill``, ``tools/train_mm.py`` l. 39).

Normalisation follows (``mlebench.data.transforms``, as the reference's ``Normalize``).

Options, the reference's value by default: ``base_size`` (what ``tH, tW`` of step 4 are; the
reference uses the crop size; the tiny presets scale relative to their 256 px evaluation size,
see :class:`TrainAugment`), ``crop_offsets`` (``"reference"``, or ``"exact"``: offsets in
``[0, margin]``, never a short crop). Departures that are not options: the reference jitters
uint8 tensors (each step rounds to integers) where we jitter floats; torchvision resizes tensors
without antialiasing in the reference's version (0.11), as ``F.interpolate`` does here.

Every random draw comes from a generator seeded by ``(seed, epoch, index)``, so an epoch's
augmentations are the same whatever the number of data-loader workers; the draws are made in
the reference's order (jitter gate and its three factors, flip gate, blur gate, ratio, top,
left).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch.utils.data import Dataset

from mlebench.data.base import IGNORE_INDEX
from mlebench.data.transforms import Normalize

RGB_LIKE = ("rgb", "frame")  # the modalities colour jitter and blur apply to ('img' in the reference)
CROP_OFFSETS = ("reference", "exact")


def _uniform(g: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=g))


def _randint_inclusive(g: torch.Generator, high: int) -> int:
    """An integer in ``[0, high]``, both ends included (Python's ``random.randint(0, high)``)."""
    return int(torch.randint(0, high + 1, (), generator=g))


def resized_shape(h: int, w: int, ratio: float, target: tuple[int, int]) -> tuple[int, int]:
    """The reference's ``RandomResizedCrop`` size arithmetic (augmentations_mm.py l. 329-334)."""
    th, tw = target
    scale = (int(th * ratio), int(tw * 4 * ratio))
    factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return int(h * factor + 0.5), int(w * factor + 0.5)


class TrainAugment:
    """DELIVER's training pipeline: jitter, flip, blur, then random resized crop (see module)."""

    def __init__(
        self,
        crop_size: int,
        base_size: int | None = None,
        scale_range: tuple[float, float] = (0.5, 2.0),
        flip_p: float = 0.5,
        jitter_p: float = 0.2,
        jitter_range: tuple[float, float] = (0.5, 1.5),
        blur_p: float = 0.2,
        crop_offsets: str = "reference",
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        if crop_offsets not in CROP_OFFSETS:
            raise ValueError(f"unknown crop_offsets {crop_offsets!r}; known: {', '.join(CROP_OFFSETS)}")
        self.crop_size = crop_size
        # The size the random scale is relative to (the reference: the crop size). The tiny
        # presets crop 128 from 256 px images; scaling relative to the crop would shrink every
        # object 2x against evaluation, so they pass their evaluation size (256) here.
        self.base_size = base_size or crop_size
        self.scale_range = scale_range
        self.flip_p, self.jitter_p, self.blur_p = flip_p, jitter_p, blur_p
        self.jitter_range = jitter_range
        self.crop_offsets = crop_offsets
        self.ignore_index = ignore_index

    def __call__(self, sample: dict[str, Any], modalities: Sequence[str], g: torch.Generator) -> dict[str, Any]:
        out = dict(sample)
        maps = {m: sample[m].float() for m in modalities}
        label = sample["label"]
        rgb = [m for m in modalities if m in RGB_LIKE]
        # 1. colour jitter (RGB): the factors are drawn only when the gate passes, as there
        if float(torch.rand((), generator=g)) < self.jitter_p:
            factors = [_uniform(g, *self.jitter_range) for _ in range(3)]
            for m in rgb:
                x = maps[m].clamp(0, 255) / 255.0
                x = TF.adjust_brightness(x, factors[0])
                x = TF.adjust_contrast(x, factors[1])
                x = TF.adjust_saturation(x, factors[2])
                maps[m] = x * 255.0
        # 2. horizontal flip (everything)
        if float(torch.rand((), generator=g)) < self.flip_p:
            maps = {m: x.flip(-1) for m, x in maps.items()}
            label = label.flip(-1)
        # 3. Gaussian blur (RGB)
        if float(torch.rand((), generator=g)) < self.blur_p:
            for m in rgb:
                maps[m] = TF.gaussian_blur(maps[m] / 255.0, kernel_size=[3, 3]) * 255.0
        # 4. random resized crop: scale, crop, then pad
        h, w = label.shape
        ratio = _uniform(g, *self.scale_range)
        nh, nw = resized_shape(h, w, ratio, (self.base_size, self.base_size))
        maps = {m: F.interpolate(x[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
                for m, x in maps.items()}
        label = F.interpolate(label[None, None].float(), size=(nh, nw), mode="nearest")[0, 0].long()
        c = self.crop_size
        margin_h, margin_w = max(nh - c, 0), max(nw - c, 0)
        extra = 1 if self.crop_offsets == "reference" else 0
        top = _randint_inclusive(g, margin_h + extra)
        left = _randint_inclusive(g, margin_w + extra)
        window = (slice(top, top + c), slice(left, left + c))
        label = label[window]
        maps = {m: x[(slice(None), *window)] for m, x in maps.items()}
        ph, pw = c - label.shape[0], c - label.shape[1]
        if ph or pw:
            maps = {m: F.pad(x, (0, pw, 0, ph), value=0.0) for m, x in maps.items()}
            label = F.pad(label, (0, pw, 0, ph), value=self.ignore_index)
        out.update(maps)
        out["label"] = label
        return out


class TrainingView(Dataset):
    """A data set as training sees it: augmented (seeded per sample) and normalised."""

    def __init__(self, dataset: Any, augment: TrainAugment | None, seed: int = 0) -> None:
        self.dataset = dataset
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.normalize = Normalize(dataset.info, dataset.modalities)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        # Indices past the end encode the epoch: epoch * len + i (see engine.train.EpochBatches).
        epoch, index = divmod(index, len(self.dataset))
        epoch += self.epoch
        sample = self.dataset[index]
        if self.augment is not None:
            g = torch.Generator().manual_seed(_mix(self.seed, epoch, index))
            sample = self.augment(sample, self.dataset.modalities, g)
        return self.normalize(sample)


def _mix(*values: int) -> int:
    """A 63-bit seed from several integers (order matters)."""
    h = 1469598103934665603
    for v in values:
        h = ((h ^ (v & 0xFFFFFFFFFFFFFFFF)) * 1099511628211) % (1 << 63)
    return h


__all__ = ["TrainAugment", "TrainingView"]
