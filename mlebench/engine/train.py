"""Training loop: AdamW, warm-up poly schedule, consistent multi-modal augmentation.

- The step does no host synchronisation: losses are accumulated on the device and read only
  every ``log_every`` steps (where a non-finite loss is also detected).
- Checkpoints (trainable weights + optimizer, scheduler, step and RNG state) are written
  atomically every ``checkpoint_every`` steps; ``resume=True`` continues from one bit-exactly on
  CPU: the data order is a pure function of (seed, epoch), so the resumed run skips ahead to the
  same batch the killed run would have seen next.
- A non-finite loss stops training with :class:`NonFiniteLoss`; the checkpoint on disk stays
  the last good one (a checkpoint is only written after a finite-loss check), and the message
  names it only when this run wrote (or resumed from) one.
- Checkpoints carry the training configuration (``extra["train_config"]``); ``resume=True``
  refuses a checkpoint of another configuration, seed or method configuration, or one past the
  requested number of steps, saying what differs (:func:`check_resume`).
- ``report``: a progress line (step, loss, samples/s, ETA) every ``report_every`` seconds of
  ``clock``, for logs where a progress bar shows nothing (CI, ``> log``).
- Under ``torch.distributed`` the model is wrapped in DDP and each rank takes its shard of every
  epoch's permutation; rank 0 writes checkpoints.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from mlebench.data.augment import TrainAugment, TrainingView
from mlebench.config import TrainConfig
from mlebench.distributed import is_distributed, world_size
from mlebench.distributed import rank as process_rank
from mlebench.engine.checkpoint import checkpoint_identity, load_checkpoint, read_checkpoint, save_or_rescue
from mlebench.engine.progress import ProgressLines
from mlebench.errors import ConfigError, MlebenchError
from mlebench.method import SegmentationMethod


def warmup_poly_factor(step: int, total: int, warmup: int, warmup_ratio: float, power: float) -> float:
    """DELIVER's WarmupPolyLR: linear warm-up from ``warmup_ratio``, then ``(1 - t)^power``."""
    if step < warmup:
        return warmup_ratio + (1.0 - warmup_ratio) * step / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return (1.0 - min(progress, 1.0)) ** power


def lr_factor(step: int, config: TrainConfig) -> float:
    """The learning rate at ``step`` as a fraction of ``config.lr``: the linear warm-up, then
    ``warmup-poly`` (DELIVER's WarmupPolyLR) or ``cosine`` down to ``min_lr`` (CWSAM's
    CosineAnnealingLR, stepped per iteration here where the reference steps per epoch)."""
    warmup = warmup_length(config)
    if config.schedule == "warmup-poly" or step < warmup:
        return warmup_poly_factor(step, config.steps, warmup, config.warmup_ratio, config.power)
    progress = min(1.0, (step - warmup) / max(1, config.steps - warmup))
    floor = config.min_lr / config.lr
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_length(config: TrainConfig) -> int:
    """Warm-up steps: ``warmup_steps`` when given, else ``warmup_fraction`` of the steps."""
    if config.warmup_steps is not None:
        return min(config.warmup_steps, config.steps)
    return int(config.warmup_fraction * config.steps)


class NonFiniteLoss(MlebenchError):
    """Training diverged."""


#: training options a resumed run may change: they do not change what is computed
RESUME_MAY_DIFFER = ("log_every", "checkpoint_every", "num_workers", "device")


def check_resume(method: SegmentationMethod, checkpoint: str | Path | None, config: TrainConfig) -> dict[str, Any]:
    """The checkpoint ``--resume`` continues from, refused (saying what differs) when it belongs to
    another method, modality set, training configuration, seed or method configuration, or is
    past ``config.steps``; returns its contents."""
    if checkpoint is None:
        raise ConfigError("--resume needs the checkpoint to continue from (--save-checkpoint)")
    path = Path(checkpoint)
    if not path.is_file():
        raise ConfigError(f"--resume: no checkpoint at {path} to resume from")
    blob = read_checkpoint(path)
    differs = []
    for key, want in checkpoint_identity(method).items():
        if blob.get(key) != want:
            got = blob.get(key)
            if key == "classes":
                got, want = f"{len(got or [])} classes", f"{len(want)} classes"
            differs.append(f"{key} {got!r} (checkpoint) vs {want!r} (this run)")
    extra = blob.get("extra") or {}
    step = int(extra.get("step", 0))
    if not differs and step > config.steps:
        raise ConfigError(f"--resume: checkpoint {path} is at step {step}, past this run's {config.steps} steps; "
                          f"resume with --steps {extra.get('train_config', {}).get('steps', step)}, the steps it "
                          "was started with")
    saved = extra.get("train_config")
    if saved is not None:
        now = dataclasses.asdict(config)
        for key, value in now.items():
            if key not in RESUME_MAY_DIFFER and key in saved and saved[key] != value:
                differs.append(f"{key} {saved[key]!r} (checkpoint) vs {value!r} (this run)")
    stored, own = blob.get("config") or {}, method.config_dict()
    for key in sorted(set(stored) | set(own)):
        if stored.get(key) != own.get(key):
            differs.append(f"method option {key} {stored.get(key)!r} (checkpoint) vs {own.get(key)!r} (this run)")
    if differs:
        raise ConfigError(f"--resume: checkpoint {path} was trained with another configuration: {'; '.join(differs)}; "
                          "resume with the options it was started with, or train from scratch without --resume")
    return blob


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


def train(
    method: SegmentationMethod,
    dataset: Any,
    config: TrainConfig,
    progress: bool = False,
    on_log: Callable[[int, float], None] | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    report: Callable[[str], None] | None = None,
    report_every: float = 30.0,
    clock: Callable[[], float] = time.monotonic,
) -> list[float]:
    """Train ``method`` on ``dataset`` for ``config.steps`` steps; returns the logged losses.

    ``report``: where a progress line goes every ``report_every`` seconds of ``clock``.
    """
    device = torch.device(config.device)
    distributed, rank, world = is_distributed(), process_rank(), world_size()
    method.to(device).train()
    params = [p for p in method.parameters() if p.requires_grad]
    # The method's own parameter groups (e.g. no weight decay on norms, another lr for a head).
    groups = method.optimizer_groups(config.lr) if hasattr(method, "optimizer_groups") else [{"params": params}]
    optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config))
    start = 0
    saved_step: int | None = None  # the step of the checkpoint on disk that this run wrote or resumed from
    if resume:
        check_resume(method, checkpoint, config)
        state = load_checkpoint(method, checkpoint)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start = saved_step = int(state["step"])
    model = torch.nn.parallel.DistributedDataParallel(method) if distributed else method
    view = TrainingView(dataset, TrainAugment(config.crop_size, config.base_size, crop_offsets=config.crop_offsets), seed=config.seed)
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
    lines = (ProgressLines(report, "train", config.steps, "step", report_every, clock, start, config.batch_size * world)
             if report is not None and rank == 0 else None)

    def kept() -> str:
        if checkpoint is None or saved_step is None:
            return "no checkpoint was written yet"
        return f"the last good checkpoint is kept at {checkpoint} (step {saved_step})"

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
                raise NonFiniteLoss(f"loss became {value} at step {done}; {kept()} (try a lower learning rate)")
            logged.append(value)
            bar.set_postfix(loss=f"{value:.3f}")
            if on_log is not None and rank == 0:
                on_log(done, value)
        due = config.checkpoint_every and done % config.checkpoint_every == 0
        if checkpoint is not None and rank == 0 and (due or done == config.steps):
            if not math.isfinite(float(loss.detach())):
                raise NonFiniteLoss(f"loss became non-finite at step {done}; {kept()} (try a lower learning rate)")
            save_or_rescue(
                method, checkpoint,
                extra={"step": done, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                       "rng": torch.get_rng_state(), "train_config": dataclasses.asdict(config)},
            )  # fmt: skip
        if checkpoint is not None and (due or done == config.steps):
            saved_step = done  # rank 0 wrote it
        bar.update(1)
        if lines is not None:
            lines.update(done, f", loss {logged[-1]:.4f}" if logged else "")
    bar.close()
    return logged
