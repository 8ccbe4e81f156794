"""``mlebench bench throughput``: images per second and peak GPU memory of a method at a preset,
for training steps and for evaluation in fp32 and bf16."""

from __future__ import annotations

import time
from typing import Any

import torch

from mlebench.data import dataset_info
from mlebench.registry import build_method, method_entry


def bench_throughput(method_name: str, preset: str | None = None, device: str = "cuda", batch_size: int = 2,
                     steps: int = 5, dataset: str = "synthetic", seed: int = 0) -> dict[str, Any]:
    """Images per second and peak GPU memory for training steps (the preset's autocast) and for
    evaluation forwards in fp32 and under bf16 autocast, on random inputs at the preset's crop
    and evaluation sizes (``preset`` None: the method's full-size preset). Returns
    ``{"skipped": reason}`` for a CUDA device that is not there."""
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        return {"skipped": "no CUDA device (torch.cuda.is_available() is False)", "device": device}
    info = dataset_info(dataset)
    modalities = info.defaults
    dev = torch.device(device)
    torch.manual_seed(seed)
    preset = method_entry(method_name).full_preset if preset is None else preset
    method = build_method(method_name, info, modalities, preset).to(dev)
    recipe = method.train_defaults(preset)
    crop = recipe.get("crop_size", 128)
    eval_size = method.eval_size(preset) or crop
    cuda = dev.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(dev)

    def measure(fn: Any, n: int) -> dict[str, Any]:
        fn()  # warm-up (kernels, allocator)
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats(dev)
        start = time.perf_counter()
        for _ in range(n):
            fn()
        sync()
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated(dev) / 2**30 if cuda else None
        return {"images_per_s": n * batch_size / seconds, "peak_gib": peak}

    g = torch.Generator().manual_seed(seed)
    train_batch = {m: torch.randn(batch_size, 3, crop, crop, generator=g).to(dev) for m in modalities}
    target = torch.randint(0, info.num_classes, (batch_size, crop, crop), generator=g).to(dev)
    eval_batch = {m: torch.randn(batch_size, 3, eval_size, eval_size, generator=g).to(dev) for m in modalities}
    optimizer = torch.optim.AdamW(method.optimizer_groups(1e-4), lr=1e-4)
    amp = bool(recipe.get("amp", False)) and cuda

    def train_step() -> None:
        method.train()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            loss = method.loss(method(train_batch), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def eval_forward(bf16: bool) -> Any:
        def run() -> None:
            method.eval()
            with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                method(eval_batch).logits.argmax(1)
        return run

    return {"method": method_name, "preset": preset, "device": str(dev), "batch_size": batch_size, "steps": steps,
            "crop_size": crop, "eval_size": eval_size, "train_amp": amp,
            "train": measure(train_step, steps), "eval_fp32": measure(eval_forward(False), steps),
            "eval_bf16": measure(eval_forward(True), steps)}  # fmt: skip


def format_throughput(r: dict[str, Any]) -> str:
    if "skipped" in r:
        return f"bench throughput skipped: {r['skipped']}"
    lines = [f"{r['method']} ({r['preset']}) on {r['device']}, batch {r['batch_size']}, {r['steps']} steps; "
             f"train crops {r['crop_size']}, eval {r['eval_size']}"]
    for key, label in (("train", f"train ({'bf16' if r['train_amp'] else 'fp32'})"), ("eval_fp32", "eval fp32"),
                       ("eval_bf16", "eval bf16")):
        peak = f"{r[key]['peak_gib']:.2f} GiB peak" if r[key]["peak_gib"] is not None else "peak n/a (not CUDA)"
        lines.append(f"  {label:<12}: {r[key]['images_per_s']:8.2f} img/s   {peak}")
    return "\n".join(lines)
