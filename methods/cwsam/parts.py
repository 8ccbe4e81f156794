"""CWSAM's trainable parts (see :mod:`methods.cwsam.model`): the adapters and the FFT prompt
generator of the encoder, and the class-wise mask decoder, after the reference's
``image_encoder.py`` and ``mask_decoder.py`` (xypu98/CWSAM)."""

from __future__ import annotations

import math

import torch
from segment_anything.modeling.common import LayerNorm2d
from segment_anything.modeling.mask_decoder import MLP
from segment_anything.modeling.prompt_encoder import PositionEmbeddingRandom
from torch import nn


class Adapter(nn.Module):
    """``fc2(GELU(fc1(x)))``, plus ``x`` when ``skip`` (the reference's ``Adapter``)."""

    def __init__(self, dim: int, ratio: float, skip: bool) -> None:
        super().__init__()
        self.skip = skip
        self.fc1 = nn.Linear(dim, int(dim * ratio))
        self.act = nn.GELU()
        self.fc2 = nn.Linear(int(dim * ratio), dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc2(self.act(self.fc1(x)))
        return x + out if self.skip else out


class BlockAdapters(nn.Module):
    """One block's space adapter (after attention, with skip) and MLP adapter (parallel, no skip)."""

    def __init__(self, dim: int, ratio: float) -> None:
        super().__init__()
        self.space = Adapter(dim, ratio, skip=True)
        self.mlp = Adapter(dim, ratio, skip=False)


def fft_filter(x: torch.Tensor, rate: float, band: str) -> torch.Tensor:
    """``|ifft2(F * M)|`` with ``F`` the centred spectrum of ``x`` and ``M`` a centred square of
    relative area ``rate`` (``band="low"``) or its complement (``"high"``), per image and channel."""
    h, w = x.shape[-2:]
    line = int((h * w * rate) ** 0.5 // 2)
    mask = torch.zeros(h, w, device=x.device, dtype=torch.float32)
    mask[h // 2 - line : h // 2 + line, w // 2 - line : w // 2 + line] = 1
    if band == "high":
        mask = 1 - mask
    spectrum = torch.fft.fftshift(torch.fft.fft2(x.float(), norm="forward"), dim=(-2, -1))
    filtered = torch.fft.ifft2(torch.fft.ifftshift(spectrum * mask, dim=(-2, -1)), norm="forward")
    return filtered.real.abs().to(x.dtype)


class PromptGenerator(nn.Module):
    """Per-block prompts from the patch embedding and the FFT-filtered image (reference names)."""

    def __init__(self, dim: int, depth: int, scale_factor: int, patch_size: int, freq_nums: float, band: str,
                 embedding_reshape: str = "reference") -> None:
        super().__init__()
        hidden = dim // scale_factor
        self.freq_nums = freq_nums
        self.band = band
        self.embedding_reshape = embedding_reshape
        self.embedding_generator = nn.Linear(dim, hidden)
        self.handcrafted_generator = nn.Conv2d(3, hidden, kernel_size=patch_size, stride=patch_size)
        self.lightweight_mlps = nn.ModuleList(nn.Sequential(nn.Linear(hidden, hidden), nn.GELU()) for _ in range(depth))
        self.shared_mlp = nn.Linear(hidden, dim)
        self.apply(_reference_init)

    def forward(self, image: torch.Tensor, patches: torch.Tensor) -> list[torch.Tensor]:
        """Prompts (B, h, w, dim), one per block, for ``image`` (B, 3, H, W) and its patch
        embedding ``patches`` (B, h, w, dim)."""
        handcrafted = self.handcrafted_generator(fft_filter(image, self.freq_nums, self.band))
        if self.embedding_reshape == "reference":
            patches = reference_token_order(patches)
        features = handcrafted.permute(0, 2, 3, 1) + self.embedding_generator(patches)
        return [self.shared_mlp(mlp(features)) for mlp in self.lightweight_mlps]


def reference_token_order(patches: torch.Tensor) -> torch.Tensor:
    """The patch embedding as the reference's ``init_embeddings`` hands it on (xypu98/CWSAM
    ``models/mmseg/models/sam/image_encoder.py`` l. 305-306): it reads ``N, C, H, W`` off a
    permuted view but reshapes the unpermuted (B, H, W, C) tensor as (N, C, H*W) and then
    permutes to (N, H*W, C), so token j mixes values of ~C different positions and channels.
    Returned in (B, H, W, C) layout, token j at row-major position j, as the reference adds it."""
    b, h, w, c = patches.shape
    return patches.reshape(b, c, h * w).permute(0, 2, 1).reshape(b, h, w, c)


def _reference_init(m: nn.Module) -> None:
    """The reference's ``_init_weights`` (prompt generator and mask decoder)."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif type(m) is nn.Conv2d:
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)


# --- the class-wise decoder -------------------------------------------------------------------
class ClassWiseMaskDecoder(nn.Module):
    """The reference's class-wise mask decoder; SAM's ``MaskDecoder`` names for the SAM parts."""

    def __init__(self, dim: int, transformer: nn.Module, num_classes: int, num_mask_tokens: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.transformer = transformer
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(num_mask_tokens, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        # only mask token 0's hypernetwork is used (multimask_output=False in the reference)
        self.output_hypernetworks_mlps = nn.ModuleList([MLP(dim, dim, dim // 8, 3)])
        self.cls_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim // 4, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.Conv2d(dim // 4, dim // 8 * num_classes, kernel_size=7, stride=2, padding=3),
            nn.GELU(),
        )
        self.apply(_reference_init)

    def forward(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """K-class logits (B, K, 4h, 4w) from image embeddings (B, d, h, w), no sparse prompts."""
        b = image_embeddings.shape[0]
        tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight]).unsqueeze(0).expand(b, -1, -1)
        src = image_embeddings + dense
        hs, out = self.transformer(src, image_pe.expand(b, -1, -1, -1), tokens.to(src.dtype))
        out = out.transpose(1, 2).reshape(src.shape)
        hyper = self.output_hypernetworks_mlps[0](hs[:, 1])  # mask token 0: (B, d/8)
        skip = torch.cat([self.output_upscaling(out), self.output_upscaling(src)], dim=1)
        per_class = self.cls_upscaling(skip)  # (B, d/8 * K, 4h, 4w), channel c * K + k
        c = hyper.shape[1]
        per_class = per_class.reshape(b, c, self.num_classes, *per_class.shape[-2:])
        return torch.einsum("bc,bckhw->bkhw", hyper, per_class)


class PromptEmbeddings(nn.Module):
    """The two parts of SAM's ``PromptEncoder`` that prompt-free decoding uses (SAM's names)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.pe_layer = PositionEmbeddingRandom(dim // 2)
        self.no_mask_embed = nn.Embedding(1, dim)


