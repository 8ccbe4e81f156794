"""SegFormer's all-MLP decode head (DELIVER ``semseg/models/heads/segformer.py``)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """A per-pixel linear projection of an NCHW map (returns tokens)."""

    def __init__(self, dim: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.flatten(2).transpose(1, 2))


class ConvModule(nn.Module):
    """1x1 conv (no bias), BatchNorm, ReLU."""

    def __init__(self, c1: int, c2: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, 1, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.activate = nn.ReLU(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.bn(self.conv(x)))


class SegFormerHead(nn.Module):
    """Project every stage to ``embed_dim``, upsample to stride 4, fuse (deepest first), classify."""

    def __init__(self, dims: Sequence[int], embed_dim: int, num_classes: int) -> None:
        super().__init__()
        self.num_stages = len(dims)
        for i, dim in enumerate(dims):
            self.add_module(f"linear_c{i + 1}", MLP(dim, embed_dim))
        self.linear_fuse = ConvModule(embed_dim * len(dims), embed_dim)
        self.linear_pred = nn.Conv2d(embed_dim, num_classes, 1)
        self.dropout = nn.Dropout2d(0.1)

    def fuse(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """The fused stride-4 map before dropout and classification."""
        b, _, h, w = features[0].shape
        outs = []
        for i, feature in enumerate(features):
            y = getattr(self, f"linear_c{i + 1}")(feature).transpose(1, 2).reshape(b, -1, *feature.shape[-2:])
            if i:
                y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)
            outs.append(y)
        return self.linear_fuse(torch.cat(outs[::-1], dim=1))

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.linear_pred(self.dropout(self.fuse(features)))
