"""``mlebench bench lora``: MLE-SAM's grouped LoRA pass against a loop over modalities."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import torch

from mlebench.timing import best_time


def bench_lora(
    preset: str = "tiny",
    modalities: Sequence[str] = ("rgb", "depth", "event", "lidar"),
    batch: int = 2,
    size: int = 128,
    repeats: int = 5,
    backward: bool = True,
    device: str = "cpu",
    seed: int = 0,
) -> dict[str, Any]:
    """Grouped LoRA (one trunk pass over all modalities) vs a Python loop over modalities."""
    from mlebench.registry import build_method
    from mlebench.data.deliver import DELIVER_INFO

    torch.manual_seed(seed)
    model = build_method("mlesam", DELIVER_INFO, modalities, preset).to(device).train()
    with torch.no_grad():  # non-zero B so that the deltas are really computed and compared
        for experts in model.lora.experts:
            experts.lora_b.normal_(0, 0.02)
    g = torch.Generator(device="cpu").manual_seed(seed)
    inputs = {m: torch.randn(batch, 3, size, size, generator=g).to(device) for m in modalities}

    def features(grouped: bool) -> dict[str, Any]:
        model.config = dataclasses.replace(model.config, grouped_lora=grouped)
        return model.encode_many(inputs)

    def step(grouped: bool) -> None:
        feats = features(grouped)
        if backward:
            sum(f.float().square().mean() for fs in feats.values() for f in fs).backward()
            model.zero_grad(set_to_none=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    with torch.no_grad():
        grouped_feats, loop_feats = features(True), features(False)
    max_diff = max(
        float((a - b).abs().max()) for m in modalities for a, b in zip(grouped_feats[m], loop_feats[m])
    )
    grouped_s = best_time(lambda: step(True), repeats)
    loop_s = best_time(lambda: step(False), repeats)
    return {
        "preset": preset,
        "modalities": list(modalities),
        "batch": batch,
        "size": size,
        "backward": backward,
        "device": device,
        "grouped_s": grouped_s,
        "loop_s": loop_s,
        "ratio": loop_s / grouped_s,
        "max_abs_diff": max_diff,
    }
