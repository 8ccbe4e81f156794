"""The main job: train (or load) a method, evaluate a protocol, store and print the results."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist

from mlebench.data import dataset_info, load_dataset
from mlebench.engine.checkpoint import load_checkpoint
from mlebench.engine.evaluate import evaluate_cases, missing_policy
from mlebench.engine.train import TrainConfig, train
from mlebench.errors import ConfigError
from mlebench.protocols import CaseResult, SummaryRow, get_protocol
from mlebench.results import BootstrapSpec, ResultsStore, case_counts, git_commit, package_versions, result_rows
from mlebench.results.provenance import runtime_provenance

# Training defaults per preset (the paper's: 1024² crops, batch 6, 100 epochs, bf16 on GPU).
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"steps": 500, "batch_size": 8, "crop_size": 128, "base_size": 256, "lr": 1e-3},
    "paper": {"batch_size": 6, "crop_size": 1024, "base_size": 1024, "lr": 1e-4, "amp": True},
}
PAPER_EPOCHS = 100
# Evaluation short side per preset (None: native size); the DELIVER reference evaluates at 1024.
EVAL_SIZE: dict[str, int | None] = {"tiny": None, "paper": 1024}


@dataclass
class RunSpec:
    method: str
    protocol: str
    dataset: str = "synthetic"
    data_root: Path | None = None
    train_modalities: tuple[str, ...] | None = None
    preset: str = "tiny"
    method_options: dict[str, Any] = field(default_factory=dict)
    train_options: dict[str, Any] = field(default_factory=dict)
    protocol_options: dict[str, Any] = field(default_factory=dict)
    steps: int | None = None
    epochs: int | None = None
    seed: int = 0
    device: str = "cpu"
    results: Path = Path("results.sqlite")
    checkpoint: Path | None = None  # evaluate this instead of training
    save_checkpoint: Path | None = None  # where training writes (default runs/<run id>.pt)
    resume: bool = False
    eval_split: str = "val"
    eval_batch_size: int = 4
    feature_cache: bool = True
    bootstrap: BootstrapSpec = field(default_factory=BootstrapSpec)
    group_id: str | None = None  # ties the runs of one multi-seed command together


@dataclass
class RunOutcome:
    run_id: str | None
    results: list[CaseResult]
    summary: list[SummaryRow]
    checkpoint: Path | None
    rows: list[Any] = field(default_factory=list)


def train_config(spec: RunSpec, n_train: int) -> TrainConfig:
    options = {**TRAIN_PRESETS[spec.preset], **spec.train_options}
    options.update(seed=spec.seed, device=spec.device)
    if spec.steps is not None:
        options["steps"] = spec.steps
    epochs = spec.epochs if spec.epochs is not None else (PAPER_EPOCHS if "steps" not in options else None)
    if epochs is not None and spec.steps is None:
        per_epoch = max(1, n_train // options.get("batch_size", 8))
        options["steps"] = epochs * per_epoch
    if options.get("amp") and not str(spec.device).startswith("cuda"):
        options["amp"] = False  # bf16 autocast is for the GPU; CPU runs stay in fp32
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"unknown training option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return TrainConfig(**options)


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def train_job(spec: RunSpec, echo: Callable[[str], None] = print, progress: bool = False) -> Path:
    """Train only (``mlebench train``); returns the checkpoint path."""
    from methods import build_method

    info = dataset_info(spec.dataset)
    modalities = tuple(spec.train_modalities or info.defaults)
    train_set = load_dataset(spec.dataset, spec.data_root, "train", modalities)
    torch.manual_seed(spec.seed)
    method = build_method(spec.method, info, modalities, spec.preset, **spec.method_options)
    config = train_config(spec, len(train_set))
    out = spec.save_checkpoint or Path("runs") / f"{spec.method}-{info.name}-{'-'.join(modalities)}-s{spec.seed}.pt"
    echo(f"training {spec.method} ({spec.preset}) on {info.name} {'-'.join(modalities)} "
         f"for {config.steps} steps on {spec.device}")
    losses = train(method, train_set, config, progress=progress, checkpoint=out, resume=spec.resume)
    if losses:
        echo(f"final loss {losses[-1]:.4f}")
    return out


def run_job(spec: RunSpec, echo: Callable[[str], None] = print, progress: bool = False) -> RunOutcome:
    """Train or load, evaluate the protocol, store everything; rank 0 writes."""
    from methods import build_method

    info = dataset_info(spec.dataset)
    modalities = tuple(spec.train_modalities or info.defaults)
    protocol = get_protocol(spec.protocol, **spec.protocol_options)
    cases = protocol.cases(modalities, info)
    if spec.eval_split not in info.splits:
        raise ConfigError(f"unknown split {spec.eval_split!r} for {info.name}; known: {', '.join(info.splits)}")
    eval_set = load_dataset(spec.dataset, spec.data_root, spec.eval_split, modalities)
    train_set = None if spec.checkpoint else load_dataset(spec.dataset, eval_set.root, "train", modalities)
    torch.manual_seed(spec.seed)
    method = build_method(spec.method, info, modalities, spec.preset, **spec.method_options)
    config = train_config(spec, len(train_set)) if train_set is not None else None
    if spec.checkpoint is not None:
        load_checkpoint(method, spec.checkpoint)  # a mismatch fails here, before anything is written
        echo(f"loaded {spec.checkpoint}")
    store = ResultsStore(spec.results) if _rank() == 0 else None
    run_id = None
    if store is not None:
        run_id = store.start_run(
            method=spec.method, variant=method.variant, dataset=info.name, train_modalities=modalities,
            preset=spec.preset,
            config={
                "protocol": spec.protocol, "method": method.config_dict(),
                "train": dataclasses.asdict(config) if config else None,
                "checkpoint": str(spec.checkpoint) if spec.checkpoint else None,
                "eval_split": spec.eval_split, "eval_size": EVAL_SIZE[spec.preset],
                "missing_modality": missing_policy(method),
                "frozen_source": method.frozen_source, "miou_convention": info.miou_convention,
                "feature_cache": spec.feature_cache, "world_size": _world(),
                "bootstrap": dataclasses.asdict(spec.bootstrap),
                "parameters": {k: v for k, v in method.parameter_report().items() if k in ("trainable", "frozen")},
            },
            seed=spec.seed, git_commit=git_commit(), versions=package_versions(),
            protocol=spec.protocol, split=spec.eval_split, miou_convention=info.miou_convention,
            group_id=spec.group_id, provenance=runtime_provenance(spec.seed, _world()),
        )  # fmt: skip
    try:
        checkpoint = spec.checkpoint
        if spec.checkpoint is None:
            checkpoint = spec.save_checkpoint or Path("runs") / f"{run_id or 'run'}.pt"
            echo(f"training {spec.method} ({spec.preset}) on {info.name} {'-'.join(modalities)} "
                 f"for {config.steps} steps on {spec.device}")
            train(method, train_set, config, progress=progress, checkpoint=checkpoint, resume=spec.resume)
            echo(f"checkpoint: {checkpoint}")
        echo(f"evaluating protocol {spec.protocol}: {len(cases)} cases on {info.name}/{spec.eval_split} "
             f"({len(eval_set)} samples)")
        # Qualitative figure: predictions of the training modalities on clean samples.
        shown = [c for c in cases if c.test_modalities == modalities and c.corruption is None][:1]
        results = evaluate_cases(
            method, eval_set, cases, batch_size=spec.eval_batch_size, device=spec.device,
            feature_cache=spec.feature_cache, base_seed=spec.seed, progress=progress,
            collect_pixels=protocol.collect_pixels, eval_size=EVAL_SIZE[spec.preset], keep_predictions=shown,
        )  # fmt: skip
        artifacts = Path("runs") / (run_id or "run")
        summary = protocol.summary(results, modalities, artifacts=artifacts) if _rank() == 0 else []
        rows = []
        if store is not None:
            _qualitative_figure(results, eval_set, modalities, artifacts / "predictions.png")
            figures = {p.name: p.read_bytes() for p in sorted(artifacts.glob("*.png"))} if artifacts.is_dir() else {}
            rows = result_rows(spec.protocol, results, summary, info.classes, info.miou_convention, spec.bootstrap)
            store.finish_run(run_id, rows, counts=case_counts(spec.protocol, results), artifacts=figures)
            for name in figures:
                echo(f"figure: {artifacts / name}")
    except BaseException as exc:
        if store is not None and run_id is not None:
            store.fail_run(run_id, f"{type(exc).__name__}: {exc}")
        raise
    return RunOutcome(run_id, results, summary, checkpoint, rows)


def _qualitative_figure(results: Sequence[CaseResult], dataset: Any, modalities: Sequence[str], out: Path) -> None:
    """Inputs, ground truth and prediction of the first few samples of the case that kept them."""
    from mlebench.data.show import render_predictions

    kept = next((r for r in results if r.predictions), None)
    if kept is None:
        return
    position = {ref.id: i for i, ref in enumerate(dataset.refs)}
    samples, predictions = [], []
    for sample_id, prediction in kept.predictions:
        sample = dataset[position[sample_id]]
        if tuple(sample["label"].shape) != tuple(prediction.shape):  # evaluated at another size
            sample = {**sample, "label": torch.nn.functional.interpolate(
                sample["label"][None, None].float(), size=prediction.shape, mode="nearest")[0, 0].long()}
            sample.update({m: torch.nn.functional.interpolate(sample[m][None].float(), size=prediction.shape,
                                                              mode="bilinear", align_corners=False)[0]
                           for m in modalities})
        samples.append(sample)
        predictions.append(prediction)
    out.parent.mkdir(parents=True, exist_ok=True)
    render_predictions(samples, predictions, dataset.info, modalities, out, title=kept.case.label)


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def format_results(results: Sequence[CaseResult], summary: Sequence[SummaryRow], rows: Sequence[Any] = ()) -> str:
    """A readable table: one line per case, then the protocol's summary numbers; with the stored
    ``rows``, each mIoU-type value shows its 95% bootstrap interval."""
    intervals = {(r.test_modalities, r.condition, r.corruption, r.metric): (r.ci_low, r.ci_high)
                 for r in rows if r.metric.startswith("miou") and not r.class_name}

    def ci(key: tuple[Any, ...]) -> str:
        low, high = intervals.get(key, (float("nan"), float("nan")))
        return f"[{100 * low:6.2f}, {100 * high:6.2f}]" if low == low else ""

    width = max([len(r.case.label) for r in results] + [10])
    lines = [f"{'case':<{width}}  {'mIoU':>7}  {'95% CI':^16}  {'pixAcc':>7}  {'mF1':>7}  {'n':>5}"]
    for r in results:
        key = (tuple(r.case.test_modalities), r.case.condition, r.case.corruption_name, "miou")
        lines.append(f"{r.case.label:<{width}}  {100 * r.miou:7.2f}  {ci(key):^16}  {100 * r.pixel_accuracy:7.2f}  "
                     f"{100 * r.mean_f1:7.2f}  {r.samples:5d}")
    for s in summary:
        where = ["-".join(s.test_modalities) if s.test_modalities != ("*",) else "", s.condition]
        label = " | ".join([s.metric, *[w for w in where if w and w != "all"]])
        scale = 100 if s.metric.startswith("miou") else 1
        key = (tuple(s.test_modalities), s.condition, s.corruption, s.metric)
        lines.append(f"{label:<{width}}  {scale * s.value:7.2f}  {ci(key):^16}")
    return "\n".join(lines)


def init_distributed(device: str) -> bool:
    """Join the process group torchrun describes (gloo on CPU, nccl on CUDA)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return False
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend)
        if device.startswith("cuda"):
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return True
