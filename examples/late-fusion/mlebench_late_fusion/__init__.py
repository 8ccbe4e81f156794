"""``late-fusion``: one small CNN per modality, logits averaged over the modalities present.

An example of a method that lives outside mlebench: it implements the contract
(:class:`mlebench.method.SegmentationMethod`) and registers its builder with
:func:`mlebench.registry.register_method`; its package's entry point (``mlebench.methods``)
makes mlebench import this module. See docs/adding-a-method.md.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mlebench.data.base import DatasetInfo
from mlebench.errors import ConfigError
from mlebench.method import MethodOutput, SegmentationMethod, upsample_logits
from mlebench.registry import register_method
from mlebench.weights import config_from_preset

#: this method's presets, smallest first (``run`` defaults to the first, ``params`` to the last)
PRESETS = ("small", "large")


@dataclass(frozen=True)
class LateFusionConfig:
    """Every option ``-o KEY=VALUE`` can set; mlebench type-checks them from these fields."""

    width: int = 16  # channels of every encoder stage
    depth: int = 3  # stride-2 stages (the logits are at stride 2**depth)

    def validate(self) -> None:
        if self.width < 1 or self.depth < 1:
            raise ConfigError(f"late-fusion: width and depth must be >= 1, got {self.width}, {self.depth}")


PRESET_CONFIGS = {"small": LateFusionConfig(), "large": LateFusionConfig(width=64, depth=4)}


def encoder(in_channels: int, width: int, depth: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Conv2d(in_channels if i == 0 else width, width, 3, stride=2, padding=1),
                   nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class LateFusion(SegmentationMethod):
    """Per-modality encoder and classifier; ``decode`` averages the classifiers' logits."""

    def __init__(self, info: DatasetInfo, modalities: Sequence[str], preset: str, config: LateFusionConfig) -> None:
        super().__init__(info, modalities, preset)
        self.config = config
        self.size_multiple = 2 ** config.depth  # the evaluator pads inputs to it
        # Everything is trained, so nothing is frozen (frozen_source stays "none") and the random
        # initialisation follows the run's seed (mlebench seeds torch before building).
        self.encoders = nn.ModuleDict({m: encoder(info.modality(m).channels, config.width, config.depth)
                                       for m in modalities})
        self.heads = nn.ModuleDict({m: nn.Conv2d(config.width, info.num_classes, 1) for m in modalities})

    def encode(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        return self.encoders[modality](x)

    def decode(self, features: Mapping[str, Any], image_size: tuple[int, int]) -> MethodOutput:
        self.check_subset(list(features))
        logits = torch.stack([self.heads[m](f) for m, f in features.items()]).mean(0)
        embedding = torch.stack(list(features.values())).mean(0)
        return MethodOutput(logits=upsample_logits(logits, image_size), embedding=embedding)

    def loss(self, output: MethodOutput, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output.logits, target, ignore_index=self.info.ignore_index)

    @classmethod
    def train_defaults(cls, preset: str) -> dict[str, Any]:
        if preset == "large":
            return {"batch_size": 6, "crop_size": 1024, "base_size": 1024, "lr": 1e-4, "amp": True, "epochs": 100}
        return {"steps": 300, "batch_size": 8, "crop_size": 128, "base_size": 256, "lr": 1e-3}

    @classmethod
    def eval_size(cls, preset: str) -> int | None:
        return 1024 if preset == "large" else None

    def parameter_groups(self) -> dict[str, nn.Module]:
        return {"encoders": self.encoders, "heads": self.heads}

    def config_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)


@register_method("late-fusion", presets=PRESETS)
def build_late_fusion(info: DatasetInfo, modalities: Sequence[str], preset: str, **options: Any) -> LateFusion:
    """Late fusion; options: the fields of :class:`LateFusionConfig`."""
    return LateFusion(info, modalities, preset, config_from_preset(PRESET_CONFIGS, preset, options, "late-fusion"))
