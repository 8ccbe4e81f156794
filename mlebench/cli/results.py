"""``mlebench results list | export | migrate`` and ``mlebench compare``: the results store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mlebench.cli.options import RESULTS_OPTION, Group, existing_store


@click.group(cls=Group)
def results() -> None:
    """Look at and export the results store."""


@results.command("list")
@RESULTS_OPTION
def results_list(results_path: Path) -> None:
    """One line per run: id, method, data set, modalities, protocol, preset, seed, split, status,
    and its headline mIoU with the 95% interval; then mean and std per multi-seed group."""
    from mlebench.report.console import format_run_list

    click.echo(format_run_list(existing_store(results_path)))


@results.command("export")
@RESULTS_OPTION
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option("--per-sample", is_flag=True,
              help="One row per run, case, sample and class with tp, fp, fn (csv only).")
@click.option("-o", "--out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write to a file (atomically) instead of stdout.")
def results_export(results_path: Path, fmt: str, per_sample: bool, out: Path | None) -> None:
    """Every result row of the finished runs with intervals and seed statistics, as CSV or JSON."""
    import io

    from mlebench.outputs import guard_output
    from mlebench.report.export import export_per_sample, export_results, write_atomically

    if out is not None:
        guard_output(out, "-o/--out", "export", inputs=[(results_path, "results store")])
    store = existing_store(results_path)
    if per_sample and fmt != "csv":
        raise click.BadParameter("--per-sample writes csv only", param_hint="--format")

    def write(fh: Any) -> None:
        if per_sample:
            export_per_sample(store, fmt, fh)
        else:
            export_results(store, fmt, fh)

    if out is None:
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


@click.command("compare")
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
    from mlebench.report.export import comparison_json

    frame = compare_runs(existing_store(results_path), run_a, run_b, resamples=resamples, seed=seed)
    click.echo(comparison_json(frame, run_a, run_b, resamples, seed) if as_json
               else format_comparison(frame, run_a, run_b, resamples))
