"""``mlebench check``: the CI regression gate on mIoU."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from mlebench.cli.options import parse_methods, parse_seeds


@click.command("check")
@click.option("--baseline", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="The committed baseline (default: baselines/ci/synthetic.json in the source tree).")
@click.option("--update", is_flag=True, help="Measure every method over --seeds and rewrite the baseline.")
@click.option("--methods", "method_list", default=None, help="Only these methods (comma-separated; default: all).")
@click.option("--seeds", "seed_list", default="0,1,2,3", show_default=True, help="Training seeds for --update.")
def check_cmd(baseline: Path | None, update: bool, method_list: str | None, seed_list: str) -> None:
    """CI regression gate: a short fixed-seed benchmark of every registered method, compared case
    by case with the committed baseline; exit 1 when a case fell by more than its measured noise."""
    from mlebench.gate import DEFAULT_BASELINE, format_gate, run_gate, update_baseline
    from mlebench.results.provenance import git_commit

    path = baseline or DEFAULT_BASELINE
    methods = parse_methods(method_list)
    start = time.perf_counter()
    if update:
        from mlebench.outputs import guard_output

        seeds = parse_seeds(seed_list)
        guard_output(path, "--baseline", "baseline")
        fresh = update_baseline(path, methods, seeds, git_commit(), keep_others=method_list is not None,
                                echo=click.echo)
        click.echo(f"wrote {path}: {len(fresh['cases'])} cases, seeds {seeds}, commit {fresh['commit']} "
                   f"({time.perf_counter() - start:.0f} s)")
        return
    result, data = run_gate(path, methods, echo=click.echo)
    click.echo(format_gate(result))
    click.echo(f"baseline {path} (commit {data.get('commit')}), {time.perf_counter() - start:.0f} s")
    if not result.passed:
        sys.exit(1)
