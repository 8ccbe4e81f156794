"""Regressions of known kind planted into methods, for measuring the gate's power
(tests/test_gate_power.py and the table in docs/benchmark.md). Each is a context manager that
patches a method class for as long as it is open."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import pytest
import torch


@contextmanager
def degraded_predictions(method_class: type, fraction: float) -> Iterator[None]:
    """At evaluation, a fixed pseudo-random ``fraction`` of pixels gets the next class's logits
    (the class axis rolled by one there): the prediction is wrong on about that share of pixels."""
    original = method_class.decode

    def decode(self, features, image_size):  # type: ignore[no-untyped-def]
        out = original(self, features, image_size)
        if self.training:
            return out
        generator = torch.Generator().manual_seed(1234)
        mask = torch.rand(out.logits.shape[-2:], generator=generator) < fraction
        out.logits = torch.where(mask.to(out.logits.device), out.logits.roll(1, dims=1), out.logits)
        return out

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(method_class, "decode", decode)
        yield


@contextmanager
def classes_scrambled() -> Iterator[None]:
    """MLE-SAM's prediction with its class axis rolled by one at evaluation: every pixel's class
    is the next one's (a label map off by one)."""
    from methods.mlesam.model import MLESAM

    original = MLESAM.decode

    def decode(self, features, image_size):  # type: ignore[no-untyped-def]
        out = original(self, features, image_size)
        if not self.training:
            out.logits = out.logits.roll(1, dims=1)
        return out

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(MLESAM, "decode", decode)
        yield


@contextmanager
def lora_switched_off(modality: str) -> Iterator[None]:
    """One modality's LoRA experts give no update, in training and evaluation (as if its expert
    were never attached): that modality runs through the frozen encoder."""
    from methods.lora import LoRAExperts

    original = LoRAExperts.delta

    def delta(self, x, active):  # type: ignore[no-untyped-def]
        dq, dv = original(self, x, active)
        if modality not in active:
            return dq, dv
        keep = torch.tensor([m != modality for m in active], dtype=dq.dtype, device=dq.device)
        shape = (len(active), -1, dq.shape[-1])
        return ((dq.reshape(shape) * keep[:, None, None]).reshape(dq.shape),
                (dv.reshape(shape) * keep[:, None, None]).reshape(dv.shape))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LoRAExperts, "delta", delta)
        yield


@contextmanager
def class_tokens_shuffled() -> Iterator[None]:
    """MLE-SAM's decoder reads its K class (mask) tokens in another order at evaluation than it
    was trained with (rolled by one), as a checkpoint loader that misorders them would."""
    from methods.mlesam.model import MLESAM

    original = MLESAM.decode

    def decode(self, features, image_size):  # type: ignore[no-untyped-def]
        if self.training:
            return original(self, features, image_size)
        weight = self.sam_mask_decoder.mask_tokens.weight
        saved = weight.data.clone()
        weight.data = saved.roll(1, dims=0)
        try:
            return original(self, features, image_size)
        finally:
            weight.data = saved

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(MLESAM, "decode", decode)
        yield
