"""Multi-modal fusion of the multi-scale features (paper Sec. III-D, Eq. 7-10).

Per pyramid level (SFM, IFP, FFP), over the modalities present in the batch:

- integrated  F_int = mean_m F_m                                          (Eq. 7)
- weighted    e_m = spatial mean of F_m                                   (Eq. 8)
              w = softmax_m(router(e_m))                                  (Eq. 9)
              keep the top-k weights, renormalise them, F_w = sum_m w_m F_m (Eq. 10)
- unified     F_int + F_w

Choices where the paper is silent (config values, documented in docs/mlesam.md):

- ``router="channel"`` (default): a Linear(C, C) shared by all modalities scores every channel
  of every modality, so the softmax/top-k run over modalities per channel ("prioritise salient
  information for each index"); ``router="scalar"``: a Linear(C, 1), one weight per modality.
  Both score a modality from its own features only, so any subset of the trained modalities
  can be fused at test time without retraining.
- ``top_k=2``; with fewer modalities present than k, all present ones are kept.
- absent modalities are dropped (not zero-filled) from both the mean and the softmax.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

FUSION_MODES = ("unified", "integrated", "weighted")
ROUTERS = ("channel", "scalar")


class LevelRouter(nn.Module):
    """Top-k routed weighting of one pyramid level's per-modality features."""

    def __init__(self, channels: int, top_k: int, router: str) -> None:
        super().__init__()
        if router not in ROUTERS:
            raise ValueError(f"unknown router {router!r}; known: {', '.join(ROUTERS)}")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.top_k = top_k
        self.linear = nn.Linear(channels, channels if router == "channel" else 1)

    def weights(self, stacked: torch.Tensor) -> torch.Tensor:
        """Routing weights (B, M, C or 1) for features stacked as (B, M, C, H, W)."""
        summary = stacked.float().mean(dim=(-2, -1))  # (B, M, C), Eq. 8
        probs = torch.softmax(self.linear(summary), dim=1)  # over modalities, Eq. 9
        k = min(self.top_k, stacked.shape[1])
        if k < stacked.shape[1]:
            top = probs.topk(k, dim=1).indices
            keep = torch.zeros_like(probs).scatter_(1, top, 1.0)
            probs = probs * keep
        return probs / probs.sum(dim=1, keepdim=True)

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        w = self.weights(stacked).to(stacked.dtype)
        return (stacked * w[..., None, None]).sum(dim=1)  # Eq. 10


class MultiModalFusion(nn.Module):
    """Fuses a list of levels, each a list of per-modality maps (B, C_l, H_l, W_l)."""

    def __init__(self, channels: Sequence[int], mode: str, top_k: int, router: str) -> None:
        super().__init__()
        if mode not in FUSION_MODES:
            raise ValueError(f"unknown fusion mode {mode!r}; known: {', '.join(FUSION_MODES)}")
        self.mode = mode
        self.routers = nn.ModuleList(
            [LevelRouter(c, top_k, router) for c in channels] if mode != "integrated" else []
        )

    def forward(self, levels: Sequence[Sequence[torch.Tensor]]) -> list[torch.Tensor]:
        fused = []
        for level, maps in enumerate(levels):
            stacked = torch.stack(list(maps), dim=1)  # (B, M, C, H, W)
            out = None
            if self.mode in ("unified", "integrated"):
                out = stacked.mean(dim=1)
            if self.mode in ("unified", "weighted"):
                weighted = self.routers[level](stacked)
                out = weighted if out is None else out + weighted
            fused.append(out)
        return fused
