"""Building blocks of CMNeXt, named and shaped as in the DELIVER reference code
(jamycheung/DELIVER, ``semseg/models/backbones/cmnext.py``, ``semseg/models/modules/mspa.py``,
``semseg/models/layers/common.py``), so that the reference's state-dict keys map one to one.

RGB path (SegFormer's MiT): :class:`PatchEmbed` (overlapping strided conv + LayerNorm),
:class:`Block` (efficient self-attention with a spatial-reduction conv of ratio ``sr_ratio``,
and a Mix-FFN whose hidden layer passes a 3x3 depth-wise conv).

Extra-modality path: :class:`PatchEmbedParallel` (ONE conv shared by all extra modalities, a
channel-first LayerNorm per modality), :class:`PredictorConv` (the self-query hub's per-modality
score nets) and :class:`PPXBlock` (the parallel pooling mixer; the reference calls it
``MSPABlock``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DropPath(nn.Module):
    """Stochastic depth per sample (``semseg/models/layers/common.py``; timm's in ``mspa.py``)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device)
        return x.div(keep) * (keep + mask).floor()


def drop_path(p: float) -> nn.Module:
    return DropPath(p) if p > 0.0 else nn.Identity()


# --- MiT (RGB) --------------------------------------------------------------------------------
class Attention(nn.Module):
    """Efficient self-attention: keys and values from a ``sr_ratio``-strided conv of the tokens."""

    def __init__(self, dim: int, head: int, sr_ratio: int) -> None:
        super().__init__()
        self.head = head
        self.sr_ratio = sr_ratio
        self.scale = (dim // head) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        d = c // self.head
        q = self.q(x).reshape(b, n, self.head, d).transpose(1, 2)
        if self.sr_ratio > 1:
            x = self.sr(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)
            x = self.norm(x)
        k, v = self.kv(x).reshape(b, -1, 2, self.head, d).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class DWConv(nn.Module):
    """3x3 depth-wise conv on a token sequence (reshaped to its h x w grid)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, _, c = x.shape
        x = self.dwconv(x.transpose(1, 2).reshape(b, c, h, w))
        return x.flatten(2).transpose(1, 2)


class MLP(nn.Module):
    """Mix-FFN: fc1, depth-wise conv, GELU, fc2."""

    def __init__(self, c1: int, c2: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(c1, c2)
        self.dwconv = DWConv(c2)
        self.fc2 = nn.Linear(c2, c1)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return self.fc2(F.gelu(self.dwconv(self.fc1(x), h, w)))


class PatchEmbed(nn.Module):
    """Overlapping patch embedding: strided conv, then LayerNorm over the tokens."""

    def __init__(self, c1: int, c2: int, patch_size: int, stride: int, padding: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(c1, c2, patch_size, stride, padding)
        self.norm = nn.LayerNorm(c2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)
        h, w = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class Block(nn.Module):
    """MiT transformer block (pre-norm attention and Mix-FFN with 4x hidden width)."""

    def __init__(self, dim: int, head: int, sr_ratio: int = 1, dpr: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, head, sr_ratio)
        self.drop_path = drop_path(dpr)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, dim * 4)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))


# --- extra-modality branch ---------------------------------------------------------------------
class ModuleParallel(nn.Module):
    """One module applied to every tensor of a list (shared weights)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self.module(x) for x in xs]


class ConvLayerNorm(nn.Module):
    """LayerNorm over the channels of an NCHW map (eps 1e-6)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class LayerNormParallel(nn.Module):
    """A separate :class:`ConvLayerNorm` per extra modality (``ln_0``, ``ln_1``, ...)."""

    def __init__(self, dim: int, num_modals: int) -> None:
        super().__init__()
        self.num_modals = num_modals
        for i in range(num_modals):
            setattr(self, f"ln_{i}", ConvLayerNorm(dim, eps=1e-6))

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [getattr(self, f"ln_{i}")(x) for i, x in enumerate(xs)]


class PatchEmbedParallel(nn.Module):
    """The extra modalities' patch embedding: a shared conv, a norm per modality (NCHW out)."""

    def __init__(self, c1: int, c2: int, patch_size: int, stride: int, padding: int, num_modals: int) -> None:
        super().__init__()
        self.proj = ModuleParallel(nn.Conv2d(c1, c2, patch_size, stride, padding))
        self.norm = LayerNormParallel(c2, num_modals)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return self.norm(self.proj(xs))


class PredictorConv(nn.Module):
    """Self-query hub scores: per modality a 3x3 depth-wise conv, a 1x1 conv to 1 channel, sigmoid."""

    def __init__(self, dim: int, num_modals: int) -> None:
        super().__init__()
        self.num_modals = num_modals
        self.score_nets = nn.ModuleList(
            nn.Sequential(nn.Conv2d(dim, dim, 3, 1, 1, groups=dim), nn.Conv2d(dim, 1, 1), nn.Sigmoid())
            for _ in range(num_modals)
        )

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [net(x) for net, x in zip(self.score_nets, xs)]


class PPXMlp(nn.Module):
    """The PPX block's channel MLP in conv form: 1x1, 3x3 depth-wise, GELU, 1x1."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.dwconv = _DWConvNCHW(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x))))


class _DWConvNCHW(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, bias=True, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dwconv(x)


class PoolingMixer(nn.Module):
    """Parallel pooling mixer (the reference's ``MSPoolAttention``): a 7x7 depth-wise conv, its
    sum with 3/7/11 average poolings, a 1x1 conv and a sigmoid gate on the input, plus the input."""

    POOLS = (3, 7, 11)

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        for i, k in enumerate(self.POOLS, start=1):
            setattr(self, f"pool{i}", nn.AvgPool2d(k, stride=1, padding=k // 2, count_include_pad=False))
        self.conv4 = nn.Conv2d(dim, dim, 1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv0(x)
        mixed = y + self.pool1(y) + self.pool2(y) + self.pool3(y)
        return self.sigmoid(self.conv4(mixed)) * x + x


class PPXBlock(nn.Module):
    """Parallel pooling mixer block (the reference's ``MSPABlock``, BatchNorm norms, layer scale
    1e-2, channel mixing by a 3-tap Conv1d over the pooled channels).

    As in the reference, the second half is ``channel_gate * x + mlp(x)`` (no plain residual)."""

    def __init__(self, dim: int, mlp_ratio: float, dpr: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = PoolingMixer(dim)
        self.drop_path = drop_path(dpr)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = PPXMlp(dim, int(dim * mlp_ratio))
        self.layer_scale_1 = nn.Parameter(1e-2 * torch.ones(dim))
        self.layer_scale_2 = nn.Parameter(1e-2 * torch.ones(dim))
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.c_nets = nn.Sequential(nn.Conv1d(1, 1, kernel_size=3, padding=1, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.layer_scale_1[:, None, None] * self.attn(self.norm1(x)))
        gate = self.c_nets(self.avg_pool(x).squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)
        return gate * x + self.drop_path(self.layer_scale_2[:, None, None] * self.mlp(self.norm2(x)))
