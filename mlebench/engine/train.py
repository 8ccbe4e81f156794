"""Training loop: AdamW, warm-up poly schedule, consistent multi-modal augmentation.

- The step does no host synchronisation: losses are accumulated on the device and read only
  every ``log_every`` steps (where a non-finite loss is also detected).
- Checkpoints (trainable weights + optimizer, scheduler, step and RNG state) are written
  atomically every ``checkpoint_every`` steps; ``resume=True`` continues from one bit-exactly on
  CPU: the data order is a pure function of (seed, epoch), so the resumed run skips ahead to the
  same batch the killed run would have seen next.
- A non-finite loss stops training with :class:`NonFiniteLoss`; the checkpoint on disk stays
  the last good one (a checkpoint is only written after a finite-loss check).
- Under ``torch.distributed`` the model is wrapped in DDP and each rank takes its shard of every
  epoch's permutation; rank 0 writes checkpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from mlebench.data.augment import TrainAugment, TrainingView
from mlebench.engine.checkpoint import load_checkpoint, save_checkpoint
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
    amp: bool = False  # bf16 autocast
    log_every: int = 10
    checkpoint_every: int = 0  # 0: only at the end (when a checkpoint path is given)


def warmup_poly_factor(step: int, total: int, warmup: int, warmup_ratio: float, power: float) -> float:
    """DELIVER's WarmupPolyLR: linear warm-up from ``warmup_ratio``, then ``(1 - t)^power``."""
    if step < warmup:
        return warmup_ratio + (1.0 - warmup_ratio) * step / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return (1.0 - min(progress, 1.0)) ** power


class NonFiniteLoss(MlebenchError):
    """Training diverged."""


class EpochBatches(Sampler[list[int]]):
    """Batches of a seeded permutation per epoch, sharded across ranks, resumable at any step."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        per_rank = n // world
        self.per_epoch = max(1, per_rank // batch_size) if per_rank >= batch_size else 1
        self.start = 0

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        mine = order[self.rank :: self.world]
        if len(mine) >= self.batch_size:
            return [mine[i * self.batch_size : (i + 1) * self.batch_size] for i in range(self.per_epoch)]
        return [mine]

    def __iter__(self) -> Iterator[list[int]]:
        # Indices carry their epoch (epoch * n + i) so that the data set can seed each sample's
        # augmentation by (seed, epoch, index); TrainingView decodes them.
        step = self.start
        while True:
            epoch, offset = divmod(step, self.per_epoch)
            for batch in self.epoch_batches(epoch)[offset:]:
                yield [epoch * self.n + i for i in batch]
                step += 1

    def __len__(self) -> int:  # infinite in practice; DataLoader only needs a number
        return 1 << 62


def _distributed() -> tuple[bool, int, int]:
    if dist.is_available() and dist.is_initialized():
        return True, dist.get_rank(), dist.get_world_size()
    return False, 0, 1


def train(
    method: torch.nn.Module,
    dataset: Any,
    config: TrainConfig,
    progress: bool = False,
    on_log: Callable[[int, float], None] | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
) -> list[float]:
    """Train ``method`` on ``dataset`` for ``config.steps`` steps; returns the logged losses."""
    device = torch.device(config.device)
    distributed, rank, world = _distributed()
    method.to(device).train()
    params = [p for p in method.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    warmup = int(config.warmup_fraction * config.steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_poly_factor(s, config.steps, warmup, config.warmup_ratio, config.power)
    )
    start = 0
    if resume:
        if checkpoint is None or not Path(checkpoint).is_file():
            raise MlebenchError(f"--resume: no checkpoint at {checkpoint} to resume from")
        state = load_checkpoint(method, checkpoint)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start = int(state["step"])
    model = torch.nn.parallel.DistributedDataParallel(method) if distributed else method
    view = TrainingView(dataset, TrainAugment(config.crop_size, config.base_size), seed=config.seed)
    batches = EpochBatches(len(view), config.batch_size, config.seed, rank, world)
    batches.start = start
    # Its own generator: creating the iterator must not draw from the global RNG (dropout's),
    # or a resumed run would drift from the uninterrupted one.
    loader = DataLoader(
        view, batch_sampler=batches, num_workers=config.num_workers, pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(config.seed),
    )
    modalities = list(method.modalities)
    running = torch.zeros((), device=device)
    logged: list[float] = []
    bar = tqdm(total=config.steps, initial=start, disable=not progress or rank != 0, desc="train", unit="step")
    data = iter(loader)
    for step in range(start, config.steps):
        batch = next(data)
        inputs = {m: batch[m].to(device, non_blocking=True) for m in modalities}
        target = batch["label"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.amp):
            output = model(inputs)
            loss = method.loss(output, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        running += loss.detach()
        done = step + 1
        if done % config.log_every == 0 or done == config.steps:
            n = min((step % config.log_every) + 1, done - start)  # a resumed run logs its own steps only
            value = float(running) / n  # the only host sync, every log_every steps
            running.zero_()
            if not math.isfinite(value):
                raise NonFiniteLoss(
                    f"loss became {value} at step {done}; the last good checkpoint is kept"
                    + (f" at {checkpoint}" if checkpoint else "")
                    + " (try a lower learning rate)"
                )
            logged.append(value)
            bar.set_postfix(loss=f"{value:.3f}")
            if on_log is not None and rank == 0:
                on_log(done, value)
        due = config.checkpoint_every and done % config.checkpoint_every == 0
        if checkpoint is not None and rank == 0 and (due or done == config.steps):
            if not math.isfinite(float(loss.detach())):
                raise NonFiniteLoss(f"loss became non-finite at step {done}; kept the checkpoint at {checkpoint}")
            save_checkpoint(
                method, checkpoint,
                extra={"step": done, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                       "rng": torch.get_rng_state()},
            )  # fmt: skip
        bar.update(1)
    bar.close()
    return logged
