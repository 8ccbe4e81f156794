"""Markdown rendering of report tables (GitHub-flavoured pipe tables, via tabulate).

Cells are printed exactly as ``Table.cells`` says (number parsing is off, so "62.10" stays
"62.10"); the best cells are set in ``**bold**``; grouped column headers are joined with " / ".
Markdown's active characters in labels, cells, caption and notes are backslash-escaped.
"""

from __future__ import annotations

import re

import pandas as pd

from mlebench.report.document import Table

_ACTIVE = re.compile(r"([\\`*_|\[\]<>])")


def escape_markdown(text: str) -> str:
    """Backslash-escape the characters that would start emphasis, code, links, HTML or a cell."""
    return _ACTIVE.sub(r"\\\1", text)


def _label(key: object) -> str:
    parts = key if isinstance(key, tuple) else (key,)
    return escape_markdown(" / ".join("" if p is None else str(p) for p in parts))


def table_to_markdown(table: Table) -> str:
    """Caption as a heading, the pipe table, then the notes."""
    best = table.best.fillna(False).astype(bool).to_numpy()
    rows = [
        [f"**{escape_markdown(c)}**" if b and c else escape_markdown(c) for c, b in zip(row, best_row)]
        for row, best_row in zip(table.cells.fillna("").astype(str).to_numpy(), best)
    ]
    names = [n for n in table.cells.index.names if n is not None]
    frame = pd.DataFrame(
        rows,
        index=pd.Index([_label(k) for k in table.cells.index], name=_label(tuple(names)) if names else None),
        columns=[_label(k) for k in table.cells.columns],
    )
    n = table.cells.shape[1]
    body = frame.to_markdown(disable_numparse=True, colalign=["left"] + ["right"] * n)
    parts = [f"### {escape_markdown(table.caption)}", body] + [escape_markdown(note) for note in table.notes]
    return "\n\n".join(parts) + "\n"
