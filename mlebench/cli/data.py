"""``mlebench data synth | check | show``: make, check and look at data sets."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from mlebench.cli.options import (
    DATA_ROOT_OPTION, DATASET_OPTION, MODALITIES_OPTION, Group, announce, parse_modalities, parse_split,
)  # fmt: skip


@click.group(cls=Group)
def data() -> None:
    """Generate, check and look at data sets."""


@data.command("synth")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="The folder to write (a previous synthetic set there is replaced; nothing else is).")
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
    from mlebench.outputs import guard_folder

    guard_folder(out, "--out")
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
@DATA_ROOT_OPTION
@MODALITIES_OPTION
@click.option("--split", "splits", multiple=True, help="Only these splits (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--no-decode", is_flag=True, help="Only check that files exist (fast).")
def data_check(dataset: str, data_root: Path | None, modalities: str | None, splits: tuple[str, ...],
               as_json: bool, no_decode: bool) -> None:
    """Count samples per split and case; list missing and unreadable files.

    Exit status 0 when the layout is sound, 1 otherwise.
    """
    from mlebench.data.check import check_dataset

    for split in splits:
        parse_split(dataset, split)
    report = check_dataset(
        dataset,
        announce(dataset, data_root),
        parse_modalities(dataset, modalities),
        splits or None,
        decode=not no_decode,
        progress=not as_json and sys.stderr.isatty(),
    )
    click.echo(report.to_json() if as_json else report.format_text())
    sys.exit(0 if report.ok else 1)


@data.command("show")
@DATASET_OPTION
@DATA_ROOT_OPTION
@MODALITIES_OPTION
@click.option("--split", default="val", show_default=True)
@click.option("--index", type=click.IntRange(0), default=0, show_default=True)
@click.option("-o", "--out", type=click.Path(path_type=Path, dir_okay=False), required=True)
def data_show(dataset: str, data_root: Path | None, modalities: str | None, split: str, index: int,
              out: Path) -> None:
    """Write one PNG with every modality of a sample side by side and its coloured label."""
    from mlebench.data import dataset_info, load_dataset
    from mlebench.data.show import render_sample
    from mlebench.outputs import guard_output

    parse_split(dataset, split)
    names = parse_modalities(dataset, modalities)
    ds = load_dataset(dataset, announce(dataset, data_root), split, names)
    guard_output(out, "-o/--out", "figure", data_roots=[ds.root])
    if index >= len(ds):
        raise click.BadParameter(
            f"{index} is out of range: {dataset}/{split} has {len(ds)} samples", param_hint="--index"
        )
    path = render_sample(ds[index], dataset_info(dataset), ds.modalities, out)
    click.echo(f"wrote {path} ({ds.refs[index].id})")
