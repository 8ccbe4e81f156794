"""The SAM ViT backbone as SAM-LoRA and CWSAM both use it: one preset table, one recipe and one
tiny stand-in for the two methods.

``paper`` is SAM ViT-B (``segment_anything.build_sam_vit_b``); ``tiny`` (choice) a 4-block ViT
for CPU runs at 64-256 px, window 8 (at 128 px crops a windowed block sees the same 8x8 token
window as at the 256 px evaluation size), loading the stand-in trained through SAM-LoRA's model
(same ViT and decoder as CWSAM's).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from methods import ASSETS
from mlebench.method import StandIn

#: the tiny SAM ViT stand-in (segment-anything's format, four mask tokens)
SAM_VIT_TINY = ASSETS / "sam_vit_tiny_synthetic.pt"
SAM_VIT_STAND_IN = StandIn("sam-vit-tiny", SAM_VIT_TINY, trained_by="sam-lora")

#: the image encoder's shape per preset (fields both methods' configs share)
VIT_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"image_size": 256, "embed_dim": 96, "depth": 4, "num_heads": 3, "global_attn_indexes": (1, 3),
             "window_size": 8, "out_chans": 64, "sam_checkpoint": str(SAM_VIT_TINY)},
    "paper": {"image_size": 1024, "embed_dim": 768, "depth": 12, "num_heads": 12,
              "global_attn_indexes": (2, 5, 8, 11), "window_size": 14, "out_chans": 256},
}

#: training options per preset (the paper trains every method with batch 6 at 1024 for 100 epochs)
TRAIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "tiny": {"steps": 500, "batch_size": 8, "crop_size": 128, "base_size": 256, "lr": 1e-3},
    "paper": {"batch_size": 6, "crop_size": 1024, "base_size": 1024, "lr": 1e-4, "amp": True, "epochs": 100},
}
#: short side every sample is resized to before evaluation (None: as stored)
EVAL_SIZES: dict[str, int | None] = {"tiny": None, "paper": 1024}


class SAMViTRecipe:
    """The recipe hooks of a method on the shared SAM ViT (mixed in before SegmentationMethod)."""

    @classmethod
    def train_defaults(cls, preset: str) -> dict[str, Any]:
        return dict(TRAIN_DEFAULTS[preset])

    @classmethod
    def eval_size(cls, preset: str) -> int | None:
        return EVAL_SIZES[preset]


#: how SAM's absolute positional embedding is resized to another token grid
POS_EMBED_RESIZE = ("bilinear", "bicubic")


def resize_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """SAM's absolute positional embedding (1, h, w, C) resized to the token ``grid``.

    ``bilinear`` (align_corners False) is SAMed's resize (hitachinsk/SAMed
    ``segment_anything/build_sam.py`` ``load_from`` l. 147-152), done there once at load time for
    a square grid; the embedding is frozen, so resizing it at every forward is the same, and it
    also serves non-square grids (MUSES' 1824x1024 gives 114x64 tokens). The relative-position
    tables need nothing here: segment-anything's ``get_rel_pos`` (image_encoder.py l. 304-313)
    interpolates each axis's table linearly to ``2 * size - 1`` at every forward, which is what
    SAMed's load-time bilinear resize of the global blocks' tables (l. 153-160) computes.
    """
    if tuple(pos_embed.shape[1:3]) == tuple(grid):
        return pos_embed
    resized = F.interpolate(pos_embed.permute(0, 3, 1, 2).float(), size=tuple(grid), mode=mode, align_corners=False)
    return resized.to(pos_embed.dtype).permute(0, 2, 3, 1)
