"""The CMNeXt encoder (DELIVER ``semseg/models/backbones/cmnext.py``, class ``CMNeXt``).

Four stages. In each, the RGB stream runs SegFormer's MiT stage (patch embedding, blocks, norm);
the extra modalities share one patch-embedding conv (a norm per modality), the self-query hub
scores each modality and takes the element-wise maximum of the score-weighted maps (only with
two or more extra modalities), PPX blocks mix the result, and FRM/FFM rectify and fuse it with
the RGB stream. The rectified RGB map feeds the next RGB stage; the fused map is the stage's
output. Attribute names match the reference so its state dict loads unchanged.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from methods.cmnext.fusion import FeatureFusionModule, FeatureRectifyModule
from methods.cmnext.layers import Block, ConvLayerNorm, PatchEmbed, PatchEmbedParallel, PPXBlock, PredictorConv

# variant -> (embed dims, depths). B2 as the reference's ``cmnext_settings``; B0 is the
# reference's (commented-out) B0 line, SegFormer's MiT-B0.
SETTINGS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "b0": ((32, 64, 160, 256), (2, 2, 2, 2)),
    "b2": ((64, 128, 320, 512), (3, 4, 6, 3)),
}
HEADS = (1, 2, 5, 8)  # attention heads per stage (MiT blocks and FFM cross attention)
SR_RATIOS = (8, 4, 2, 1)  # spatial reduction of the MiT attention per stage
PPX_MLP_RATIOS = (8, 8, 4, 4)
DROP_PATH_RATE = 0.1


class CMNeXtBackbone(nn.Module):
    """``forward([rgb, extra_1, ..., extra_n])`` -> the four fused stage maps (NCHW)."""

    def __init__(self, variant: str, num_extra: int, drop_path_rate: float = DROP_PATH_RATE,
                 extra_reshape: str = "reference") -> None:
        super().__init__()
        dims, depths = SETTINGS[variant]
        self.channels = list(dims)
        self.num_modals = num_extra
        self.extra_reshape = extra_reshape  # "reference" (the quirk below) or "fixed"
        n = num_extra
        kernels, strides = (7, 3, 3, 3), (4, 2, 2, 2)
        ins = (3,) + dims[:3]
        for i in range(4):
            self.add_module(f"patch_embed{i + 1}", PatchEmbed(ins[i], dims[i], kernels[i], strides[i], kernels[i] // 2))
        if n > 0:
            self.extra_downsample_layers = nn.ModuleList(
                PatchEmbedParallel(ins[i], dims[i], kernels[i], strides[i], kernels[i] // 2, n) for i in range(4)
            )
        if n > 1:
            self.extra_score_predictor = nn.ModuleList(PredictorConv(dims[i], n) for i in range(4))
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        cur = 0
        for i in range(4):
            stage_dpr = dpr[cur : cur + depths[i]]
            self.add_module(f"block{i + 1}", nn.ModuleList(
                Block(dims[i], HEADS[i], SR_RATIOS[i], p) for p in stage_dpr))
            self.add_module(f"norm{i + 1}", nn.LayerNorm(dims[i]))
            if n > 0:
                self.add_module(f"extra_block{i + 1}", nn.ModuleList(
                    PPXBlock(dims[i], PPX_MLP_RATIOS[i], p) for p in stage_dpr))
                self.add_module(f"extra_norm{i + 1}", ConvLayerNorm(dims[i]))
            cur += depths[i]
        if n > 0:
            self.FRMs = nn.ModuleList(FeatureRectifyModule(d, reduction=1) for d in dims)
            self.FFMs = nn.ModuleList(FeatureFusionModule(d, reduction=1, num_heads=h) for d, h in zip(dims, HEADS))

    def rgb_modules(self) -> list[nn.Module]:
        return [getattr(self, f"{kind}{i}") for i in range(1, 5) for kind in ("patch_embed", "block", "norm")]

    def extra_modules(self) -> list[nn.Module]:
        if self.num_modals == 0:
            return []
        mods: list[nn.Module] = [self.extra_downsample_layers]
        if self.num_modals > 1:
            mods.append(self.extra_score_predictor)
        return mods + [getattr(self, f"extra_{kind}{i}") for i in range(1, 5) for kind in ("block", "norm")]

    def fusion_modules(self) -> list[nn.Module]:
        return [self.FRMs, self.FFMs] if self.num_modals else []

    def _select(self, xs: list[torch.Tensor], stage: int) -> torch.Tensor:
        """Self-query hub: score-weighted maps (``s * x + x``), element-wise maximum."""
        if self.num_modals == 1:
            return xs[0]
        scores = self.extra_score_predictor[stage](xs)
        for i in range(len(xs)):
            xs[i] = scores[i] * xs[i] + xs[i]  # in place, as the reference: the next stage sees these
        fused = xs[0]
        for x in xs[1:]:
            fused = torch.maximum(fused, x)
        return fused

    def forward(self, x: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        rgb = x[0]
        ext = list(x[1:])
        if len(ext) != self.num_modals:
            raise ValueError(f"expected {self.num_modals} extra modalities, got {len(ext)}")
        b = rgb.shape[0]
        outs = []
        for s in range(4):
            tokens, h, w = getattr(self, f"patch_embed{s + 1}")(rgb)
            for blk in getattr(self, f"block{s + 1}"):
                tokens = blk(tokens, h, w)
            rgb = getattr(self, f"norm{s + 1}")(tokens).reshape(b, h, w, -1).permute(0, 3, 1, 2)
            if self.num_modals == 0:
                outs.append(rgb)
                continue
            ext = self.extra_downsample_layers[s](ext)
            f = self._select(ext, s)
            for blk in getattr(self, f"extra_block{s + 1}"):
                f = blk(f)
            f = getattr(self, f"extra_norm{s + 1}")(f)
            rgb, f = self.FRMs[s](rgb, f)
            outs.append(self.FFMs[s](rgb, f))
            if s < 3:
                if self.num_modals > 1 and self.extra_reshape == "reference":
                    # Faithful to the reference (semseg/models/backbones/cmnext.py):
                    # ``x_.reshape(B, H, W, -1).permute(0, 3, 1, 2)`` on maps that are already
                    # NCHW reinterprets their memory as NHWC (a channel / pixel shuffle, not the
                    # identity). Trained reference weights depend on it; "fixed" drops it.
                    ext = [e.reshape(b, h, w, -1).permute(0, 3, 1, 2) + f for e in ext]
                elif self.num_modals > 1:
                    ext = [e + f for e in ext]
                else:
                    ext = [f]
        return outs
