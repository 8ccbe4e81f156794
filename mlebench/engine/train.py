"""Training loop: AdamW, warm-up poly schedule, consistent multi-modal augmentation.

The step does no host synchronisation: losses are accumulated on the device and read only
every ``log_every`` steps (where a non-finite loss is also detected).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch.utils.data import DataLoader, RandomSampler
from tqdm import tqdm

from mlebench.data.augment import TrainAugment, TrainingView
from mlebench.errors import MlebenchError


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 300
    batch_size: int = 8
    lr: float = 1e-3  # (choice) the paper gives no learning rate
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1  # share of the steps spent warming up (10 of 100 epochs)
    warmup_ratio: float = 0.1  # the warm-up starts at this fraction of lr
    power: float = 0.9
    crop_size: int = 128
    base_size: int | None = None  # short side the random scale is relative to (default: crop)
    seed: int = 0
    device: str = "cpu"
    num_workers: int = 0
    amp: bool = False  # bf16 autocast (on by default on CUDA through the presets)
    log_every: int = 10


def warmup_poly_factor(step: int, total: int, warmup: int, warmup_ratio: float, power: float) -> float:
    """DELIVER's WarmupPolyLR: linear warm-up from ``warmup_ratio``, then ``(1 - t)^power``."""
    if step < warmup:
        return warmup_ratio + (1.0 - warmup_ratio) * step / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return (1.0 - min(progress, 1.0)) ** power


class NonFiniteLoss(MlebenchError):
    """Training diverged."""


def _batches(loader: DataLoader, view: TrainingView) -> Iterator[dict[str, Any]]:
    epoch = 0
    while True:
        view.set_epoch(epoch)
        loader.sampler.generator.manual_seed(view.seed + epoch)  # type: ignore[union-attr]
        yield from loader
        epoch += 1


def train(
    method: torch.nn.Module,
    dataset: Any,
    config: TrainConfig,
    progress: bool = False,
    on_log: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train ``method`` on ``dataset`` for ``config.steps`` steps; returns the logged losses."""
    device = torch.device(config.device)
    method.to(device).train()
    params = [p for p in method.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    warmup = int(config.warmup_fraction * config.steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_poly_factor(s, config.steps, warmup, config.warmup_ratio, config.power)
    )
    view = TrainingView(dataset, TrainAugment(config.crop_size, config.base_size), seed=config.seed)
    sampler = RandomSampler(view, generator=torch.Generator())
    loader = DataLoader(
        view, batch_size=config.batch_size, sampler=sampler, drop_last=len(view) >= config.batch_size,
        num_workers=config.num_workers, pin_memory=device.type == "cuda",
    )
    modalities = list(method.modalities)
    running = torch.zeros((), device=device)
    logged: list[float] = []
    bar = tqdm(total=config.steps, disable=not progress, desc="train", unit="step")
    batches = _batches(loader, view)
    for step in range(config.steps):
        batch = next(batches)
        inputs = {m: batch[m].to(device, non_blocking=True) for m in modalities}
        target = batch["label"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.amp):
            output = method(inputs)
            loss = method.loss(output, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        running += loss.detach()
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            n = (step % config.log_every) + 1
            value = float(running) / n  # the only host sync, every log_every steps
            running.zero_()
            if not math.isfinite(value):
                raise NonFiniteLoss(f"loss became {value} at step {step + 1}; lower the learning rate")
            logged.append(value)
            bar.set_postfix(loss=f"{value:.3f}")
            if on_log is not None:
                on_log(step + 1, value)
        bar.update(1)
    bar.close()
    return logged
