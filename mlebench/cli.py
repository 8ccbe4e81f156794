"""The ``mlebench`` command line.

User errors (a bad path, a broken file) surface as one ``Error: ...`` line and exit status 1;
bad options are click usage errors (exit status 2) that list the valid choices.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Sequence

import click

from mlebench.errors import MlebenchError
from mlebench.signals import Terminated, exit_interrupted


class _Group(click.Group):
    """A click group that turns :class:`MlebenchError` into a clean message and exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MlebenchError as exc:
            raise click.ClickException(str(exc)) from exc
        except (KeyboardInterrupt, Terminated) as exc:  # Ctrl-C: exit 130, SIGTERM: 143, one line each
            exit_interrupted(exc)


def _dataset_names() -> list[str]:
    from mlebench.data import dataset_names

    return dataset_names()


def _parse_modalities(dataset: str, text: str | None, hint: str = "--modalities") -> list[str] | None:
    """``"rgb,depth"`` -> ``["rgb", "depth"]``, checked against the data set (usage error)."""
    if text is None:
        return None
    from mlebench.data import dataset_info

    info = dataset_info(dataset)
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise click.BadParameter(
            f"{text!r} names no modality; give a comma-separated list from {', '.join(info.modality_names)} "
            "(leave the option out for the data set's default)",
            param_hint=hint,
        )
    unknown = [name for name in names if name not in info.modality_names]
    if unknown:
        raise click.BadParameter(
            f"unknown modality {', '.join(map(repr, unknown))} for {dataset}; "
            f"choose from {', '.join(info.modality_names)}",
            param_hint=hint,
        )
    if len(set(names)) != len(names):
        raise click.BadParameter(f"{text!r} names a modality twice", param_hint=hint)
    return names


DATASET_OPTION = click.option(
    "--dataset",
    type=click.Choice(_dataset_names()),
    default="synthetic",
    show_default=True,
    help="Which data set layout to read.",
)
def ROOT_OPTION(f):  # noqa: N802  (used like the click.option objects beside it)
    """``--data-root`` (the name every command uses), and ``--root``: a hidden, deprecated alias."""
    f = click.option("--root", "legacy_root", type=click.Path(path_type=Path, file_okay=False), default=None,
                     hidden=True, help="Deprecated: use --data-root.")(f)
    return click.option("--data-root", "root", type=click.Path(path_type=Path, file_okay=False), default=None,
                        help="Data set folder (optional for synthetic: the cached default is used).")(f)


def _data_root(dataset: str, root: Path | None, legacy_root: Path | None) -> Path | None:
    """The data root of a data command; ``--root`` still works and says it is deprecated."""
    if legacy_root is not None:
        if root is not None:
            raise click.UsageError("give --data-root only (--root is its deprecated old name)")
        click.echo("warning: --root is deprecated; use --data-root", err=True)
        root = legacy_root
    from mlebench.engine.run import announce_synthetic

    announce_synthetic(dataset, root, lambda msg: click.echo(msg, err=True))
    return root
MODALITIES_OPTION = click.option(
    "--modalities", default=None, help="Comma-separated modalities (default: the data set's)."
)


@click.group(cls=_Group)
@click.version_option(package_name="mlebench")
def main() -> None:
    """mlebench: benchmark and robustness suite for multi-modal semantic segmentation."""


@main.group(cls=_Group)
def data() -> None:
    """Generate, check and look at data sets."""


@data.command("synth")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True)
@click.option("--size", type=click.IntRange(32, 4096), default=256, show_default=True)
@click.option("--n-train", type=click.IntRange(1), default=300, show_default=True)
@click.option("--n-val", type=click.IntRange(1), default=100, show_default=True)
@click.option("--n-test", type=click.IntRange(1), default=100, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=click.IntRange(1), default=None, help="Processes (default: up to 2).")
def data_synth(
    out: Path, size: int, n_train: int, n_val: int, n_test: int, seed: int, workers: int | None
) -> None:
    """Write the synthetic multi-modal street scenes in the DELIVER layout to OUT."""
    from mlebench.data.check import check_dataset
    from mlebench.data.synthetic import generate_synthetic

    start = time.perf_counter()
    root = generate_synthetic(
        out, size=size, n_train=n_train, n_val=n_val, n_test=n_test, seed=seed, workers=workers
    )
    elapsed = time.perf_counter() - start
    report = check_dataset("synthetic", root, decode=False)
    click.echo(report.format_text())
    click.echo(f"generated in {elapsed:.1f} s")


@data.command("check")
@DATASET_OPTION
@ROOT_OPTION
@MODALITIES_OPTION
@click.option("--split", "splits", multiple=True, help="Only these splits (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--no-decode", is_flag=True, help="Only check that files exist (fast).")
def data_check(
    dataset: str,
    root: Path | None,
    legacy_root: Path | None,
    modalities: str | None,
    splits: tuple[str, ...],
    as_json: bool,
    no_decode: bool,
) -> None:
    """Count samples per split and case; list missing and unreadable files.

    Exit status 0 when the layout is sound, 1 otherwise.
    """
    from mlebench.data import dataset_info
    from mlebench.data.check import check_dataset

    info = dataset_info(dataset)
    for split in splits:
        if split not in info.splits:
            raise click.BadParameter(
                f"unknown split {split!r}; choose from {', '.join(info.splits)}", param_hint="--split"
            )
    root = _data_root(dataset, root, legacy_root)
    report = check_dataset(
        dataset,
        root,
        _parse_modalities(dataset, modalities),
        splits or None,
        decode=not no_decode,
        progress=not as_json and sys.stderr.isatty(),
    )
    click.echo(report.to_json() if as_json else report.format_text())
    sys.exit(0 if report.ok else 1)


@data.command("show")
@DATASET_OPTION
@ROOT_OPTION
@MODALITIES_OPTION
@click.option("--split", default="val", show_default=True)
@click.option("--index", type=click.IntRange(0), default=0, show_default=True)
@click.option("-o", "--out", type=click.Path(path_type=Path, dir_okay=False), required=True)
def data_show(
    dataset: str, root: Path | None, legacy_root: Path | None, modalities: str | None, split: str, index: int,
    out: Path,
) -> None:
    """Write one PNG with every modality of a sample side by side and its coloured label."""
    from mlebench.data import dataset_info, load_dataset
    from mlebench.data.show import render_sample

    info = dataset_info(dataset)
    if split not in info.splits:
        raise click.BadParameter(
            f"unknown split {split!r}; choose from {', '.join(info.splits)}", param_hint="--split"
        )
    names = _parse_modalities(dataset, modalities)
    ds = load_dataset(dataset, _data_root(dataset, root, legacy_root), split, names)
    if index >= len(ds):
        raise click.BadParameter(
            f"{index} is out of range: {dataset}/{split} has {len(ds)} samples", param_hint="--index"
        )
    path = render_sample(ds[index], info, ds.modalities, out)
    click.echo(f"wrote {path} ({ds.refs[index].id})")


@main.command("methods")
def methods_cmd() -> None:
    """List every registered method, one per line."""
    from methods import method_names

    for name in method_names():
        click.echo(name)


def _default_method() -> str:
    from methods import default_method

    return default_method()


def _method_choice() -> click.Choice:
    from methods import method_names

    return click.Choice(method_names())


@main.command("params")
@click.option("--method", "method_name", type=_method_choice(), required=True)
@click.option("--preset", type=click.Choice(["tiny", "paper"]), default="paper", show_default=True)
@DATASET_OPTION
@MODALITIES_OPTION
@click.option("--json", "as_json", is_flag=True)
def params_cmd(method_name: str, preset: str, dataset: str, modalities: str | None, as_json: bool) -> None:
    """Trainable parameters by part, total trainable and frozen (no weights needed)."""
    import json

    from methods import build_method
    from mlebench.data import dataset_info

    info = dataset_info(dataset)
    names = _parse_modalities(dataset, modalities) or list(info.defaults)
    report = build_method(method_name, info, names, preset).parameter_report()
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"{method_name} ({preset} preset, {dataset}, {'-'.join(names)})")
    for part, count in report["parts"].items():
        click.echo(f"  {part:<20} {count / 1e6:10.3f} M")
    for key in ("trainable", "frozen", "total"):
        click.echo(f"{key:<22} {report[key] / 1e6:10.3f} M")


@main.command("pretrain")
@click.option("--method", "method_name", type=_method_choice(), default=_default_method, show_default="mlesam",
              help="Whose tiny stand-in backbone to make (methods sharing a backbone share the file).")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Output file (default: the shipped stand-in's path, with its .json record beside it).")
@click.option("--steps", type=click.IntRange(1), default=4000, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--n-images", type=click.IntRange(1), default=600, show_default=True)
@click.option("--threads", type=click.IntRange(1), default=2, show_default=True,
              help="CPU threads (results depend on it; the shipped stand-ins used 2).")
def pretrain_cmd(method_name: str, out: Path | None, steps: int, batch_size: int, lr: float, seed: int,
                 n_images: int, threads: int) -> None:
    """Pre-train a method's tiny stand-in backbone on synthetic RGB, by the one shared recipe.

    Real SAM2, SAM and MiT weights cannot be downloaded here; every tiny preset loads a stand-in
    made by this command with the same data and budget (see docs/baselines.md).
    """
    from mlebench.pretrain import PretrainRecipe, pretrain_stand_in

    recipe = PretrainRecipe(steps=steps, batch_size=batch_size, lr=lr, seed=seed, n_images=n_images, threads=threads)
    record = pretrain_stand_in(method_name, out, recipe, progress=sys.stderr.isatty(),
                               report=None if sys.stderr.isatty() else lambda line: click.echo(line, err=True))
    click.echo(f"wrote {record['out']} ({record['stand_in']}, trained through {record['trained_by']}; "
               f"final loss {record['final_loss']:.3f}, {record['train_seconds']:.0f} s, sha256 {record['sha256'][:16]})")


@main.group(cls=_Group)
def bench() -> None:
    """Speed benchmarks: both variants measured side by side in one run."""


@bench.command("bootstrap")
@click.option("--cases", type=click.IntRange(1), default=15, show_default=True)
@click.option("--samples", type=click.IntRange(2), default=500, show_default=True)
@click.option("--classes", type=click.IntRange(1), default=25, show_default=True)
@click.option("--resamples", type=click.IntRange(10), default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def bench_bootstrap_cmd(cases: int, samples: int, classes: int, resamples: int, as_json: bool) -> None:
    """Bootstrap intervals of a whole protocol: vectorised vs a loop over resamples."""
    import json

    from mlebench.bench import bench_bootstrap

    result = bench_bootstrap(cases, samples, classes, resamples)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"95% intervals for {cases} cases + their mean, {samples} samples, {classes} classes, "
               f"{resamples} resamples")
    click.echo(f"  loop over resamples (scaled) : {result['loop_s']:8.2f} s")
    click.echo(f"  vectorised                   : {result['vectorised_s']:8.2f} s")
    click.echo(f"  ratio loop/vectorised        : {result['ratio']:8.1f}x")
    click.echo(f"  max |difference|             : {result['max_abs_diff']:.2e}")


def _protocol_choice() -> click.Choice:
    from mlebench.protocols import protocol_names

    return click.Choice(protocol_names())


def _device_option(f):
    return click.option("--device", default="cpu", show_default=True,
                        help="cpu, cuda, cuda:N or mps (checked before anything runs).")(f)


def _job_options(with_protocol: bool, checkpoint_required: bool = False):
    """The options run / train / eval share, in the order --help shows them."""

    def decorate(f):
        options = [
            click.option("--method", "method_name", type=_method_choice(), default=_default_method(), show_default=True),
        ]
        if with_protocol:
            options.append(click.option("--protocol", type=_protocol_choice(), default="missing-modality",
                                        show_default=True))
        options += [
            DATASET_OPTION,
            click.option("--data-root", type=click.Path(path_type=Path, file_okay=False), default=None,
                         help="Data set folder (synthetic: generated and cached on first use)."),
            click.option("--train-modalities", default=None, help="Comma-separated (default: the data set's)."),
            click.option("--preset", type=click.Choice(["tiny", "paper"]), default="tiny", show_default=True),
            click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False), default=None,
                         help="YAML with 'method', 'train' and 'protocol' option mappings."),
            click.option("--weights", type=click.Path(path_type=Path, dir_okay=False), default=None,
                         help="Pretrained or frozen weights for the method (the checkpoint format its "
                              "`weights_option` takes; see docs/baselines.md); 'none' for a seeded random init."),
            click.option("-o", "--option", "method_option", multiple=True, metavar="KEY=VALUE",
                         help="A method option (repeatable), e.g. -o top_k=1; values are read as YAML."),
            click.option("--seed", type=int, default=0, show_default=True),
            _device_option,
            click.option("--num-workers", type=click.IntRange(0), default=None,
                         help="Data-loading worker processes for training and evaluation "
                              "(default: 0 on CPU, up to 8 on a GPU; see docs/benchmark.md)."),
            click.option("--progress-every", type=click.FloatRange(min=0), default=30.0, show_default=True,
                         help="Seconds between progress lines when stdout is not a terminal (CI logs, > log)."),
        ]
        if with_protocol:
            options += [
                click.option("--results", type=click.Path(path_type=Path, dir_okay=False),
                             default=Path("results.sqlite"), show_default=True),
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
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def _train_options(f):
    for option in reversed([
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
    ]):
        f = option(f)
    return f


def _read_config(path: Path | None) -> dict[str, dict[str, Any]]:
    from mlebench.config import read_config

    return read_config(path)


def _parse_method_options(items: Sequence[str]) -> dict[str, Any]:
    """``("top_k=1", "router=scalar")`` -> ``{"top_k": 1, "router": "scalar"}`` (values as YAML)."""
    import yaml

    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="-o/--option")
        try:
            options[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError as exc:
            raise click.BadParameter(f"{item!r}: the value is not valid YAML ({exc})", param_hint="-o/--option") from None
    return options


def _spec(params: dict[str, Any], protocol: str | None) -> Any:
    """The run the options describe, checked whole (options, --config, device, output paths)
    before anything is read or written; ``protocol`` None: ``train`` (nothing evaluated)."""
    from mlebench.config import RunSpec, validate_sections, validate_spec

    if params.get("steps") is not None and params.get("epochs") is not None:
        raise click.UsageError("give --steps or --epochs, not both")
    dataset = params["dataset"]
    mods = params.get("train_modalities")
    modalities = tuple(_parse_modalities(dataset, mods, "--train-modalities")) if mods is not None else None
    config_file = params.get("config_file")
    config = _read_config(config_file)
    if config_file is not None:
        config = validate_sections(config, params["method_name"], protocol, where=f"config {config_file}: ")
    method_options = dict(config.get("method", {}))
    given_options = _parse_method_options(params.get("method_option") or ())
    weights = params.get("weights")
    if weights is not None:
        from methods.base import weights_option

        target = weights_option(params["method_name"])
        if target is None:
            raise click.BadParameter(f"method {params['method_name']} takes no weights", param_hint="--weights")
        # "none": a randomly initialised (seeded) frozen part instead of the preset's weights.
        given_options[target] = None if str(weights).lower() == "none" else str(weights)
    if given_options:
        checked = validate_sections({"method": given_options}, params["method_name"], protocol,
                                    where="-o/--weights: ")
        method_options.update(checked.get("method", given_options))
    train_options = dict(config.get("train", {}))
    if params.get("checkpoint_every") is not None:
        train_options["checkpoint_every"] = params["checkpoint_every"]
    spec = RunSpec(
        method=params["method_name"], protocol=protocol or "full", dataset=dataset,
        data_root=params.get("data_root"),
        train_modalities=modalities,
        preset=params["preset"], method_options=method_options, train_options=train_options,
        protocol_options=dict(config.get("protocol", {})), steps=params.get("steps"),
        epochs=params.get("epochs"), seed=params["seed"], device=params["device"],
        results=params.get("results") or Path("results.sqlite"), checkpoint=params.get("checkpoint"),
        save_checkpoint=params.get("save_checkpoint"), resume=params.get("resume", False),
        eval_split=params.get("eval_split", "val"), eval_batch_size=params.get("eval_batch_size", 4),
        feature_cache=not params.get("no_feature_cache", False),
        num_workers=params.get("num_workers"), eval_amp=params.get("eval_amp", False),
    )  # fmt: skip
    validate_spec(spec, "train" if protocol is None else "run")
    return spec


def _progress(rank0: bool, every: float) -> dict[str, Any]:
    """A bar on stderr when it is a terminal; progress lines on stdout when that is not one (a CI
    log, ``> log``), every ``every`` seconds."""
    return {"progress": rank0 and sys.stderr.isatty(),
            "report": click.echo if rank0 and not sys.stdout.isatty() else None, "report_every": every}


def _execute(spec: Any, progress_every: float = 30.0) -> None:
    from mlebench.distributed import init_distributed, is_main, shutdown
    from mlebench.engine.run import format_results, run_job

    init_distributed(spec.device)
    rank0 = is_main()
    echo = click.echo if rank0 else (lambda _msg: None)
    start = time.perf_counter()
    outcome = run_job(spec, echo=echo, **_progress(rank0, progress_every))
    if rank0:
        click.echo(format_results(outcome.results, outcome.summary, outcome.rows))
        click.echo(f"run {outcome.run_id} stored in {spec.results} ({time.perf_counter() - start:.0f} s)")
    shutdown()


def _execute_seeds(spec: Any, seeds: list[int], progress_every: float = 30.0) -> None:
    """One training and evaluation per seed, stored as one group; then mean and std over seeds."""
    import dataclasses
    import uuid

    from mlebench.report.console import format_seed_summary
    from mlebench.results import ResultsStore

    group = uuid.uuid4().hex
    for number, seed in enumerate(seeds, 1):
        save = spec.save_checkpoint
        if save is not None:  # one checkpoint per seed, never one overwritten by the next
            save = save.with_name(f"{save.stem}-s{seed}{save.suffix}")
        click.echo(f"== seed {seed} ({number} of {len(seeds)})")
        _execute(dataclasses.replace(spec, seed=seed, group_id=group, save_checkpoint=save), progress_every)
    click.echo(format_seed_summary(ResultsStore(spec.results), group))
    click.echo(f"group {group}: {len(seeds)} runs stored in {spec.results}")


def _parse_seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of integers", param_hint="--seeds") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise click.BadParameter(f"{text!r}: give distinct integer seeds, e.g. 0,1,2", param_hint="--seeds")
    return seeds


@main.command("run")
@_job_options(with_protocol=True)
@_train_options
@click.option("--seeds", default=None,
              help="Train and evaluate once per seed (e.g. 0,1,2); the runs are stored as one group.")
@click.pass_context
def run(ctx: click.Context, **params: Any) -> None:
    """Train a method (or load --checkpoint), evaluate a protocol, print and store the results.

    With no options: MLE-SAM, tiny preset, on the embedded synthetic data set (generated on
    first use), all four modalities, CPU, the missing-modality protocol.
    """
    seeds = _parse_seeds(params.pop("seeds"))
    spec = _spec(params, params["protocol"])
    if seeds is None:
        _execute(spec, params["progress_every"])
        return
    if ctx.get_parameter_source("seed") is not click.core.ParameterSource.DEFAULT:
        raise click.UsageError("give --seed or --seeds, not both")
    if spec.resume or spec.checkpoint is not None:
        raise click.UsageError("--seeds trains one model per seed; it cannot be combined with --resume or --checkpoint")
    _execute_seeds(spec, seeds, params["progress_every"])


@main.command("eval")
@_job_options(with_protocol=True, checkpoint_required=True)
def eval_cmd(**params: Any) -> None:
    """Evaluate a trained checkpoint under a protocol and store the results."""
    _execute(_spec(params, params["protocol"]), params["progress_every"])


@main.command("train")
@_job_options(with_protocol=False)
@_train_options
def train_cmd(**params: Any) -> None:
    """Train a method and write its checkpoint (no evaluation)."""
    from mlebench.distributed import init_distributed, is_main, shutdown
    from mlebench.engine.run import train_job

    spec = _spec(params, None)
    init_distributed(spec.device)
    rank0 = is_main()
    out = train_job(spec, echo=click.echo if rank0 else (lambda _msg: None), **_progress(rank0, params["progress_every"]))
    if rank0:
        click.echo(f"checkpoint: {out}")
    shutdown()


@main.command("protocols")
def protocols_cmd() -> None:
    """List every evaluation protocol, one per line with its description."""
    from mlebench.protocols import get_protocol, protocol_names

    for name in protocol_names():
        click.echo(f"{name:<18} {get_protocol(name).description}")


@main.group(cls=_Group)
def results() -> None:
    """Look at and export the results store."""


RESULTS_OPTION = click.option("--results", "results_path", type=click.Path(path_type=Path, dir_okay=False),
                              default=Path("results.sqlite"), show_default=True)


def _existing_store(path: Path) -> Any:
    from mlebench.results.store import open_store_for_reading

    if not path.exists():
        raise click.BadParameter(f"{path} does not exist", param_hint="--results")
    return open_store_for_reading(path)


def _refuse_overwriting(out: Path | None, protected: Path, what: str) -> None:
    """An output path that is the store (or another input) would destroy it: refuse."""
    if out is None:
        return
    import os

    same = out.exists() and protected.exists() and os.path.samefile(out, protected)
    if same or out.resolve() == protected.resolve():
        raise click.BadParameter(f"{out} is the {what}; writing there would destroy it", param_hint="-o/--out")


@results.command("list")
@RESULTS_OPTION
def results_list(results_path: Path) -> None:
    """One line per run: id, method, data set, modalities, protocol, preset, seed, split, status,
    and its headline mIoU with the 95% interval; then mean and std per multi-seed group."""
    from mlebench.report.console import format_run_list

    click.echo(format_run_list(_existing_store(results_path)))


@results.command("export")
@RESULTS_OPTION
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option("--per-sample", is_flag=True,
              help="One row per run, case, sample and class with tp, fp, fn (csv only).")
@click.option("-o", "--out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write to a file (atomically) instead of stdout.")
def results_export(results_path: Path, fmt: str, per_sample: bool, out: Path | None) -> None:
    """Every result row of the finished runs with intervals and seed statistics, as CSV or JSON."""
    from mlebench.report.export import export_per_sample, export_results, write_atomically

    _refuse_overwriting(out, results_path, "results store")
    store = _existing_store(results_path)
    if per_sample and fmt != "csv":
        raise click.BadParameter("--per-sample writes csv only", param_hint="--format")

    def write(fh: Any) -> None:
        if per_sample:
            export_per_sample(store, fmt, fh)
        else:
            export_results(store, fmt, fh)

    if out is None:
        import io

        buffer = io.StringIO()
        write(buffer)
        click.echo(buffer.getvalue(), nl=False)
        return
    write_atomically(out, write)
    click.echo(f"wrote {out}")


@results.command("migrate")
@RESULTS_OPTION
def results_migrate(results_path: Path) -> None:
    """Upgrade a results file written by an older mlebench (the original is kept beside it)."""
    from mlebench.results import SCHEMA_VERSION, migrate

    if not results_path.exists():
        raise click.BadParameter(f"{results_path} does not exist", param_hint="--results")
    old, backup = migrate(results_path)
    if old == SCHEMA_VERSION:
        click.echo(f"{results_path} is already at schema version {SCHEMA_VERSION}")
    else:
        click.echo(f"migrated {results_path} from schema version {old} to {SCHEMA_VERSION}; original kept at {backup}")


@main.command("report")
@RESULTS_OPTION
@click.option("--format", "fmt", type=click.Choice(["latex", "html", "markdown", "csv"]), default="markdown",
              show_default=True)
@click.option("--table", "tables", multiple=True, default=("all",), show_default=True,
              help="Which table(s) (repeatable); 'all' for every table with measurements.")
@click.option("--runs", default=None, help="Comma-separated run ids (default: every finished run).")
@click.option("--ci", is_flag=True, help="Show the 95% bootstrap interval of each single-run cell.")
@click.option("--seeds", is_flag=True, help="Pool multi-seed groups: cells show mean ± std over seeds.")
@click.option("--reference", default=_default_method(), show_default=True,
              help="Method that Δ rows and significance marks compare with ('none': no comparison).")
@click.option("--compare", "compare_with", type=click.Choice(["paper"]), default=None,
              help="Add measured-vs-published tables (baselines/paper).")
@click.option("--pdf", is_flag=True, help="With --format latex and -o: also compile the document to PDF.")
@click.option("-o", "--out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write to a file (atomically) instead of stdout.")
def report_cmd(results_path: Path, fmt: str, tables: tuple[str, ...], runs: str | None, ci: bool, seeds: bool,
               reference: str, compare_with: str | None, pdf: bool, out: Path | None) -> None:
    """Tables for a paper (LaTeX, Markdown, CSV) or one self-contained HTML page with plots, from
    the results store alone."""
    from mlebench.report.tables import TableOptions, build_tables, table_names, tidy_frame

    _refuse_overwriting(out, results_path, "results store")
    if pdf and (fmt != "latex" or out is None):
        raise click.UsageError("--pdf needs --format latex and -o FILE.tex")
    names = None if "all" in tables else list(tables)
    for name in names or []:
        if name not in table_names():
            raise click.BadParameter(f"unknown table {name!r}; choose from all, {', '.join(table_names())}",
                                     param_hint="--table")
    store = _existing_store(results_path)
    run_ids = [r.strip() for r in runs.split(",") if r.strip()] if runs else None
    options = TableOptions(ci=ci, seeds=seeds, reference=None if reference.lower() == "none" else reference)
    built = build_tables(store, names, run_ids, options)
    frame = tidy_frame(store, run_ids, seeds)
    if compare_with == "paper":
        from mlebench.report.published import load_published
        from mlebench.report.tables import paper_comparison

        built += paper_comparison(frame, load_published())
    if not built:
        raise click.ClickException(f"nothing to report: {results_path} has no finished runs"
                                   + (" among the given --runs" if run_ids else "")
                                   + (f" for table(s) {', '.join(names)}" if names else ""))
    title = f"mlebench report — {results_path.name}"
    if fmt == "latex":
        from mlebench.report.latex import latex_document

        text = latex_document(built, title=title)
    elif fmt == "markdown":
        from mlebench.report.markdown import table_to_markdown

        text = "\n\n".join(table_to_markdown(t) for t in built) + "\n"
    elif fmt == "csv":
        from mlebench.report.tables import tables_to_csv

        text = tables_to_csv(built)
    else:
        from mlebench.report.html import render_html
        from mlebench.report.plots import report_figures

        text = render_html(built, report_figures(store, frame), title=title,
                           subtitle=f"{len(frame.drop_duplicates('run_id'))} runs from {results_path}")
    if out is None:
        click.echo(text, nl=False)
        return
    from mlebench.fsutil import atomic_path

    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    click.echo(f"wrote {out} ({len(built)} tables)")
    if pdf:
        from mlebench.report.latex import compile_pdf

        pdf_path = compile_pdf(text, out.with_suffix(".pdf"))
        click.echo(f"wrote {pdf_path}")


@main.command("compare")
@click.argument("run_a")
@click.argument("run_b")
@RESULTS_OPTION
@click.option("--resamples", type=click.IntRange(100), default=1000, show_default=True,
              help="Bootstrap resamples of the images.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
@click.option("--json", "as_json", is_flag=True)
def compare_cmd(run_a: str, run_b: str, results_path: Path, resamples: int, seed: int, as_json: bool) -> None:
    """Is RUN_B better than RUN_A? mIoU differences (b - a) with paired-bootstrap 95% intervals
    and p-values, for every case the two runs share."""
    from mlebench.report.compare import compare_runs
    from mlebench.report.console import format_comparison

    frame = compare_runs(_existing_store(results_path), run_a, run_b, resamples=resamples, seed=seed)
    if as_json:
        import json

        from mlebench.report.export import _json_value

        records = [{k: _json_value(v) for k, v in row.items()} for row in frame.to_dict("records")]
        click.echo(json.dumps({"run_a": run_a, "run_b": run_b, "resamples": resamples, "seed": seed,
                               "cases": records}, indent=1, allow_nan=False))
        return
    click.echo(format_comparison(frame, run_a, run_b, resamples))


@bench.command("feature-cache")
@click.option("--method", "method_name", type=_method_choice(), default=_default_method(), show_default=True)
@click.option("--protocol", type=_protocol_choice(), default="missing-modality", show_default=True)
@click.option("--preset", type=click.Choice(["tiny", "paper"]), default="tiny", show_default=True)
@DATASET_OPTION
@click.option("--data-root", type=click.Path(path_type=Path, file_okay=False), default=None)
@click.option("--samples", type=click.IntRange(1), default=16, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=4, show_default=True)
@click.option("--eval-size", type=click.IntRange(32), default=None,
              help="Short side to evaluate at (default: what `mlebench run` uses for the preset).")
@click.option("--amp", is_flag=True, help="Evaluate under bf16 autocast.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def bench_feature_cache_cmd(
    method_name: str, protocol: str, preset: str, dataset: str, data_root: Path | None, samples: int,
    batch_size: int, eval_size: int | None, amp: bool, device: str, as_json: bool,
) -> None:
    """Evaluation as `mlebench run` does it: the full protocol, and PROTOCOL with and without
    the per-modality feature cache, side by side, with encoder passes and where the time goes."""
    import json

    from mlebench.bench import bench_feature_cache

    r = bench_feature_cache(method_name, protocol, preset, dataset, data_root, samples=samples,
                            batch_size=batch_size, device=device, eval_size=eval_size, amp=amp)
    if as_json:
        click.echo(json.dumps(r, indent=2))
        return
    size = f"{r['eval_size']} px short side" if r["eval_size"] else "stored size"
    click.echo(f"{method_name} ({preset}) on {r['samples']} {dataset} samples at {size}, batch {batch_size}, "
               f"{device}{', bf16' if amp else ''}")
    click.echo(f"  {'':34} {'s/sample':>9} {'enc.passes':>10} {'encode':>8} {'decode':>8} {'other':>8}")
    labels = {"full": "full protocol (1 case)", "cached": f"{protocol} ({r['cases']}), feature cache",
              "uncached": f"{protocol} ({r['cases']}), no cache"}
    for key, label in labels.items():
        run = r["runs"][key]
        passes = run["encoder_passes_per_sample"] or run["forward_passes_per_sample"]
        click.echo(f"  {label:<34} {run['per_sample_s']:9.3f} {passes:10.0f} {run['encode_s']:7.2f}s "
                   f"{run['decode_s']:7.2f}s {run['other_s']:7.2f}s")
    click.echo(f"  ratio no cache / feature cache     : {r['ratio']:6.2f}x")
    click.echo(f"  {protocol} / full, per sample : {r['cached_vs_full_per_sample']:6.2f}x")
    click.echo(f"  max |mIoU difference|              : {r['miou_max_abs_diff']:.2e}")


@bench.command("decode")
@click.option("--method", "method_name", type=_method_choice(), default=_default_method(), show_default=True)
@click.option("--preset", type=click.Choice(["tiny", "paper"]), default="tiny", show_default=True)
@click.option("--samples", type=click.IntRange(1), default=8, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=4, show_default=True)
@click.option("--repeats", type=click.IntRange(1), default=3, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def bench_decode_cmd(method_name: str, preset: str, samples: int, batch_size: int, repeats: int, as_json: bool) -> None:
    """Decode + prediction with plain and channels-last logit upsampling, against one encode."""
    import json

    from mlebench.bench import bench_decode

    r = bench_decode(method_name, preset, samples=samples, batch_size=batch_size, repeats=repeats)
    if as_json:
        click.echo(json.dumps(r, indent=2))
        return
    click.echo(f"{method_name} ({preset}), {r['samples']} synthetic val samples at {r['image_size'][0]}x"
               f"{r['image_size'][1]}, batch {batch_size}, {len(r['modalities'])} modalities (best of {repeats})")
    click.echo(f"  encode, one modality           : {r['encode_one_modality_s'] * 1e3:8.1f} ms")
    click.echo(f"  decode + argmax, plain upsample: {r['decode_plain_s'] * 1e3:8.1f} ms "
               f"({r['decode_plain_per_encode']:.2f} of an encode)")
    click.echo(f"  decode + argmax, channels-last : {r['decode_s'] * 1e3:8.1f} ms "
               f"({r['decode_per_encode']:.2f} of an encode)")
    click.echo(f"  speed-up                       : {r['speedup']:8.2f}x")
    click.echo(f"  predictions identical          : {'yes' if r['predictions_identical'] else 'NO'}")


@bench.command("loader")
@click.option("--method", "method_name", type=_method_choice(), default=_default_method(), show_default=True)
@click.option("--preset", type=click.Choice(["tiny", "paper"]), default="tiny", show_default=True)
@click.option("--samples", type=click.IntRange(1), default=32, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=4, show_default=True)
@click.option("--workers", default="0,2", show_default=True, help="Worker counts to measure (comma-separated).")
@click.option("--json", "as_json", is_flag=True)
def bench_loader_cmd(method_name: str, preset: str, samples: int, batch_size: int, workers: str, as_json: bool) -> None:
    """Data loading (training crops, evaluation samples) against the model, in samples per second."""
    import json

    from mlebench.bench import bench_loader

    try:
        counts = tuple(int(w) for w in workers.split(","))
    except ValueError:
        raise click.BadParameter(f"{workers!r} is not a comma-separated list of integers", param_hint="--workers") from None
    if any(c < 0 for c in counts):
        raise click.BadParameter(f"{workers!r}: worker counts must be >= 0", param_hint="--workers")
    r = bench_loader(method_name, preset, samples=samples, batch_size=batch_size, workers=counts)
    if as_json:
        click.echo(json.dumps(r, indent=2))
        return
    click.echo(f"{method_name} ({preset}), {samples} synthetic samples, batch {batch_size}, CPU (samples/s)")
    for count, rates in r["loader"].items():
        click.echo(f"  loader, {count} workers : train {rates['train_samples_per_s']:8.1f}   "
                   f"eval {rates['eval_samples_per_s']:8.1f}")
    click.echo(f"  model             : train {r['model_train_samples_per_s']:8.1f}   "
               f"eval {r['model_eval_samples_per_s']:8.1f}")


@bench.command("throughput")
@click.option("--method", "method_name", type=_method_choice(), default=_default_method(), show_default=True)
@click.option("--preset", type=click.Choice(["tiny", "paper"]), default="paper", show_default=True)
@click.option("--device", default="cuda", show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=2, show_default=True)
@click.option("--steps", type=click.IntRange(1), default=5, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def bench_throughput_cmd(method_name: str, preset: str, device: str, batch_size: int, steps: int, as_json: bool) -> None:
    """Images per second and peak GPU memory: training steps, evaluation in fp32 and in bf16.
    Without a CUDA device it says so and exits 0."""
    import json

    from mlebench.bench import bench_throughput

    r = bench_throughput(method_name, preset, device, batch_size, steps)
    if as_json:
        click.echo(json.dumps(r, indent=2))
        return
    if "skipped" in r:
        click.echo(f"bench throughput skipped: {r['skipped']}")
        return
    click.echo(f"{method_name} ({preset}) on {r['device']}, batch {batch_size}, {steps} steps; train crops "
               f"{r['crop_size']}, eval {r['eval_size']}")
    for key, label in (("train", f"train ({'bf16' if r['train_amp'] else 'fp32'})"), ("eval_fp32", "eval fp32"),
                       ("eval_bf16", "eval bf16")):
        peak = f"{r[key]['peak_gib']:.2f} GiB peak" if r[key]["peak_gib"] is not None else "peak n/a (not CUDA)"
        click.echo(f"  {label:<12}: {r[key]['images_per_s']:8.2f} img/s   {peak}")


@main.command("check")
@click.option("--baseline", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="The committed baseline (default: baselines/ci/synthetic.json in the source tree).")
@click.option("--update", is_flag=True, help="Measure every method over --seeds and rewrite the baseline.")
@click.option("--methods", "method_list", default=None, help="Only these methods (comma-separated; default: all).")
@click.option("--seeds", "seed_list", default="0,1,2,3", show_default=True, help="Training seeds for --update.")
def check_cmd(baseline: Path | None, update: bool, method_list: str | None, seed_list: str) -> None:
    """CI regression gate: a short fixed-seed benchmark of every registered method, compared case
    by case with the committed baseline; exit 1 when a case fell by more than its measured noise."""
    from methods import method_names
    from mlebench.gate import (
        DEFAULT_BASELINE, GateSetup, compare_with_baseline, format_gate, make_baseline, measure, read_baseline,
        write_baseline,
    )  # fmt: skip
    from mlebench.results.provenance import git_commit

    path = baseline or DEFAULT_BASELINE
    known = method_names()
    methods = [m.strip() for m in method_list.split(",") if m.strip()] if method_list else known
    unknown = [m for m in methods if m not in known]
    if unknown or not methods:
        raise click.BadParameter(f"unknown method(s) {', '.join(unknown) or '(none given)'}; choose from "
                                 f"{', '.join(known)}", param_hint="--methods")
    start = time.perf_counter()
    if update:
        seeds = _parse_seeds(seed_list)
        old = read_baseline(path) if path.exists() and method_list else None
        fresh = make_baseline(methods, seeds, GateSetup(), git_commit(), echo=click.echo)
        if old is not None:  # only some methods re-measured: keep the others' cases
            fresh["cases"] = [c for c in old["cases"] if c["method"] not in methods] + fresh["cases"]
        write_baseline(path, fresh)
        click.echo(f"wrote {path}: {len(fresh['cases'])} cases, seeds {seeds}, commit {fresh['commit']} "
                   f"({time.perf_counter() - start:.0f} s)")
        return
    data = read_baseline(path)
    setup = GateSetup(**{k: tuple(v) if isinstance(v, list) else v for k, v in data["setup"].items()})
    now = measure(methods, 0, setup, echo=click.echo)
    result = compare_with_baseline(now, data, methods)
    click.echo(format_gate(result))
    click.echo(f"baseline {path} (commit {data.get('commit')}), {time.perf_counter() - start:.0f} s")
    if not result.passed:
        sys.exit(1)


def _add_method_commands() -> None:
    """Commands a method's package brings (e.g. MLE-SAM's ``bench lora``)."""
    from methods.base import method_commands

    groups = {None: main, "bench": bench}
    for group, command in method_commands():
        groups[group].add_command(command)


_add_method_commands()


if __name__ == "__main__":  # pragma: no cover
    main()
