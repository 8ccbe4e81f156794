"""Losses shared by the methods."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def ohem_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int = 255,
    thresh: float = 0.7,
    min_kept_divisor: int = 16,
) -> torch.Tensor:
    """Online hard example mining cross-entropy, as the DELIVER/CMNeXt reference defines it.

    Per-pixel CE (ignored pixels contribute 0); keep the pixels whose loss exceeds
    ``-log(thresh)``; if fewer than ``n_min = #valid // min_kept_divisor`` qualify, keep the
    ``n_min`` largest losses instead; return the mean of the kept losses.

    Written without data-dependent shapes so that it needs no host sync on a GPU: the kept
    pixels are always the largest losses, so the result is ``mean(top_k(loss))`` with
    ``k = max(#hard, n_min)``, read off a descending sort's cumulative sum.
    """
    loss = F.cross_entropy(logits.float(), target, ignore_index=ignore_index, reduction="none").reshape(-1)
    n_valid = (target != ignore_index).sum()
    n_min = torch.div(n_valid, min_kept_divisor, rounding_mode="floor")
    n_hard = (loss > -math.log(thresh)).sum()
    k = torch.clamp(torch.maximum(n_hard, n_min), min=1)
    sorted_loss = loss.sort(descending=True).values
    return sorted_loss.cumsum(0).gather(0, (k - 1).reshape(1))[0] / k


def dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255, smooth: float = 1e-5) -> torch.Tensor:
    """SAMed's multi-class Dice loss (hitachinsk/SAMed ``utils.py`` ``DiceLoss``, with softmax):
    per class ``1 - (2 sum(p t) + s) / (sum(p^2) + sum(t^2) + s)`` over the whole batch, averaged
    over all K classes. SAMed has no ignore label; here ignored pixels count for neither term."""
    k = logits.shape[1]
    valid = (target != ignore_index).unsqueeze(1)
    probs = logits.float().softmax(1) * valid
    onehot = F.one_hot(torch.where(valid[:, 0], target, 0), k).permute(0, 3, 1, 2).float() * valid
    dims = (0, 2, 3)
    intersect = (probs * onehot).sum(dims)
    ratio = (2 * intersect + smooth) / ((probs * probs).sum(dims) + (onehot * onehot).sum(dims) + smooth)
    return (1 - ratio).mean()


def ce_dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255, dice_weight: float = 0.8) -> torch.Tensor:
    """SAMed's loss (``trainer.py`` ``calc_loss``, l. 22-26): ``(1 - w) CE + w Dice``, w = 0.8."""
    ce = F.cross_entropy(logits.float(), target, ignore_index=ignore_index)
    return (1 - dice_weight) * ce + dice_weight * dice_loss(logits, target, ignore_index)
