"""``mlebench report``: the tables a store's runs make, rendered in one format.

The table builders (:mod:`.tables`) decide what is shown; each format's renderer (:mod:`.latex`,
:mod:`.html`, :mod:`.markdown`, :func:`.tables.tables_to_csv`) only formats it, so every format
shows the same numbers.
"""

from __future__ import annotations

from typing import Sequence

from mlebench.errors import ConfigError
from mlebench.report.document import Table
from mlebench.report.tables import TableOptions, build_tables, tidy_frame
from mlebench.results.store import ResultsStore

FORMATS = ("latex", "html", "markdown", "csv")


def report_tables(store: ResultsStore, names: Sequence[str] | None, run_ids: Sequence[str] | None,
                  options: TableOptions, compare_with_paper: bool = False) -> list[Table]:
    """The tables ``names`` (None: every table with measurements) of the runs ``run_ids`` (None:
    every finished run), with the measured-vs-published tables when asked."""
    built = build_tables(store, names, run_ids, options)
    if compare_with_paper:
        from mlebench.report.published import load_published
        from mlebench.report.tables import paper_comparison

        built += paper_comparison(tidy_frame(store, run_ids, options.seeds), load_published())
    return built


def render_report(fmt: str, tables: list[Table], store: ResultsStore, run_ids: Sequence[str] | None,
                  seeds: bool, title: str, source: str) -> str:
    """``tables`` as one document in ``fmt``; the HTML page adds the store's figures and plots."""
    if fmt == "latex":
        from mlebench.report.latex import latex_document

        return latex_document(tables, title=title)
    if fmt == "markdown":
        from mlebench.report.markdown import table_to_markdown

        return "\n\n".join(table_to_markdown(t) for t in tables) + "\n"
    if fmt == "csv":
        from mlebench.report.tables import tables_to_csv

        return tables_to_csv(tables)
    if fmt == "html":
        from mlebench.report.html import render_html
        from mlebench.report.plots import report_figures

        frame = tidy_frame(store, run_ids, seeds)
        return render_html(tables, report_figures(store, frame), title=title,
                           subtitle=f"{len(frame.drop_duplicates('run_id'))} runs from {source}")
    raise ConfigError(f"unknown report format {fmt!r}; choose from {', '.join(FORMATS)}")
