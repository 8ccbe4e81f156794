"""``mlebench results list | export | migrate | reap`` and ``mlebench compare``: the results store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mlebench.cli.options import GRACE_OPTION, RESULTS_OPTION, Group, existing_store, parse_grace


@click.group(cls=Group)
def results() -> None:
    """Look at and export the results store."""


@results.command("list")
@RESULTS_OPTION
@GRACE_OPTION
def results_list(results_path: Path | str, grace: str) -> None:
    """One line per run: id, method, data set, modalities, protocol, preset, seed, split, status
    as it stands now (running, finished, failed, stale), and its headline mIoU with the 95%
    interval; then mean and std per multi-seed group."""
    from mlebench.report.console import format_run_list

    seconds = parse_grace(grace)
    click.echo(format_run_list(existing_store(results_path), grace=seconds))


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
        guard_output(out, "-o/--out", "export",
                     inputs=[(results_path, "results store")] if isinstance(results_path, Path) else [])
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
def results_migrate(results_path: Path | str) -> None:
    """Upgrade a results store written by an older mlebench, in one transaction (a file's
    original is kept beside it; for a database, take a pg_dump first to keep a copy)."""
    from mlebench.results import SCHEMA_VERSION, migrate, parse_target

    if isinstance(results_path, Path) and not results_path.exists():
        raise click.BadParameter(f"{results_path} does not exist", param_hint="--results")
    shown = parse_target(results_path)
    old, backup = migrate(results_path)
    if old == SCHEMA_VERSION:
        click.echo(f"{shown} is already at schema version {SCHEMA_VERSION}")
    else:
        kept = f"; original kept at {backup}" if backup is not None else ""
        click.echo(f"migrated {shown} from schema version {old} to {SCHEMA_VERSION}{kept}")


@results.command("reap")
@RESULTS_OPTION
@GRACE_OPTION
@click.option("--dry-run", is_flag=True, help="Only list the runs that would be marked failed.")
def results_reap(results_path: Path | str, grace: str, dry_run: bool) -> None:
    """Mark failed every running run that is stale: its process gone (this host), or no heartbeat
    for longer than --grace (any host). --grace 0 reaps every running run but those whose
    process this host sees alive."""
    from mlebench.results import ResultsStore

    seconds = parse_grace(grace)
    if isinstance(results_path, Path) and not results_path.exists():
        raise click.BadParameter(f"{results_path} does not exist", param_hint="--results")
    if dry_run:
        runs = existing_store(results_path).runs(grace=seconds)
        stale = runs[runs["status"].eq("running") & runs["state"].str.startswith("stale")]
        for run in stale.itertuples():
            click.echo(f"would reap {run.id} {run.method} seed {run.seed}: {run.state}")
        click.echo(f"{len(stale)} stale run(s) of {int(runs['status'].eq('running').sum())} running")
        return
    store = ResultsStore(results_path)
    reaped = store.reap(grace=seconds)
    for run_id, state in reaped:
        click.echo(f"reaped {run_id}: {state}")
    click.echo(f"marked {len(reaped)} stale run(s) failed in {store.target}")


@click.command("compare")
@click.argument("run_a")
@click.argument("run_b")
@RESULTS_OPTION
@click.option("--resamples", type=click.IntRange(100), default=1000, show_default=True,
              help="Bootstrap resamples.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
@click.option("--unit", type=click.Choice(["scene", "image"]), default="scene", show_default=True,
              help="What the bootstrap resamples: whole scenes where the data set records them (images where "
                   "it does not), or always single images.")
@click.option("--json", "as_json", is_flag=True)
def compare_cmd(run_a: str, run_b: str, results_path: Path, resamples: int, seed: int, unit: str,
                as_json: bool) -> None:
    """Is RUN_B better than RUN_A? mIoU differences (b - a) with paired-bootstrap 95% intervals
    and p-values (which agree: p < 0.05 exactly when the interval excludes 0), for every case the
    two runs share."""
    from mlebench.report.compare import compare_runs
    from mlebench.report.console import format_comparison
    from mlebench.report.export import comparison_json

    frame = compare_runs(existing_store(results_path), run_a, run_b, resamples=resamples, seed=seed, unit=unit)
    click.echo(comparison_json(frame, run_a, run_b, resamples, seed) if as_json
               else format_comparison(frame, run_a, run_b, resamples))
