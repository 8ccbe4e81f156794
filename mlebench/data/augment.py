"""Training augmentations, applied consistently across the modalities of a sample.

Follows the DELIVER reference pipeline (``semseg/augmentations_mm.py``): random scale in
``[0.5, 2.0]`` of the crop size and random crop with the label padded by 255, horizontal flip
(p 0.5) on every modality and the label; colour jitter (p 0.2) and a 3x3 Gaussian blur (p 0.2)
on the RGB modality only. Geometric ops use bilinear interpolation for modalities (as the
reference) and nearest for the label.

Every random draw comes from a generator seeded by ``(seed, epoch, index)``, so an epoch's
augmentations are the same whatever the number of data-loader workers.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch.utils.data import Dataset

from mlebench.data.base import IGNORE_INDEX
from mlebench.data.transforms import Normalize

RGB_LIKE = ("rgb", "frame")  # the modalities colour jitter and blur apply to


def _uniform(g: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=g))


class TrainAugment:
    """Scale + crop + flip on all modalities and the label; jitter + blur on RGB."""

    def __init__(
        self,
        crop_size: int,
        base_size: int | None = None,
        scale_range: tuple[float, float] = (0.5, 2.0),
        flip_p: float = 0.5,
        jitter_p: float = 0.2,
        blur_p: float = 0.2,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        self.crop_size = crop_size
        # The short side the random scale is relative to: the evaluation size. The reference
        # trains 1024 crops of ~1024 images (base = crop); the tiny preset crops 128 from 256
        # images, and scaling relative to the crop would shrink every object 2x vs evaluation.
        self.base_size = base_size or crop_size
        self.scale_range = scale_range
        self.flip_p, self.jitter_p, self.blur_p = flip_p, jitter_p, blur_p
        self.ignore_index = ignore_index

    def __call__(self, sample: dict[str, Any], modalities: Sequence[str], g: torch.Generator) -> dict[str, Any]:
        out = dict(sample)
        label = sample["label"]
        h, w = label.shape
        # Random scale of the short side relative to base_size, as RandomResizedCrop does.
        scale = _uniform(g, *self.scale_range)
        factor = scale * self.base_size / min(h, w)
        nh, nw = max(1, round(h * factor)), max(1, round(w * factor))
        for m in modalities:
            x = sample[m].float()
            out[m] = F.interpolate(x[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
        lab = F.interpolate(label[None, None].float(), size=(nh, nw), mode="nearest")[0, 0].long()
        # Pad to the crop size (modalities with 0, label with ignore), then crop.
        ph, pw = max(0, self.crop_size - nh), max(0, self.crop_size - nw)
        if ph or pw:
            for m in modalities:
                out[m] = F.pad(out[m], (0, pw, 0, ph), value=0.0)
            lab = F.pad(lab, (0, pw, 0, ph), value=self.ignore_index)
        top = int(torch.randint(0, lab.shape[0] - self.crop_size + 1, (), generator=g))
        left = int(torch.randint(0, lab.shape[1] - self.crop_size + 1, (), generator=g))
        window = (slice(top, top + self.crop_size), slice(left, left + self.crop_size))
        lab = lab[window]
        for m in modalities:
            out[m] = out[m][(slice(None), *window)]
        if float(torch.rand((), generator=g)) < self.flip_p:
            lab = lab.flip(-1)
            for m in modalities:
                out[m] = out[m].flip(-1)
        for m in modalities:
            if m not in RGB_LIKE:
                continue
            x = out[m].clamp(0, 255) / 255.0
            if float(torch.rand((), generator=g)) < self.jitter_p:
                x = TF.adjust_brightness(x, _uniform(g, 0.8, 1.2))
                x = TF.adjust_contrast(x, _uniform(g, 0.8, 1.2))
                x = TF.adjust_saturation(x, _uniform(g, 0.8, 1.2))
            if float(torch.rand((), generator=g)) < self.blur_p:
                x = TF.gaussian_blur(x, kernel_size=[3, 3])
            out[m] = x * 255.0
        out["label"] = lab
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
