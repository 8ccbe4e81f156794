"""A run's training and evaluation settings: the method's recipe for its preset, then the run's
own options over it, and the defaults that depend on the machine."""

from __future__ import annotations

import dataclasses
import os

from mlebench.config import RunSpec, TrainConfig
from mlebench.distributed import local_world_size, world_size
from mlebench.engine.train import EpochBatches
from mlebench.errors import ConfigError
from mlebench.method import SegmentationMethod


def default_num_workers(device: str, local_processes: int = 1) -> int:
    """Data-loading worker processes when none are asked for (choice, docs/benchmark.md).

    On CPU the model already uses every core, so loading in the main process (0) costs the
    least; a worker only overlaps decoding with compute it competes with. On a GPU the CPU is
    otherwise idle: up to 8 workers per process, leaving one core per process free.
    """
    if not str(device).startswith("cuda"):
        return 0
    cores = os.cpu_count() or 1
    return max(1, min(8, cores // max(1, local_processes) - 1))


def eval_workers(spec: RunSpec) -> int:
    """Evaluation's data-loading workers: ``--num-workers``, else the default for the device."""
    if spec.num_workers is not None:
        return spec.num_workers
    return default_num_workers(spec.device, local_world_size())


def train_config(spec: RunSpec, n_train: int, method: SegmentationMethod) -> TrainConfig:
    """The method's recipe for the preset (``training_defaults``), then the run's options: the
    ``train:`` section, ``--num-workers``, ``--steps`` or ``--epochs`` (epochs count the batches
    each rank is dealt under torchrun)."""
    defaults = method.training_defaults()
    recipe_epochs = defaults.pop("epochs", None)
    options = {**defaults, **spec.train_options}
    options.update(seed=spec.seed, device=spec.device)
    if spec.num_workers is not None:  # --num-workers (train and eval) over the YAML train section
        options["num_workers"] = spec.num_workers
    elif "num_workers" not in spec.train_options:
        options["num_workers"] = eval_workers(spec)
    if spec.steps is not None:
        options["steps"] = spec.steps
    epochs = spec.epochs if spec.epochs is not None else (recipe_epochs if "steps" not in options else None)
    if epochs is not None and spec.steps is None:
        per_epoch = EpochBatches(n_train, options.get("batch_size", 8), spec.seed, 0, world_size()).per_epoch
        options["steps"] = epochs * per_epoch
    if options.get("amp") and not str(spec.device).startswith("cuda"):
        options["amp"] = False  # bf16 autocast is for the GPU; CPU runs stay in fp32
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"unknown training option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return TrainConfig(**options)
