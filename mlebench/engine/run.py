"""The jobs: train (or load) a method, evaluate a protocol, store the results; and the same once
per training seed.

Before anything is written (results store, checkpoint, figures) a job checks its whole
configuration once (:func:`mlebench.config.validate_spec`), every output location
(:mod:`mlebench.outputs`), the evaluation split's files (headers only,
:func:`mlebench.data.check.check_eval_files`) and what ``--resume`` would continue from, so that
a mistake found after twenty minutes of training cannot happen.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from mlebench.config import RunSpec, validate_spec
from mlebench.data import dataset_info, load_dataset
from mlebench.data.check import check_eval_files
from mlebench.data.show import predictions_figure
from mlebench.data.synthetic import announce_synthetic, resolved_root
from mlebench.distributed import init_distributed, rank, world_size
from mlebench.engine.checkpoint import checkpoint_bytes, load_checkpoint
from mlebench.engine.evaluate import evaluate_cases, missing_policy
from mlebench.engine.progress import CountingDataset
from mlebench.engine.recipe import eval_workers, train_config
from mlebench.engine.train import check_resume, train
from mlebench.fsutil import atomic_path
from mlebench.outputs import CHECKPOINT, STORE, guard_output, probe_folder, require_space
from mlebench.protocols import CaseResult, SummaryRow, get_protocol
from mlebench.registry import build_method
from mlebench.results import ResultRow, ResultsStore, case_counts, git_commit, package_versions, result_rows
from mlebench.results.heartbeat import Heartbeat
from mlebench.results.provenance import runtime_provenance
from mlebench.signals import terminate_as_exception

#: where checkpoints (by default) and figures go
RUNS_DIR = Path("runs")

Echo = Callable[[str], None]


@dataclass
class RunOutcome:
    run_id: str | None
    results: list[CaseResult]
    summary: list[SummaryRow]
    checkpoint: Path | None
    rows: list[ResultRow] = field(default_factory=list)


def default_train_checkpoint(spec: RunSpec, modalities: Sequence[str]) -> Path:
    """Where ``mlebench train`` writes without --save-checkpoint: one stable path per method, data
    set, modalities and seed, so that ``train --resume`` finds what the interrupted run wrote."""
    return RUNS_DIR / f"{spec.method}-{dataset_info(spec.dataset).name}-{'-'.join(modalities)}-s{spec.seed}.pt"


def _checkpoint_option(spec: RunSpec) -> str:
    return "--save-checkpoint" if spec.save_checkpoint is not None else "the default checkpoint path"


def _guard_checkpoint(spec: RunSpec, path: Path, with_store: bool) -> None:
    """Training may write its checkpoint at ``path``: never over a store, a data set, a
    directory or another kind of file, and the folder takes a file (probed). ``with_store``: the
    job also writes ``--results``, which the checkpoint must not be."""
    guard_output(path, _checkpoint_option(spec), CHECKPOINT, replaces=(CHECKPOINT,),
                 data_roots=[r for r in [resolved_root(spec.dataset, spec.data_root)] if r is not None],
                 inputs=[(spec.results_file, "results store (--results)")] if with_store and spec.results_file else [])


def _guard_store(spec: RunSpec) -> None:
    """``--results`` is written in place: never a checkpoint, a data set's file or a directory,
    and its folder must take files (the store itself refuses a file that is not an mlebench
    store when it opens it). A database server guards itself when the store opens it."""
    if spec.results_file is None:
        return
    guard_output(spec.results_file, "--results", STORE, replaces=(STORE,),
                 data_roots=[r for r in [resolved_root(spec.dataset, spec.data_root)] if r is not None])


def _start(spec: RunSpec, job: str, echo: Echo, progress: bool,
           report: Echo | None) -> tuple[Echo, bool, Echo | None]:
    """Check the whole run (once), then join torchrun's process group if there is one; ranks
    other than 0 stay silent."""
    validate_spec(spec, job)
    init_distributed(spec.device)
    if rank() != 0:
        return (lambda _msg: None), False, None
    return echo, progress, report


def train_job(spec: RunSpec, echo: Echo = print, progress: bool = False, report: Echo | None = None,
              report_every: float = 30.0) -> Path:
    """Train only (``mlebench train``); returns the checkpoint path.

    ``report``: progress lines every ``report_every`` seconds (for logs, where no bar shows)."""
    echo, progress, report = _start(spec, "train", echo, progress, report)
    info = dataset_info(spec.dataset)
    modalities = tuple(spec.train_modalities or info.defaults)
    out = spec.save_checkpoint or default_train_checkpoint(spec, modalities)
    _guard_checkpoint(spec, out, with_store=False)
    announce_synthetic(spec.dataset, spec.data_root, echo)
    train_set = load_dataset(spec.dataset, spec.data_root, "train", modalities)
    torch.manual_seed(spec.seed)
    method = build_method(spec.method, info, modalities, spec.preset, **spec.method_options)
    require_space(out, _checkpoint_option(spec), checkpoint_bytes(method))
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
def run_job(spec: RunSpec, echo: Echo = print, progress: bool = False, report: Echo | None = None,
            report_every: float = 30.0) -> RunOutcome:
    """Train or load, evaluate the protocol, store everything; rank 0 writes.

    Everything that can be checked is checked before the results store is touched: the
    configuration, the device, every output location, the evaluation split's files and the
    checkpoint to load or resume from. ``report``: progress lines every ``report_every`` seconds
    (for logs, where no bar shows). Under torchrun every rank calls it; rank 0 writes and talks."""
    echo, progress, report = _start(spec, "run", echo, progress, report)
    info = dataset_info(spec.dataset)
    modalities = tuple(spec.train_modalities or info.defaults)
    protocol = get_protocol(spec.protocol, **spec.protocol_options)
    cases = protocol.cases(modalities, info)
    if rank() == 0:
        _guard_store(spec)
        probe_folder(RUNS_DIR, "the runs folder (checkpoints and figures)", RUNS_DIR)
        if spec.checkpoint is None and spec.save_checkpoint is not None:
            _guard_checkpoint(spec, spec.save_checkpoint, with_store=True)
    announce_synthetic(spec.dataset, spec.data_root, echo)
    eval_set = load_dataset(spec.dataset, spec.data_root, spec.eval_split, modalities)
    check_eval_files(eval_set)  # a broken evaluation file is found now, not after training
    train_set = None if spec.checkpoint else load_dataset(spec.dataset, eval_set.root, "train", modalities)
    torch.manual_seed(spec.seed)
    method = build_method(spec.method, info, modalities, spec.preset, **spec.method_options)
    if train_set is not None and rank() == 0:
        require_space(spec.save_checkpoint or RUNS_DIR / "<run id>.pt", _checkpoint_option(spec), checkpoint_bytes(method))
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
            preset=method.preset,
            config={
                "protocol": spec.protocol, "method": method.config_dict(),
                "train": dataclasses.asdict(config) if config else None,
                "checkpoint": str(spec.checkpoint) if spec.checkpoint else None,
                "eval_split": spec.eval_split, "eval_size": method.eval_size(method.preset),
                "data": eval_set.identity(),
                "missing_modality": missing_policy(method),
                "frozen_source": method.frozen_source, "miou_convention": info.miou_convention,
                "feature_cache": spec.feature_cache, "world_size": world_size(),
                "eval_amp": spec.eval_amp, "eval_num_workers": eval_workers(spec),
                "bootstrap": dataclasses.asdict(spec.bootstrap),
                "parameters": {k: v for k, v in method.parameter_report().items() if k in ("trainable", "frozen")},
                **({"sweep_cell": spec.sweep_cell} if spec.sweep_cell else {}),
            },
            seed=spec.seed, git_commit=git_commit(), versions=package_versions(extra=method.versioned_packages),
            protocol=spec.protocol, split=spec.eval_split, miou_convention=info.miou_convention,
            group_id=spec.group_id, provenance=runtime_provenance(spec.seed, world_size()),
        )  # fmt: skip
    # While the job runs, its heartbeat tells every host that it lives (stopped before the run ends).
    heartbeat = Heartbeat(store, run_id, spec.heartbeat_interval) if store is not None else None
    try:
        if heartbeat is not None:
            heartbeat.start()
        checkpoint = spec.checkpoint
        if spec.checkpoint is None:
            checkpoint = spec.save_checkpoint or RUNS_DIR / f"{run_id or 'run'}.pt"
            echo(f"training {spec.method} ({method.preset}) on {info.name} {'-'.join(modalities)} "
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
            collect_pixels=protocol.collect_pixels, eval_size=method.eval_size(method.preset), keep_predictions=shown,
            num_workers=eval_workers(spec), amp=spec.eval_amp,
        )  # fmt: skip
        summary = protocol.summary(results, modalities) if rank() == 0 else []
        rows = []
        if store is not None:
            figures = {}
            kept = next((r for r in results if r.predictions), None)
            if kept is not None:
                figures["predictions.png"] = predictions_figure(eval_set, kept.predictions, modalities,
                                                                title=kept.case.label)
            figures.update(protocol.figures(results, modalities))
            written = _write_figures(RUNS_DIR / run_id, figures)
            rows = result_rows(spec.protocol, results, summary, info.classes, info.miou_convention, spec.bootstrap)
            heartbeat.stop()
            store.finish_run(run_id, rows, counts=case_counts(spec.protocol, results), artifacts=figures)
            for path in written:
                echo(f"figure: {path}")
    except BaseException as exc:
        if heartbeat is not None:
            heartbeat.stop()
        if store is not None and run_id is not None:
            store.fail_run(run_id, f"{type(exc).__name__}: {str(exc) or 'interrupted'}")
        raise
    return RunOutcome(run_id, results, summary, checkpoint, rows)


def _write_figures(folder: Path, figures: dict[str, bytes]) -> list[Path]:
    """The run's figures as files beside its checkpoint, for looking at (the store keeps them too)."""
    paths = []
    for name, png in sorted(figures.items()):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_bytes(png)
        paths.append(path)
    return paths


def run_seeds(spec: RunSpec, seeds: Sequence[int], run: Callable[[RunSpec], RunOutcome],
              echo: Echo = print) -> tuple[str, list[RunOutcome]]:
    """One training and evaluation per seed (``run`` is :func:`run_job` or a caller's wrapper of
    it), stored as one group; returns the group id and the outcomes. With ``--save-checkpoint``
    each seed writes its own file (``NAME-sSEED.pt``), never one overwritten by the next."""
    group = uuid.uuid4().hex
    outcomes = []
    for number, seed in enumerate(seeds, 1):
        save = spec.save_checkpoint
        if save is not None:
            save = save.with_name(f"{save.stem}-s{seed}{save.suffix}")
        echo(f"== seed {seed} ({number} of {len(seeds)})")
        outcomes.append(run(dataclasses.replace(spec, seed=seed, group_id=group, save_checkpoint=save)))
    return group, outcomes
