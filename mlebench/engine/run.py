"""The main job: train (or load) a method, evaluate a protocol, store and print the results.

Before anything is written (results store, checkpoint, figures) a job checks its whole
configuration (:func:`mlebench.config.validate_spec`), the device, every output location, the
evaluation split's files (headers only, :func:`check_eval_files`) and what ``--resume`` would
continue from, so that a mistake found after twenty minutes of training cannot happen.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from mlebench.config import (  # noqa: F401  (RunSpec lives in mlebench.config; importable from here too)
    RunSpec,
    check_checkpoint_target,
    check_writable_dir,
    check_writable_file,
    default_num_workers,
    validate_spec,
)
from mlebench.data import dataset_info, load_dataset
from mlebench.engine.checkpoint import load_checkpoint
from mlebench.engine.evaluate import ShardSampler, evaluate_cases, missing_policy
from mlebench.engine.train import EpochBatches, ProgressLines, TrainConfig, check_resume, train
from mlebench.distributed import local_world_size, rank, world_size
from mlebench.errors import ConfigError, DataError
from mlebench.signals import terminate_as_exception
from mlebench.protocols import CaseResult, SummaryRow, get_protocol
from mlebench.results import ResultsStore, case_counts, git_commit, package_versions, result_rows
from mlebench.results.provenance import runtime_provenance

#: where checkpoints (by default) and figures go
RUNS_DIR = Path("runs")


@dataclass
class RunOutcome:
    run_id: str | None
    results: list[CaseResult]
    summary: list[SummaryRow]
    checkpoint: Path | None
    rows: list[Any] = field(default_factory=list)


def train_config(spec: RunSpec, n_train: int, method: Any) -> TrainConfig:
    """The method's recipe for the preset (``train_defaults``), then the run's options."""
    defaults = dict(method.train_defaults(spec.preset))
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
        # Batches per epoch as the sampler deals them: under torchrun each rank takes its shard.
        per_epoch = EpochBatches(n_train, options.get("batch_size", 8), spec.seed, 0, world_size()).per_epoch
        options["steps"] = epochs * per_epoch
    if options.get("amp") and not str(spec.device).startswith("cuda"):
        options["amp"] = False  # bf16 autocast is for the GPU; CPU runs stay in fp32
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"unknown training option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return TrainConfig(**options)


def eval_workers(spec: RunSpec) -> int:
    """Evaluation's data-loading workers: ``--num-workers``, else the default for the device."""
    if spec.num_workers is not None:
        return spec.num_workers
    return default_num_workers(spec.device, local_world_size())


def default_train_checkpoint(spec: RunSpec, modalities: Sequence[str]) -> Path:
    """Where ``mlebench train`` writes without --save-checkpoint: one stable path per method, data
    set, modalities and seed, so that ``train --resume`` finds what the interrupted run wrote."""
    return RUNS_DIR / f"{spec.method}-{dataset_info(spec.dataset).name}-{'-'.join(modalities)}-s{spec.seed}.pt"


def _checkpoint_option(spec: RunSpec) -> str:
    return "--save-checkpoint" if spec.save_checkpoint is not None else "the default checkpoint path"


def _expected_data_root(spec: RunSpec) -> Path | None:
    """The data set folder a job will read (the cached synthetic set's without --data-root)."""
    if spec.data_root is not None:
        return Path(spec.data_root)
    if spec.dataset == "synthetic":
        from mlebench.data.synthetic import default_synthetic_root

        return default_synthetic_root()
    return None


def announce_synthetic(dataset: str, data_root: Path | None, echo: Callable[[str], None]) -> None:
    """Say so before the embedded synthetic set is generated (first use: about half a minute)."""
    if dataset != "synthetic" or data_root is not None:
        return
    from mlebench.data.synthetic import MANIFEST, default_synthetic_root

    root = default_synthetic_root()
    if not (root / MANIFEST).is_file():
        echo(f"generating the synthetic data set in {root} (first use only; about 30 s on 2 CPU cores) ...")


def train_job(spec: RunSpec, echo: Callable[[str], None] = print, progress: bool = False,
              report: Callable[[str], None] | None = None, report_every: float = 30.0) -> Path:
    """Train only (``mlebench train``); returns the checkpoint path.

    ``report``: progress lines every ``report_every`` seconds (for logs, where no bar shows)."""
    from methods import build_method

    validate_spec(spec, "train")
    info = dataset_info(spec.dataset)
    modalities = tuple(spec.train_modalities or info.defaults)
    out = spec.save_checkpoint or default_train_checkpoint(spec, modalities)
    check_checkpoint_target(out, _expected_data_root(spec), _checkpoint_option(spec))
    announce_synthetic(spec.dataset, spec.data_root, echo)
    train_set = load_dataset(spec.dataset, spec.data_root, "train", modalities)
    check_checkpoint_target(out, train_set.root, _checkpoint_option(spec))
    torch.manual_seed(spec.seed)
    method = build_method(spec.method, info, modalities, spec.preset, **spec.method_options)
    config = train_config(spec, len(train_set), method)
    if spec.resume:
        check_resume(method, out, config)
    echo(f"training {spec.method} ({spec.preset}) on {info.name} {'-'.join(modalities)} "
         f"for {config.steps} steps on {spec.device}")
    losses = train(method, train_set, config, progress=progress, checkpoint=out, resume=spec.resume,
                   report=report, report_every=report_every)
    if losses:
        echo(f"final loss {losses[-1]:.4f}")
    return out


@terminate_as_exception()  # SIGTERM/SIGHUP raise Terminated, so the run is marked failed
def run_job(spec: RunSpec, echo: Callable[[str], None] = print, progress: bool = False,
            report: Callable[[str], None] | None = None, report_every: float = 30.0) -> RunOutcome:
    """Train or load, evaluate the protocol, store everything; rank 0 writes.

    Everything that can be checked is checked before the results store is touched: the
    configuration, the device, every output location, the evaluation split's files and the
    checkpoint to load or resume from. ``report``: progress lines every ``report_every`` seconds
    (for logs, where no bar shows)."""
    from methods import build_method

    validate_spec(spec, "run")
    info = dataset_info(spec.dataset)
    modalities = tuple(spec.train_modalities or info.defaults)
    protocol = get_protocol(spec.protocol, **spec.protocol_options)
    cases = protocol.cases(modalities, info)
    if rank() == 0:
        check_writable_file(spec.results, "--results", in_place=True)
        check_writable_dir(RUNS_DIR, "the runs folder (checkpoints and figures)")
        if spec.checkpoint is None and spec.save_checkpoint is not None:
            check_checkpoint_target(spec.save_checkpoint, _expected_data_root(spec))
    announce_synthetic(spec.dataset, spec.data_root, echo)
    eval_set = load_dataset(spec.dataset, spec.data_root, spec.eval_split, modalities)
    if spec.checkpoint is None and spec.save_checkpoint is not None:
        check_checkpoint_target(spec.save_checkpoint, eval_set.root)
    check_eval_files(eval_set)  # a broken evaluation file is found now, not after training
    train_set = None if spec.checkpoint else load_dataset(spec.dataset, eval_set.root, "train", modalities)
    torch.manual_seed(spec.seed)
    method = build_method(spec.method, info, modalities, spec.preset, **spec.method_options)
    config = train_config(spec, len(train_set), method) if train_set is not None else None
    if spec.checkpoint is not None:
        load_checkpoint(method, spec.checkpoint)  # a mismatch fails here, before anything is written
        echo(f"loaded {spec.checkpoint}")
    elif spec.resume:
        check_resume(method, spec.save_checkpoint, config)
    store = ResultsStore(spec.results) if rank() == 0 else None
    run_id = None
    if store is not None:
        run_id = store.start_run(
            method=spec.method, variant=method.variant, dataset=info.name, train_modalities=modalities,
            preset=spec.preset,
            config={
                "protocol": spec.protocol, "method": method.config_dict(),
                "train": dataclasses.asdict(config) if config else None,
                "checkpoint": str(spec.checkpoint) if spec.checkpoint else None,
                "eval_split": spec.eval_split, "eval_size": method.eval_size(spec.preset),
                "missing_modality": missing_policy(method),
                "frozen_source": method.frozen_source, "miou_convention": info.miou_convention,
                "feature_cache": spec.feature_cache, "world_size": world_size(),
                "eval_amp": spec.eval_amp, "eval_num_workers": eval_workers(spec),
                "bootstrap": dataclasses.asdict(spec.bootstrap),
                "parameters": {k: v for k, v in method.parameter_report().items() if k in ("trainable", "frozen")},
            },
            seed=spec.seed, git_commit=git_commit(), versions=package_versions(extra=getattr(method, "versioned_packages", ())),
            protocol=spec.protocol, split=spec.eval_split, miou_convention=info.miou_convention,
            group_id=spec.group_id, provenance=runtime_provenance(spec.seed, world_size()),
        )  # fmt: skip
    try:
        checkpoint = spec.checkpoint
        if spec.checkpoint is None:
            checkpoint = spec.save_checkpoint or RUNS_DIR / f"{run_id or 'run'}.pt"
            echo(f"training {spec.method} ({spec.preset}) on {info.name} {'-'.join(modalities)} "
                 f"for {config.steps} steps on {spec.device}")
            train(method, train_set, config, progress=progress, checkpoint=checkpoint, resume=spec.resume,
                  report=report, report_every=report_every)
            echo(f"checkpoint: {checkpoint}")
        echo(f"evaluating protocol {spec.protocol}: {len(cases)} cases on {info.name}/{spec.eval_split} "
             f"({len(eval_set)} samples)")
        # Qualitative figure: predictions of the training modalities on clean samples.
        shown = [c for c in cases if c.test_modalities == modalities and c.corruption is None][:1]
        passes = 1 if spec.feature_cache and method.separable_encoder else len(cases)
        counted = eval_set if report is None or rank() != 0 else CountingDataset(
            eval_set, report, passes, spec.eval_batch_size, report_every)
        results = evaluate_cases(
            method, counted, cases, batch_size=spec.eval_batch_size, device=spec.device,
            feature_cache=spec.feature_cache, base_seed=spec.seed, progress=progress,
            collect_pixels=protocol.collect_pixels, eval_size=method.eval_size(spec.preset), keep_predictions=shown,
            num_workers=eval_workers(spec), amp=spec.eval_amp,
        )  # fmt: skip
        artifacts = RUNS_DIR / (run_id or "run")
        summary = protocol.summary(results, modalities, artifacts=artifacts) if rank() == 0 else []
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
            store.fail_run(run_id, f"{type(exc).__name__}: {str(exc) or 'interrupted'}")
        raise
    return RunOutcome(run_id, results, summary, checkpoint, rows)


class CountingDataset:
    """The evaluation data set, passed through to the evaluator, reporting progress lines
    (batches and samples of all passes, samples/s, ETA) at a steady pace as samples are read."""

    def __init__(self, dataset: Any, report: Callable[[str], None], passes: int, batch_size: int,
                 every: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.dataset, self.passes, self.batch_size = dataset, passes, batch_size
        self.per_pass = len(ShardSampler(len(dataset), rank(), world_size()))
        self.read = 0
        self.lines = ProgressLines(report, "eval", passes * self.per_pass, "sample", every, clock)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        item = self.dataset[index]
        self.read += 1
        done_pass, in_pass = divmod(self.read - 1, self.per_pass)
        batches = math.ceil(self.per_pass / self.batch_size)
        batch = done_pass * batches + in_pass // self.batch_size + 1
        where = f" of pass {done_pass + 1}/{self.passes}" if self.passes > 1 else ""
        self.lines.update(self.read, f", batch {batch}/{self.passes * batches}{where}")
        return item

    def __getattr__(self, name: str) -> Any:  # info, refs, root, ...: the data set's
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


# File suffixes whose header gives the image size without decoding pixels.
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def _inspect_file(path: Path) -> tuple[str | None, tuple[int, ...] | None]:
    """(problem, (height, width)) of one file from its header and tail only; no pixels decoded."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "is missing", None
    except OSError as exc:
        return f"cannot be read ({exc.strerror})", None
    if not path.is_file():
        return "is not a file", None
    if size == 0:
        return "is empty (0 bytes)", None
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            shape = np.load(path, mmap_mode="r").shape  # the header only
        except Exception as exc:  # noqa: BLE001  (any failure: not a readable array)
            return f"is not a readable .npy array ({exc})", None
        return None, tuple(shape[:2]) if len(shape) >= 2 else None
    if suffix not in _IMAGE_SUFFIXES:
        return None, None
    from PIL import Image

    try:
        with Image.open(path) as img:
            width, height = img.size
            fmt = img.format
    except Exception as exc:  # noqa: BLE001  (PIL raises several types for broken headers)
        return f"is not a readable image ({type(exc).__name__}: {exc})", None
    if fmt == "PNG":
        with open(path, "rb") as fh:
            fh.seek(max(0, size - len(_PNG_END)))
            if fh.read() != _PNG_END:
                return "is truncated (no PNG end marker)", None
    return None, (height, width)


def _flat_paths(entry: Any) -> list[Path]:
    return [Path(p) for p in entry] if isinstance(entry, (tuple, list)) else [Path(entry)]


def check_eval_files(dataset: Any, limit: int = 20) -> None:
    """Every file of the evaluation split exists, has a readable header, a PNG is complete, and
    each modality has its label's size where the loader requires it; cheap (headers and file
    tails, no pixels decoded), so that a broken file is found before training, not after.

    A modality whose size differs from its label's is decoded once per (modality, size, label
    size) combination by the loader itself, which decides: some layouts store smaller frames on
    purpose (DELIVER's low-resolution events) and the loader resizes them."""
    problems: list[str] = []
    accepted: set[tuple[Any, ...]] = set()
    for ref in dataset.refs:
        paths = dataset.companion_paths(ref)
        sizes: dict[str, tuple[int, ...]] = {}
        broken = False
        for name, entry in paths.items():
            for path in _flat_paths(entry):
                problem, size = _inspect_file(path)
                if problem is not None:
                    problems.append(f"{name} file {path} {problem}")
                    broken = True
                elif size is not None:
                    sizes.setdefault(name, size)
        label = sizes.get("label")
        odd = tuple(sorted((m, s) for m, s in sizes.items() if m != "label" and label is not None and s != label))
        if broken or not odd or (odd, label) in accepted or len(problems) >= limit:
            continue
        try:
            dataset.decode(ref)  # the loader decides whether these sizes are fine
            accepted.add((odd, label))
        except DataError as exc:
            problems.append(str(exc))
    if problems:
        command = f"mlebench data check --dataset {dataset.info.name} --data-root {dataset.root} --split {dataset.split}"
        more = f" (and {len(problems) - 1} more: `{command}` lists them)" if len(problems) > 1 else ""
        raise DataError(f"evaluation split {dataset.split!r} of {dataset.info.name} at {dataset.root}: "
                        f"{problems[0]}{more}; found before anything ran, nothing was written")


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
