"""The jobs and what they run: ``run``, ``eval``, ``train``, ``pretrain``, and the listings
``methods``, ``protocols`` and ``params``."""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import click

from mlebench.cli.options import (
    DATASET_OPTION, DEVICE_OPTION, JSON_OPTION, MODALITIES_OPTION, STORE_HELP, StoreParam, apply, method_option,
    parse_method_options, parse_modalities, parse_seeds, preset_option, progress_options, protocol_choice,
    registry_loaded,
)  # fmt: skip

PRESET_HELP = "the method's smallest preset, tiny for the built-in methods"


@contextlib.contextmanager
def process_group() -> Iterator[None]:
    """Under torchrun the job joins the process group; leave it when the command ends."""
    from mlebench.distributed import shutdown

    try:
        yield
    finally:
        shutdown()


def job_options(with_protocol: bool, checkpoint_required: bool = False) -> Any:
    """The options run / train / eval share, in the order --help shows them."""
    options = [method_option()]
    if with_protocol:
        options.append(click.option("--protocol", type=protocol_choice(), default="missing-modality",
                                    show_default=True))
    options += [
        DATASET_OPTION,
        click.option("--data-root", type=click.Path(path_type=Path, file_okay=False), default=None,
                     help="Data set folder (synthetic: generated and cached on first use)."),
        click.option("--train-modalities", default=None, help="Comma-separated (default: the data set's)."),
        preset_option(PRESET_HELP),
        click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False), default=None,
                     help="YAML with 'method', 'train' and 'protocol' option mappings."),
        click.option("--weights", type=click.Path(path_type=Path, dir_okay=False), default=None,
                     help="Pretrained or frozen weights for the method (the checkpoint format its "
                          "`weights_option` takes; see docs/baselines.md); 'none' for a seeded random init."),
        click.option("-o", "--option", "method_option", multiple=True, metavar="KEY=VALUE",
                     help="A method option (repeatable), e.g. -o top_k=1; values are read as YAML."),
        click.option("--seed", type=int, default=0, show_default=True),
        DEVICE_OPTION,
        click.option("--num-workers", type=click.IntRange(0), default=None,
                     help="Data-loading worker processes for training and evaluation "
                          "(default: 0 on CPU, up to 8 on a GPU; see docs/benchmark.md)."),
        click.option("--progress-every", type=click.FloatRange(min=0), default=30.0, show_default=True,
                     help="Seconds between progress lines when stdout is not a terminal (CI logs, > log)."),
    ]
    if with_protocol:
        options += [
            click.option("--results", type=StoreParam(), default=Path("results.sqlite"), show_default=True,
                         help=STORE_HELP),
            click.option("--heartbeat-interval", type=click.FloatRange(min=0, min_open=True), default=60.0,
                         show_default=True, metavar="SECONDS",
                         help="How often the running job records that it lives (see `results reap`)."),
            click.option("--sweep-cell", default=None, hidden=True),  # set by `mlebench sweep` for its cells
            click.option("--split", "eval_split", default="val", show_default=True),
            click.option("--batch-size", "eval_batch_size", type=click.IntRange(1), default=4,
                         show_default=True, help="Evaluation batch size."),
            click.option("--no-feature-cache", is_flag=True, help="Re-encode every modality for every case."),
            click.option("--amp", "eval_amp", is_flag=True,
                         help="Evaluate under bf16 autocast (see docs/benchmark.md for its mIoU effect)."),
            click.option("--checkpoint", type=click.Path(path_type=Path, dir_okay=False),
                         required=checkpoint_required, default=None,
                         help="Evaluate this checkpoint instead of training."),
        ]
    return apply(options)


TRAIN_OPTIONS = apply([
    click.option("--steps", type=click.IntRange(1), default=None, help="Training steps."),
    click.option("--epochs", type=click.IntRange(1), default=None, help="Training epochs (paper: 100)."),
    click.option("--save-checkpoint", type=click.Path(path_type=Path, dir_okay=False), default=None,
                 help="Where training writes its checkpoint (default: run: runs/<run id>.pt, new every run; "
                      "train: runs/<method>-<dataset>-<modalities>-s<seed>.pt)."),
    click.option("--checkpoint-every", type=click.IntRange(0), default=None,
                 help="Also write the checkpoint every N steps."),
    click.option("--resume", is_flag=True,
                 help="Continue training from --save-checkpoint (run) or the default path (train), "
                      "with the same options; anything different is refused."),
])


def spec_from_options(params: dict[str, Any], protocol: str | None) -> Any:
    """The run the options describe: parsed here, merged by :mod:`mlebench.config`, checked
    whole by the job when it starts (before anything is read or written)."""
    from mlebench.config import RunSpec, merge_run_options, read_config

    if params.get("steps") is not None and params.get("epochs") is not None:
        raise click.UsageError("give --steps or --epochs, not both")
    dataset = params["dataset"]
    mods = params.get("train_modalities")
    config_file = params.get("config_file")
    sections = merge_run_options(params["method_name"], protocol, read_config(config_file),
                                 parse_method_options(params.get("method_option") or ()), params.get("weights"),
                                 where=f"config {config_file}: ")
    if params.get("checkpoint_every") is not None:
        sections["train"]["checkpoint_every"] = params["checkpoint_every"]
    return RunSpec(
        method=params["method_name"], protocol=protocol or "full", dataset=dataset, data_root=params.get("data_root"),
        train_modalities=tuple(parse_modalities(dataset, mods, "--train-modalities")) if mods is not None else None,
        preset=params["preset"], method_options=sections["method"], train_options=sections["train"],
        protocol_options=sections["protocol"], steps=params.get("steps"), epochs=params.get("epochs"),
        seed=params["seed"], device=params["device"], results=params.get("results") or Path("results.sqlite"),
        checkpoint=params.get("checkpoint"), save_checkpoint=params.get("save_checkpoint"),
        resume=params.get("resume", False), eval_split=params.get("eval_split", "val"),
        eval_batch_size=params.get("eval_batch_size", 4), feature_cache=not params.get("no_feature_cache", False),
        num_workers=params.get("num_workers"), eval_amp=params.get("eval_amp", False),
        heartbeat_interval=params.get("heartbeat_interval", 60.0),
        sweep_cell=params.get("sweep_cell"),
    )  # fmt: skip


def execute(spec: Any, progress_every: float = 30.0) -> Any:
    """Run one job (train or load, evaluate, store) and print its results on rank 0."""
    from mlebench.distributed import is_main
    from mlebench.engine.run import run_job
    from mlebench.report.console import format_results

    start = time.perf_counter()
    outcome = run_job(spec, echo=click.echo, **progress_options(progress_every))
    if is_main():
        click.echo(format_results(outcome.results, outcome.summary, outcome.rows))
        click.echo(f"run {outcome.run_id} stored in {spec.results} ({time.perf_counter() - start:.0f} s)")
    return outcome


@click.command("run")
@job_options(with_protocol=True)
@TRAIN_OPTIONS
@click.option("--seeds", default=None,
              help="Train and evaluate once per seed (e.g. 0,1,2); the runs are stored as one group.")
@click.pass_context
def run(ctx: click.Context, **params: Any) -> None:
    """Train a method (or load --checkpoint), evaluate a protocol, print and store the results.

    With no options: MLE-SAM, tiny preset, on the embedded synthetic data set (generated on
    first use), all four modalities, CPU, the missing-modality protocol.
    """
    seeds = parse_seeds(params.pop("seeds"))
    spec = spec_from_options(params, params["protocol"])
    every = params["progress_every"]
    if seeds is None:
        with process_group():
            execute(spec, every)
        return
    if ctx.get_parameter_source("seed") is not click.core.ParameterSource.DEFAULT:
        raise click.UsageError("give --seed or --seeds, not both")
    if spec.resume or spec.checkpoint is not None:
        raise click.UsageError("--seeds trains one model per seed; it cannot be combined with --resume or --checkpoint")
    from mlebench.engine.run import run_seeds
    from mlebench.report.console import format_seed_summary
    from mlebench.results import ResultsStore

    with process_group():
        group, _ = run_seeds(spec, seeds, lambda one: execute(one, every), echo=click.echo)
    click.echo(format_seed_summary(ResultsStore(spec.results), group))
    click.echo(f"group {group}: {len(seeds)} runs stored in {spec.results}")


@click.command("eval")
@job_options(with_protocol=True, checkpoint_required=True)
def eval_cmd(**params: Any) -> None:
    """Evaluate a trained checkpoint under a protocol and store the results."""
    with process_group():
        execute(spec_from_options(params, params["protocol"]), params["progress_every"])


@click.command("train")
@job_options(with_protocol=False)
@TRAIN_OPTIONS
def train_cmd(**params: Any) -> None:
    """Train a method and write its checkpoint (no evaluation)."""
    from mlebench.distributed import is_main
    from mlebench.engine.run import train_job

    spec = spec_from_options(params, None)
    with process_group():
        out = train_job(spec, echo=click.echo, **progress_options(params["progress_every"]))
        if is_main():
            click.echo(f"checkpoint: {out}")


@click.command("methods")
def methods_cmd() -> None:
    """List every registered method, one per line (plugins included)."""
    from mlebench.registry import method_names

    registry_loaded()
    for name in method_names():
        click.echo(name)


@click.command("protocols")
def protocols_cmd() -> None:
    """List every evaluation protocol, one per line with its description."""
    from mlebench.protocols import get_protocol, protocol_names

    for name in protocol_names():
        click.echo(f"{name:<18} {get_protocol(name).description}")


@click.command("params")
@method_option(required=True)
@preset_option("the method's full-size preset, paper for the built-in methods")
@DATASET_OPTION
@MODALITIES_OPTION
@JSON_OPTION
def params_cmd(method_name: str, preset: str | None, dataset: str, modalities: str | None, as_json: bool) -> None:
    """Trainable parameters by part, total trainable and frozen (no weights needed)."""
    import json

    from mlebench.data import dataset_info
    from mlebench.registry import build_method, method_entry

    info = dataset_info(dataset)
    names = parse_modalities(dataset, modalities) or list(info.defaults)
    preset = method_entry(method_name).full_preset if preset is None else preset
    report = build_method(method_name, info, names, preset).parameter_report()
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"{method_name} ({preset} preset, {dataset}, {'-'.join(names)})")
    for part, count in report["parts"].items():
        click.echo(f"  {part:<20} {count / 1e6:10.3f} M")
    for key in ("trainable", "frozen", "total"):
        click.echo(f"{key:<22} {report[key] / 1e6:10.3f} M")


@click.command("pretrain")
@method_option(help="Whose tiny stand-in backbone to make (methods sharing a backbone share the file).")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Output file (default: the shipped stand-in's path, with its .json record beside it).")
@click.option("--steps", type=click.IntRange(1), default=4000, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--n-images", type=click.IntRange(1), default=600, show_default=True)
@click.option("--threads", type=click.IntRange(1), default=2, show_default=True,
              help="CPU threads (results depend on it; the shipped stand-ins used 2).")
@click.option("--force", is_flag=True, help="Let --out replace a checkpoint that is not a stand-in.")
def pretrain_cmd(method_name: str, out: Path | None, steps: int, batch_size: int, lr: float, seed: int,
                 n_images: int, threads: int, force: bool) -> None:
    """Pre-train a method's tiny stand-in backbone on synthetic RGB, by the one shared recipe.

    Real SAM2, SAM and MiT weights cannot be downloaded here; every tiny preset loads a stand-in
    made by this command with the same data and budget (see docs/baselines.md).
    """
    from mlebench.pretrain import PretrainRecipe, pretrain_stand_in

    recipe = PretrainRecipe(steps=steps, batch_size=batch_size, lr=lr, seed=seed, n_images=n_images, threads=threads)
    record = pretrain_stand_in(method_name, out, recipe, progress=sys.stderr.isatty(),
                               report=None if sys.stderr.isatty() else lambda line: click.echo(line, err=True),
                               force=force)
    click.echo(f"wrote {record['out']} ({record['stand_in']}, trained through {record['trained_by']}; "
               f"final loss {record['final_loss']:.3f}, {record['train_seconds']:.0f} s, sha256 {record['sha256'][:16]})")


COMMANDS = [run, eval_cmd, train_cmd, methods_cmd, protocols_cmd, params_cmd, pretrain_cmd]
