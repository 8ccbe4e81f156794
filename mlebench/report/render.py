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
from mlebench.results.liveness import DEFAULT_GRACE_S
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


def unfinished_note(store: ResultsStore, grace: float = DEFAULT_GRACE_S) -> str | None:
    """What the tables leave out, as it stands now: "not in these tables: 2 runs running, 1
    stale (no heartbeat since ...), 3 failed" (None when every run finished)."""
    runs = store.runs(grace=grace)
    states = runs.loc[runs["status"] != "finished", "state"]
    if states.empty:
        return None
    counts = states.value_counts(sort=False)
    parts = [f"{n} run{'s' if n > 1 else ''} {state}" for state, n in sorted(counts.items())]
    return "not in these tables: " + "; ".join(parts)


def render_report(fmt: str, tables: list[Table], store: ResultsStore, run_ids: Sequence[str] | None,
                  seeds: bool, title: str, source: str, note: str | None = None) -> str:
    """``tables`` as one document in ``fmt``; the HTML page adds the store's figures and plots.
    ``note`` (:func:`unfinished_note`) is said under the tables (LaTeX: as a comment)."""
    if fmt == "latex":
        from mlebench.report.latex import latex_document

        return latex_document(tables, title=title) + (f"% {note}\n" if note else "")
    if fmt == "markdown":
        from mlebench.report.markdown import table_to_markdown

        return "\n\n".join(table_to_markdown(t) for t in tables) + "\n" + (f"\n_{note}_\n" if note else "")
    if fmt == "csv":
        from mlebench.report.tables import tables_to_csv

        return tables_to_csv(tables)
    if fmt == "html":
        from mlebench.report.html import render_html
        from mlebench.report.plots import report_figures

        frame = tidy_frame(store, run_ids, seeds)
        return render_html(tables, report_figures(store, frame), title=title,
                           subtitle=f"{len(frame.drop_duplicates('run_id'))} runs from {source}"
                                    + (f"; {note}" if note else ""))
    raise ConfigError(f"unknown report format {fmt!r}; choose from {', '.join(FORMATS)}")
