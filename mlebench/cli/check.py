"""``mlebench check``: the CI regression gate on mIoU."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from mlebench.cli.options import parse_methods, parse_seeds

#: Training seeds of a new baseline; the check's default seed (0) is not among them, so the
#: checked run is a new draw, not one of the runs the mean and spread came from.
DEFAULT_SEEDS_TEXT = "1,2,3,4,5,6,7,8"


@click.command("check")
@click.option("--baseline", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="The committed baseline (default: baselines/ci/synthetic.json in the source tree).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Training seed of the checked run; must not be one of the baseline's seeds.")
@click.option("--update", is_flag=True, help="Measure the methods over --seeds and rewrite their part of the baseline.")
@click.option("--methods", "method_list", default=None, help="Only these methods (comma-separated; default: all).")
@click.option("--seeds", "seed_list", default=DEFAULT_SEEDS_TEXT, show_default=True,
              help="Training seeds for --update (at least 2).")
@click.option("--drop", "drop_list", default=None,
              help="Remove these methods (comma-separated) from the baseline, e.g. one no longer registered.")
def check_cmd(baseline: Path | None, seed: int, update: bool, method_list: str | None, seed_list: str,
              drop_list: str | None) -> None:
    """CI regression gate: a short benchmark of every registered method with a new training seed,
    compared with the committed baseline of several seeds; exit 1 when a gated figure fell by more
    than seed-to-seed noise allows (family-wise false-alarm rate 5%), a case is gone, or a method
    has no baseline."""
    from mlebench import gate
    from mlebench.registry import method_names
    from mlebench.results.provenance import git_commit

    path = baseline or gate.DEFAULT_BASELINE
    start = time.perf_counter()
    if drop_list is not None:
        from mlebench.outputs import guard_output

        if update:
            raise click.UsageError("--drop and --update are separate steps; give one")
        names = [m.strip() for m in drop_list.split(",") if m.strip()]
        kept = gate.drop_methods(gate.read_baseline(path), names)
        guard_output(path, "--baseline", "baseline")
        gate.write_baseline(path, kept)
        click.echo(f"wrote {path}: dropped {', '.join(names)}; {len(kept.methods)} method(s) remain")
        return
    methods = parse_methods(method_list)
    if update:
        from mlebench.outputs import guard_output

        seeds = parse_seeds(seed_list)
        guard_output(path, "--baseline", "baseline")
        fresh = gate.update_baseline(path, methods, seeds, git_commit(), keep_others=method_list is not None,
                                     echo=click.echo)
        click.echo(f"wrote {path}: {len(fresh.cases)} cases of {len(fresh.methods)} method(s); {', '.join(methods)} "
                   f"measured with seeds {seeds} ({time.perf_counter() - start:.0f} s)")
        return
    data = gate.read_baseline(path)
    result = gate.run_gate(data, methods, method_names(), seed=seed, echo=click.echo)
    click.echo(gate.format_gate(result))
    commits = sorted({str(data.methods[m].commit) for m in methods if m in data.methods})
    click.echo(f"baseline {path} (commit {', '.join(commits) or '-'}), seed {seed}, "
               f"{time.perf_counter() - start:.0f} s")
    if not result.passed:
        sys.exit(1)
