"""Per-modality normalisation, kept apart from loading.

The loaders return raw values (0..255 for image modalities) because the robustness protocols
corrupt those raw values first; normalisation runs afterwards, per modality, as the reference
code does:

- ``imagenet`` (RGB / frame camera): ``x / 255``, then ``(x - mean) / std`` with the ImageNet
  mean ``(0.485, 0.456, 0.406)`` and std ``(0.229, 0.224, 0.225)``;
- ``unit`` (depth/HHA, event, LiDAR, NIR): ``x / 255``;
- ``identity`` (MCubeS AoLP/DoLP, stored as floats already in a small range): unchanged.

Works on single samples ``(C, H, W)`` and batches ``(B, C, H, W)`` alike.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from mlebench.data.base import DatasetInfo, ModalitySpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZATIONS = ("imagenet", "unit", "identity")


def normalize_modality(x: torch.Tensor, spec: ModalitySpec) -> torch.Tensor:
    """Normalise one modality's raw tensor to float32 according to its spec."""
    x = x.float()
    if spec.normalization == "identity":
        return x
    x = x / 255.0
    if spec.normalization == "unit":
        return x
    if spec.normalization == "imagenet":
        shape = (-1, 1, 1)
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(shape)
        std = torch.tensor(IMAGENET_STD, device=x.device).view(shape)
        return (x - mean) / std
    raise ValueError(f"modality {spec.name!r}: unknown normalization {spec.normalization!r}")


class Normalize:
    """Normalise every modality of a sample (or batch) dict; other keys pass through."""

    def __init__(self, info: DatasetInfo, modalities: Sequence[str] | None = None) -> None:
        names = modalities if modalities is not None else info.modality_names
        self.specs = {name: info.modality(name) for name in names}

    def __call__(self, sample: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(sample)
        for name, spec in self.specs.items():
            if name in out:
                out[name] = normalize_modality(out[name], spec)
        return out
