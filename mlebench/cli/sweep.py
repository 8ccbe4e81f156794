"""``mlebench sweep GRID.yaml`` (submit what is not done) and ``mlebench sweep status``: a grid of
``run`` (or ``eval``) jobs on Slurm or local processes, decided by the results store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import click

from mlebench.cli.options import GRACE_OPTION, STORE_HELP, Group, StoreParam, apply, parse_grace, registry_loaded


class SweepGroup(Group):
    """``mlebench sweep [GRID] [options]`` is ``mlebench sweep submit ...``."""

    default_command = "submit"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


GRID_OPTIONS = [
    click.argument("grid_file", required=False, type=click.Path(path_type=Path, dir_okay=False, exists=True)),
    click.option("--grid", "grid_axes", multiple=True, metavar="KEY=V1,V2",
                 help="Sweep a `run` option over these values (repeatable; train_modalities=all-subsets)."),
    click.option("--set", "grid_fixed", multiple=True, metavar="KEY=VALUE",
                 help="Give every cell this `run` option (repeatable)."),
    click.option("--results", "results_target", type=StoreParam(), default=None,
                 help=STORE_HELP + " Default: the grid file's results:, else results.sqlite."),
    click.option("--folder", type=click.Path(path_type=Path, file_okay=False), default=None,
                 help="The sweep's folder: logs, per-cell times, submitit's files (default sweeps/<grid name>)."),
    GRACE_OPTION,
]


@click.group("sweep", cls=SweepGroup)
def sweep() -> None:
    """Run a grid of jobs (methods x data sets x modality sets x seeds x ...) on Slurm or local
    processes; re-running the same sweep submits only the cells without a finished run."""


def _stages(grid_file: Path | None, grid_axes: tuple[str, ...], grid_fixed: tuple[str, ...],
            echo: Callable[[str], None]) -> list[tuple[Any, list[Any]]]:
    """Each stage's grid and cells (one stage unless the file holds several)."""
    from mlebench.cli.jobs import eval_cmd, run, spec_from_options
    from mlebench.errors import ConfigError
    from mlebench.sweep.grid import expand, grid_from_options, identify, read_grids

    if grid_file is None and not grid_axes and not grid_fixed:
        raise click.UsageError("give a grid file or --grid/--set options")
    grids = read_grids(grid_file) if grid_file is not None else [None]
    if grid_axes or grid_fixed or grid_file is None:
        grids = [grid_from_options(grid_axes, grid_fixed, g) for g in grids]
    registry_loaded()
    cache: dict[tuple, dict[str, Any]] = {}
    seen: dict[str, Any] = {}
    stages = []
    for grid in grids:
        command = {"run": run, "eval": eval_cmd}[grid.job]
        cells = [identify(command, spec_from_options, grid.job, options, cache) for options in expand(grid)]
        writes: dict[str, Any] = {}
        for cell in cells:
            if cell.cell_id in seen:
                raise ConfigError(f"cells {seen[cell.cell_id].label!r} and {cell.label!r} are the same run; "
                                  f"sweep the seed or another option that makes them differ")
            seen[cell.cell_id] = cell
            target = cell.options.get("save_checkpoint")
            if target is not None and str(target) in writes:
                raise ConfigError(f"cells {writes[str(target)].label!r} and {cell.label!r} both write {target}; "
                                  f"name each cell's file, e.g. save_checkpoint: runs/{{method}}-s{{seed}}.pt")
            writes[str(target)] = cell
        stages.append((grid, cells))
    echo(f"{sum(len(c) for _, c in stages)} cell(s) in grid {stages[0][0].name}"
         + (f" ({len(stages)} stages)" if len(stages) > 1 else ""))
    return stages


def _store(target: Path | str, readonly: bool) -> Any:
    from mlebench.results import ResultsStore

    if readonly and isinstance(target, Path) and not target.exists():
        return None  # nothing run yet
    return ResultsStore(target, readonly=readonly)


@sweep.command("submit")
@apply(GRID_OPTIONS)
@click.option("--executor", type=click.Choice(["auto", "slurm", "local"]), default="auto", show_default=True,
              help="auto: Slurm where sbatch exists, else processes on this machine.")
@click.option("--max-parallel", type=click.IntRange(1), default=None,
              help="Local executor: cells at once (default: the grid file's local.max_parallel, else 1).")
@click.option("--partition", default=None, help="Slurm partition.")
@click.option("--gpus-per-node", type=click.IntRange(0), default=None,
              help="GPUs per cell (more than 1: the cell runs under torchrun).")
@click.option("--cpus-per-task", type=click.IntRange(1), default=None)
@click.option("--mem-gb", type=click.IntRange(1), default=None)
@click.option("--timeout-min", type=click.IntRange(1), default=None, help="Slurm time limit per cell.")
@click.option("--array-parallelism", type=click.IntRange(1), default=None, help="Slurm: array tasks at once.")
@click.option("--sbatch", "sbatch_extra", multiple=True, metavar="KEY=VALUE", help="Extra sbatch parameter.")
@click.option("--dry-run", is_flag=True, help="Print every cell and what would be submitted; submit nothing.")
@click.option("--retry-failed", is_flag=True, help="Also submit cells whose run failed with an error.")
@click.option("--wait", is_flag=True, help="Slurm: return when every submitted cell has ended.")
def submit_cmd(grid_file: Path | None, grid_axes: tuple[str, ...], grid_fixed: tuple[str, ...],
               results_target: Path | str | None, folder: Path | None, grace: str, executor: str,
               max_parallel: int | None, partition: str | None, gpus_per_node: int | None,
               cpus_per_task: int | None, mem_gb: int | None, timeout_min: int | None,
               array_parallelism: int | None, sbatch_extra: tuple[str, ...], dry_run: bool, retry_failed: bool,
               wait: bool) -> None:
    """Submit the cells of GRID (a file, and/or --grid/--set) that have no finished run in the store."""
    from mlebench.sweep.submit import resolve_executor

    seconds = parse_grace(grace)
    stages = _stages(grid_file, grid_axes, grid_fixed, click.echo)
    first = stages[0][0]
    target = results_target or first.results or Path("results.sqlite")
    folder = folder or Path("sweeps") / first.name
    kind = resolve_executor(executor)
    if not dry_run:  # where the logs go takes files, before the store is created
        from mlebench.outputs import probe_folder

        probe_folder(folder, "--folder", folder)
    store = _store(target, readonly=dry_run)
    for number, (grid, cells) in enumerate(stages):
        if len(stages) > 1:
            click.echo(f"stage {number + 1} of {len(stages)}: {len(cells)} {grid.job} cell(s)")
        last = number == len(stages) - 1
        # A later stage needs this one's results (an eval of what a run wrote): wait for it.
        _submit_stage(grid, cells, store, target, folder, kind, seconds, max_parallel, dry_run, retry_failed,
                      wait or not last, slurm_options={"partition": partition, "gpus_per_node": gpus_per_node,
                                                       "cpus_per_task": cpus_per_task, "mem_gb": mem_gb,
                                                       "timeout_min": timeout_min,
                                                       "array_parallelism": array_parallelism},
                      sbatch_extra=sbatch_extra)


def _submit_stage(grid: Any, cells: list[Any], store: Any, target: Path | str, folder: Path, kind: str,
                  seconds: float, max_parallel: int | None, dry_run: bool, retry_failed: bool, wait: bool,
                  slurm_options: dict[str, Any], sbatch_extra: tuple[str, ...]) -> None:
    from mlebench.outputs import probe_folder
    from mlebench.sweep.status import TO_SUBMIT, cell_states, format_status
    from mlebench.sweep.submit import slurm_parameters, submit

    slurm = dict(grid.slurm)
    for key, value in slurm_options.items():
        if value is not None:
            slurm[key] = value
    for text in sbatch_extra:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{text!r}: give KEY=VALUE", param_hint="--sbatch")
        slurm.setdefault("additional_parameters", {})[key] = value
    parameters = slurm_parameters(slurm, grid.name)
    parallel = max_parallel or int(grid.local.get("max_parallel", 1))
    states = cell_states(cells, store, folder, seconds)
    wanted = TO_SUBMIT + (("failed",) if retry_failed else ())
    todo = [s for s in states if s.state in wanted]
    if dry_run:
        for s in states:
            verb = "would submit" if s in todo else "skip"
            click.echo(f"{verb:12} {s.cell.cell_id} [{s.state}] mlebench {' '.join(s.cell.argv)}")
        click.echo(f"{len(todo)} of {len(cells)} cell(s) would be submitted to {kind}"
                   + (f" with {json.dumps(parameters, sort_keys=True)}" if kind == "slurm"
                      else f", {parallel} at a time") + f"; results in {target}; logs in {folder}/logs")
        return
    stale = [s.run_id for s in todo if s.state == "stale"]
    if stale:
        for run_id, state in store.reap(seconds, run_ids=stale):
            click.echo(f"reaped {run_id}: {state}")
    if not todo:
        failed = sum(s.state == "failed" for s in states)
        click.echo(f"nothing to submit: {failed} failed (--retry-failed submits them again)" if failed else
                   f"nothing to submit: every cell is finished or running ({len(cells)} cell(s)); "
                   f"`mlebench sweep status` shows them")
        return
    probe_folder(folder, "--folder", folder)
    # Every cell writes to the one store, opened (created or checked) above, before submitting.
    submit([s.cell for s in todo], folder, kind, slurm, parallel, grid.name, echo=click.echo, wait=wait,
           extra_argv=("--results", str(target)))
    if kind == "local" or wait:
        click.echo(format_status(cell_states(cells, _store(target, readonly=True), folder, seconds)))


@sweep.command("status")
@apply(GRID_OPTIONS)
@click.option("--json", "as_json", is_flag=True, help="Print the cells as JSON.")
def status_cmd(grid_file: Path | None, grid_axes: tuple[str, ...], grid_fixed: tuple[str, ...],
               results_target: Path | str | None, folder: Path | None, grace: str, as_json: bool) -> None:
    """Per cell of GRID: its state (finished / running / stale / interrupted / failed / pending),
    its headline mIoU when finished, and the log of each failed cell."""
    from mlebench.sweep.status import cell_states, format_status

    seconds = parse_grace(grace)
    stages = _stages(grid_file, grid_axes, grid_fixed, (lambda _m: None) if as_json else click.echo)
    first = stages[0][0]
    target = results_target or first.results or Path("results.sqlite")
    store = _store(target, readonly=True)
    states = [s for _, cells in stages
              for s in cell_states(cells, store, folder or Path("sweeps") / first.name, seconds)]
    if as_json:
        click.echo(json.dumps([s.as_dict() for s in states], indent=1))
    else:
        click.echo(format_status(states))
