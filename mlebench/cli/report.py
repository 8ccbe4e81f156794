"""``mlebench report``: the paper's tables from the results store, in LaTeX, HTML, Markdown or CSV."""

from __future__ import annotations

from pathlib import Path

import click
from click.core import ParameterSource

from mlebench.cli.options import (
    GRACE_OPTION, RESULTS_OPTION, LazyChoice, RegistryDefault, default_method, existing_store, parse_grace, store_name,
)  # fmt: skip


def _formats() -> tuple[str, ...]:
    from mlebench.report.render import FORMATS

    return FORMATS


@click.command("report")
@RESULTS_OPTION
@click.option("--format", "fmt", type=LazyChoice(_formats), default="markdown", show_default=True)
@click.option("--table", "tables", multiple=True, default=("all",), show_default=True,
              help="Which table(s) (repeatable); 'all' for every table with measurements.")
@click.option("--runs", default=None, help="Comma-separated run ids (default: every finished run).")
@click.option("--ci", is_flag=True, help="Show the 95% bootstrap interval of each single-run cell.")
@click.option("--seeds", is_flag=True, help="Pool multi-seed groups: cells show mean ± std over seeds.")
@click.option("--reference", default=default_method, show_default=True, cls=RegistryDefault,
              help="Method that Δ rows and significance marks compare with ('none': no comparison).")
@click.option("--compare", "compare_with", type=click.Choice(["paper"]), default=None,
              help="Add measured-vs-published tables (baselines/paper).")
@click.option("--pdf", is_flag=True, help="With --format latex and -o: also compile the document to PDF.")
@click.option("-o", "--out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write to a file (atomically) instead of stdout.")
@GRACE_OPTION
@click.pass_context
def report_cmd(ctx: click.Context, results_path: Path | str, fmt: str, tables: tuple[str, ...], runs: str | None,
               ci: bool, seeds: bool, reference: str, compare_with: str | None, pdf: bool, out: Path | None,
               grace: str) -> None:
    """Tables for a paper (LaTeX, Markdown, CSV) or one self-contained HTML page with plots, from
    the results store alone."""
    from mlebench.outputs import guard_output
    from mlebench.report.render import render_report, report_tables, unfinished_note
    from mlebench.report.tables import TableOptions, table_names

    if pdf and (fmt != "latex" or out is None):
        raise click.UsageError("--pdf needs --format latex and -o FILE.tex")
    for target in [out, out.with_suffix(".pdf") if pdf else None]:
        if target is not None:
            guard_output(target, "-o/--out", "report",
                         inputs=[(results_path, "results store")] if isinstance(results_path, Path) else [])
    names = None if "all" in tables else list(tables)
    for name in names or []:
        if name not in table_names():
            raise click.BadParameter(f"unknown table {name!r}; choose from all, {', '.join(table_names())}",
                                     param_hint="--table")
    store = existing_store(results_path)
    run_ids = None
    if runs is not None:
        run_ids = [r.strip() for r in runs.split(",") if r.strip()]
        if not run_ids:
            raise click.BadParameter(f"{runs!r} names no run; give comma-separated run ids (`mlebench results "
                                     "list` shows them) or leave the option out for every finished run",
                                     param_hint="--runs")
        unknown = sorted(set(run_ids) - set(store.runs()["id"]))
        if unknown:
            raise click.BadParameter(f"no run {', '.join(unknown)} in {store.target}", param_hint="--runs")
    if reference.lower() != "none" and ctx.get_parameter_source("reference") is not ParameterSource.DEFAULT:
        methods = sorted(set(store.runs()["method"]))
        if reference not in methods:
            raise click.BadParameter(f"{reference!r}: no run of that method in {store.target} (methods there: "
                                     f"{', '.join(methods) or 'none'}; 'none' for no comparison)",
                                     param_hint="--reference")
    options = TableOptions(ci=ci, seeds=seeds, reference=None if reference.lower() == "none" else reference)
    built = report_tables(store, names, run_ids, options, compare_with_paper=compare_with == "paper")
    if not built:
        raise click.ClickException(f"nothing to report: {store.target} has no finished runs"
                                   + (" among the given --runs" if run_ids else "")
                                   + (f" for table(s) {', '.join(names)}" if names else ""))
    note = unfinished_note(store, parse_grace(grace))
    if note:
        click.echo(f"note: {note}", err=True)
    text = render_report(fmt, built, store, run_ids, seeds, title=f"mlebench report — {store_name(results_path)}",
                         source=str(store.target), note=note)
    if out is None:
        click.echo(text, nl=False)
        return
    from mlebench.fsutil import atomic_path

    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    click.echo(f"wrote {out} ({len(built)} tables)")
    if pdf:
        from mlebench.report.latex import compile_pdf

        click.echo(f"wrote {compile_pdf(text, out.with_suffix('.pdf'))}")
