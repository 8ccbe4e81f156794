"""Feature rectification (FRM) and fusion (FFM) modules, as DELIVER's
``semseg/models/modules/ffm.py`` (from CMX) with ``reduction=1``; names and shapes match it."""

from __future__ import annotations

import torch
from torch import nn


class ChannelWeights(nn.Module):
    """Per-channel weights for both streams from their avg- and max-pooled descriptors."""

    def __init__(self, dim: int, reduction: int = 1) -> None:
        super().__init__()
        self.dim = dim
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.max_pool = nn.AdaptiveMaxPool2d(1)
        self.mlp = nn.Sequential(
            nn.Linear(dim * 4, dim * 4 // reduction), nn.ReLU(inplace=True),
            nn.Linear(dim * 4 // reduction, dim * 2), nn.Sigmoid(),
        )

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        b = x1.shape[0]
        x = torch.cat((x1, x2), dim=1)
        y = torch.cat((self.avg_pool(x).view(b, -1), self.max_pool(x).view(b, -1)), dim=1)  # B 4C
        return self.mlp(y).reshape(b, 2, self.dim, 1, 1).permute(1, 0, 2, 3, 4)  # 2 B C 1 1


class SpatialWeights(nn.Module):
    """Per-pixel weights for both streams from 1x1 convs of the concatenated maps."""

    def __init__(self, dim: int, reduction: int = 1) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Conv2d(dim * 2, dim // reduction, kernel_size=1), nn.ReLU(inplace=True),
            nn.Conv2d(dim // reduction, 2, kernel_size=1), nn.Sigmoid(),
        )

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x1.shape
        return self.mlp(torch.cat((x1, x2), dim=1)).reshape(b, 2, 1, h, w).permute(1, 0, 2, 3, 4)


class FeatureRectifyModule(nn.Module):
    """FRM: each stream plus the other stream weighted by channel and spatial weights (0.5 each)."""

    def __init__(self, dim: int, reduction: int = 1, lambda_c: float = 0.5, lambda_s: float = 0.5) -> None:
        super().__init__()
        self.lambda_c, self.lambda_s = lambda_c, lambda_s
        self.channel_weights = ChannelWeights(dim, reduction)
        self.spatial_weights = SpatialWeights(dim, reduction)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cw = self.channel_weights(x1, x2)
        sw = self.spatial_weights(x1, x2)
        out1 = x1 + self.lambda_c * cw[1] * x2 + self.lambda_s * sw[1] * x2
        out2 = x2 + self.lambda_c * cw[0] * x1 + self.lambda_s * sw[0] * x1
        return out1, out2


class CrossAttention(nn.Module):
    """Efficient cross attention: each stream's queries read the other's global context
    (``k^T v``, softmax over the key dimension)."""

    def __init__(self, dim: int, num_heads: int = 8) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.kv1 = nn.Linear(dim, dim * 2, bias=False)
        self.kv2 = nn.Linear(dim, dim * 2, bias=False)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, n, c = x1.shape
        hd = c // self.num_heads

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(b, -1, self.num_heads, hd).transpose(1, 2)

        def context(kv: nn.Linear, x: torch.Tensor) -> torch.Tensor:
            k, v = kv(x).reshape(b, -1, 2, self.num_heads, hd).permute(2, 0, 3, 1, 4)
            return ((k.transpose(-2, -1) @ v) * self.scale).softmax(dim=-2)

        ctx1, ctx2 = context(self.kv1, x1), context(self.kv2, x2)
        out1 = (heads(x1) @ ctx2).transpose(1, 2).reshape(b, n, c)
        out2 = (heads(x2) @ ctx1).transpose(1, 2).reshape(b, n, c)
        return out1, out2


class CrossPath(nn.Module):
    """Stage 1 of the FFM: channel projections split into a residual half and a cross-attended half."""

    def __init__(self, dim: int, reduction: int = 1, num_heads: int = 8) -> None:
        super().__init__()
        inner = dim // reduction
        self.channel_proj1 = nn.Linear(dim, inner * 2)
        self.channel_proj2 = nn.Linear(dim, inner * 2)
        self.act1 = nn.ReLU(inplace=True)
        self.act2 = nn.ReLU(inplace=True)
        self.cross_attn = CrossAttention(inner, num_heads=num_heads)
        self.end_proj1 = nn.Linear(inner * 2, dim)
        self.end_proj2 = nn.Linear(inner * 2, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y1, u1 = self.act1(self.channel_proj1(x1)).chunk(2, dim=-1)
        y2, u2 = self.act2(self.channel_proj2(x2)).chunk(2, dim=-1)
        v1, v2 = self.cross_attn(u1, u2)
        out1 = self.norm1(x1 + self.end_proj1(torch.cat((y1, v1), dim=-1)))
        out2 = self.norm2(x2 + self.end_proj2(torch.cat((y2, v2), dim=-1)))
        return out1, out2


class ChannelEmbed(nn.Module):
    """Stage 2 of the FFM: 2C tokens to a C-channel map (1x1 residual + conv bottleneck, BN)."""

    def __init__(self, in_channels: int, out_channels: int, reduction: int = 1) -> None:
        super().__init__()
        mid = out_channels // reduction
        self.residual = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        self.channel_embed = nn.Sequential(
            nn.Conv2d(in_channels, mid, kernel_size=1, bias=True),
            nn.Conv2d(mid, mid, kernel_size=3, stride=1, padding=1, bias=True, groups=mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, out_channels, kernel_size=1, bias=True),
            nn.BatchNorm2d(out_channels),
        )
        self.norm = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, _, c = x.shape
        x = x.transpose(1, 2).reshape(b, c, h, w)
        return self.norm(self.residual(x) + self.channel_embed(x))


class FeatureFusionModule(nn.Module):
    """FFM: cross path over the two token sequences, then the channel embedding of their concat."""

    def __init__(self, dim: int, reduction: int = 1, num_heads: int = 8) -> None:
        super().__init__()
        self.cross = CrossPath(dim, reduction, num_heads)
        self.channel_emb = ChannelEmbed(dim * 2, dim, reduction)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x1.shape
        t1, t2 = self.cross(x1.flatten(2).transpose(1, 2), x2.flatten(2).transpose(1, 2))
        return self.channel_emb(torch.cat((t1, t2), dim=-1), h, w)
