"""``mlebench bench ...``: speed benchmarks, both variants measured side by side in one run."""

from __future__ import annotations

import json
from pathlib import Path

import click

from mlebench.cli.options import (
    DATASET_OPTION, DEVICE_OPTION, JSON_OPTION, Group, method_option, preset_option, protocol_choice,
)  # fmt: skip

SMALLEST = "the method's smallest preset, tiny for the built-in methods"
FULL_SIZE = "the method's full-size preset, paper for the built-in methods"


@click.group(cls=Group)
def bench() -> None:
    """Speed benchmarks: both variants measured side by side in one run."""


@bench.command("bootstrap")
@click.option("--cases", type=click.IntRange(1), default=15, show_default=True)
@click.option("--samples", type=click.IntRange(2), default=500, show_default=True)
@click.option("--classes", type=click.IntRange(1), default=25, show_default=True)
@click.option("--resamples", type=click.IntRange(10), default=1000, show_default=True)
@JSON_OPTION
def bench_bootstrap_cmd(cases: int, samples: int, classes: int, resamples: int, as_json: bool) -> None:
    """Bootstrap intervals of a whole protocol: vectorised vs a loop over resamples."""
    from mlebench.bench.bootstrap import bench_bootstrap, format_bootstrap

    result = bench_bootstrap(cases, samples, classes, resamples)
    click.echo(json.dumps(result, indent=2) if as_json else format_bootstrap(result))


@bench.command("feature-cache")
@method_option()
@click.option("--protocol", type=protocol_choice(), default="missing-modality", show_default=True)
@preset_option(SMALLEST)
@DATASET_OPTION
@click.option("--data-root", type=click.Path(path_type=Path, file_okay=False), default=None)
@click.option("--samples", type=click.IntRange(1), default=16, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=4, show_default=True)
@click.option("--eval-size", type=click.IntRange(32), default=None,
              help="Short side to evaluate at (default: what `mlebench run` uses for the preset).")
@click.option("--amp", is_flag=True, help="Evaluate under bf16 autocast.")
@DEVICE_OPTION
@JSON_OPTION
def bench_feature_cache_cmd(
    method_name: str, protocol: str, preset: str | None, dataset: str, data_root: Path | None, samples: int,
    batch_size: int, eval_size: int | None, amp: bool, device: str, as_json: bool,
) -> None:
    """Evaluation as `mlebench run` does it: the full protocol, and PROTOCOL with and without
    the per-modality feature cache, side by side, with encoder passes and where the time goes."""
    from mlebench.bench.evaluation import bench_feature_cache, format_feature_cache

    result = bench_feature_cache(method_name, protocol, preset, dataset, data_root, samples=samples,
                                 batch_size=batch_size, device=device, eval_size=eval_size, amp=amp)
    click.echo(json.dumps(result, indent=2) if as_json else format_feature_cache(result))


@bench.command("decode")
@method_option()
@preset_option(SMALLEST)
@click.option("--samples", type=click.IntRange(1), default=8, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=4, show_default=True)
@click.option("--repeats", type=click.IntRange(1), default=3, show_default=True)
@JSON_OPTION
def bench_decode_cmd(method_name: str, preset: str | None, samples: int, batch_size: int, repeats: int,
                     as_json: bool) -> None:
    """Decode + prediction with plain and channels-last logit upsampling, against one encode."""
    from mlebench.bench.evaluation import bench_decode, format_decode

    result = bench_decode(method_name, preset, samples=samples, batch_size=batch_size, repeats=repeats)
    click.echo(json.dumps(result, indent=2) if as_json else format_decode(result, repeats))


@bench.command("loader")
@method_option()
@preset_option(SMALLEST)
@click.option("--samples", type=click.IntRange(1), default=32, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=4, show_default=True)
@click.option("--workers", default="0,2", show_default=True, help="Worker counts to measure (comma-separated).")
@JSON_OPTION
def bench_loader_cmd(method_name: str, preset: str | None, samples: int, batch_size: int, workers: str,
                     as_json: bool) -> None:
    """Data loading (training crops, evaluation samples) against the model, in samples per second."""
    from mlebench.bench.evaluation import bench_loader, format_loader

    try:
        counts = tuple(int(w) for w in workers.split(","))
    except ValueError:
        raise click.BadParameter(f"{workers!r} is not a comma-separated list of integers", param_hint="--workers") from None
    if any(c < 0 for c in counts):
        raise click.BadParameter(f"{workers!r}: worker counts must be >= 0", param_hint="--workers")
    result = bench_loader(method_name, preset, samples=samples, batch_size=batch_size, workers=counts)
    click.echo(json.dumps(result, indent=2) if as_json else format_loader(result))


@bench.command("throughput")
@method_option()
@preset_option(FULL_SIZE)
@click.option("--device", default="cuda", show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=2, show_default=True)
@click.option("--steps", type=click.IntRange(1), default=5, show_default=True)
@JSON_OPTION
def bench_throughput_cmd(method_name: str, preset: str | None, device: str, batch_size: int, steps: int,
                         as_json: bool) -> None:
    """Images per second and peak GPU memory: training steps, evaluation in fp32 and in bf16.
    Without a CUDA device it says so and exits 0."""
    from mlebench.bench.throughput import bench_throughput, format_throughput

    result = bench_throughput(method_name, preset, device, batch_size, steps)
    click.echo(json.dumps(result, indent=2) if as_json else format_throughput(result))


@bench.command("coverage")
@click.option("--repetitions", type=click.IntRange(10), default=2000, show_default=True)
@click.option("--resamples", type=click.IntRange(100), default=1000, show_default=True)
@click.option("--scenes", type=click.IntRange(2), default=40, show_default=True)
@click.option("--frames", type=click.IntRange(1), default=5, show_default=True, help="Frames per scene.")
@click.option("--seed", type=int, default=0, show_default=True)
@JSON_OPTION
def bench_coverage_cmd(repetitions: int, resamples: int, scenes: int, frames: int, seed: int, as_json: bool) -> None:
    """Coverage of 95% intervals on simulated counts with a scene effect: scene vs image bootstrap."""
    from mlebench.bench.coverage import CoverageModel, format_coverage, simulate_coverage

    result = simulate_coverage(repetitions, resamples, seed=seed, model=CoverageModel(scenes=scenes, frames=frames))
    click.echo(json.dumps(result, indent=2) if as_json else format_coverage(result))
