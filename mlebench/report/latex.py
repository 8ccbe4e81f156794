"""LaTeX rendering of report tables, and compilation to PDF.

The text contract: ``Table.cells``, captions, notes and labels are plain Unicode
("62.10 ± 0.40", "62.10*", "62.10 ↑", "†"), never LaTeX. This renderer escapes that text with
pandas' LaTeX escaping (``Styler.format(escape="latex")``) and then maps the few Unicode marks a
report uses to LaTeX with :func:`latex_marks` (one table, :data:`LATEX_MARKS`), so the same
cells print correctly in HTML, Markdown and CSV. A character outside that table and outside
what pdflatex's default ``utf8`` input understands makes pdflatex fail, loudly, rather than
print something else.

The tabular itself is pandas' (``Styler.to_latex``): booktabs rules, grouped column headers
(``\\multicolumn``; pandas draws no ``\\cmidrule`` under them), caption and label. We only add
what Styler cannot: notes under the tabular, ``\\resizebox`` around wide tables, and the marks.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from pandas.io.formats.style import Styler

from mlebench.errors import MlebenchError
from mlebench.fsutil import atomic_path
from mlebench.report.document import Table

# Unicode mark -> LaTeX, applied after escaping. "<", ">" and "|" are here because the default
# OT1 font encoding prints them as "¡", "¿" and "—" in text, and pandas does not escape them.
LATEX_MARKS: dict[str, str] = {
    "±": r"$\pm$",
    "↑": r"$\uparrow$",
    "↓": r"$\downarrow$",
    "†": r"$^\dagger$",
    "Δ": r"$\Delta$",
    "σ": r"$\sigma$",
    "–": "--",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
}

# pandas' LaTeX escaping (pandas.io.formats.style_render._escape_latex), for the text Styler
# does not escape: caption, notes, and index names on pandas < 3.
_LATEX_ESCAPES = str.maketrans({
    "\\": r"\textbackslash ",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde ",
    "^": r"\textasciicircum ",
})  # fmt: skip

# More columns than this (index levels included) and the tabular is scaled to the text width.
WIDE_COLUMNS = 10

PDFLATEX_TIMEOUT_S = 300


def latex_marks(latex: str) -> str:
    """Map the report's Unicode marks (:data:`LATEX_MARKS`) in already escaped LaTeX."""
    for mark, replacement in LATEX_MARKS.items():
        latex = latex.replace(mark, replacement)
    return latex


def escape_latex(text: str) -> str:
    """Escape plain text for LaTeX exactly as ``Styler.format(escape="latex")`` does (no marks)."""
    return text.translate(_LATEX_ESCAPES)


def is_wide(table: Table) -> bool:
    """Whether the table needs scaling to fit a landscape A4 page."""
    return table.cells.shape[1] + table.cells.index.nlevels > WIDE_COLUMNS


def _styler(table: Table) -> Styler:
    cells = table.cells
    if not hasattr(Styler, "format_index_names"):  # pandas < 3 prints index names unescaped
        cells = cells.rename_axis(
            index=[None if n is None else escape_latex(str(n)) for n in cells.index.names],
            columns=[None if n is None else escape_latex(str(n)) for n in cells.columns.names],
        )
    styler = (
        cells.style.format(escape="latex", na_rep="")
        .format_index(escape="latex", axis=0)
        .format_index(escape="latex", axis=1)
    )
    if hasattr(styler, "format_index_names"):
        styler = styler.format_index_names(escape="latex", axis=0).format_index_names(escape="latex", axis=1)
    best = table.best.fillna(False).astype(bool).to_numpy()
    return styler.apply(lambda frame: np.where(best, "textbf:--rwrap;", ""), axis=None)


def table_to_latex(table: Table) -> str:
    """One ``table`` float: booktabs tabular, caption, label, bold best cells, notes below."""
    cells = table.cells
    latex = _styler(table).to_latex(
        column_format="l" * cells.index.nlevels + "r" * cells.shape[1],
        hrules=True,
        caption=escape_latex(table.caption),
        label=table.label,
        position="htbp",
        position_float="centering",
        multicol_align="c",
        multirow_align="naive",  # no \multirow, so no multirow package
        clines="skip-last;data" if cells.index.nlevels > 1 else None,
        environment="table",
    )
    if is_wide(table):
        latex = latex.replace("\\begin{tabular}", "\\resizebox{\\textwidth}{!}{\\begin{tabular}", 1)
        latex = latex.replace("\\end{tabular}\n", "\\end{tabular}}\n", 1)
    if table.notes:
        notes = "\n".join(f"\\par\\footnotesize {escape_latex(note)}" for note in table.notes)
        latex = latex.replace("\\end{table}", f"\\par\\smallskip\n{notes}\n\\end{{table}}", 1)
    return latex_marks(latex)


def latex_document(tables: list[Table], title: str = "") -> str:
    """A standalone document (landscape A4) that pdflatex compiles with base + recommended TeX Live."""
    packages = ["\\usepackage[a4paper,landscape,margin=1.5cm]{geometry}", "\\usepackage{booktabs}"]
    if any(is_wide(t) for t in tables):
        packages.append("\\usepackage{graphicx}")
    body = [f"\\section*{{{latex_marks(escape_latex(title))}}}"] if title else []
    for i, table in enumerate(tables):
        body.append(table_to_latex(table))
        if i % 10 == 9:  # never let more than a few floats queue up ("Too many unprocessed floats")
            body.append("\\clearpage")
    return "\n".join([
        "\\documentclass[10pt]{article}",
        *packages,
        "\\begin{document}",
        *body,
        "\\end{document}",
        "",
    ])  # fmt: skip


def compile_pdf(tex: str, out_pdf: Path) -> Path:
    """Compile ``tex`` with pdflatex in a scratch directory; write ``out_pdf`` atomically.

    One pass: the documents here have no cross references. A failure raises
    :class:`MlebenchError` with the end of pdflatex's log, and ``out_pdf`` is left untouched.
    """
    out_pdf = Path(out_pdf)
    exe = shutil.which("pdflatex")
    if exe is None:
        raise MlebenchError(
            "pdflatex not found; install texlive-latex-base texlive-latex-recommended (Debian/Ubuntu), "
            "texlive-scheme-basic (Fedora) or MacTeX, or use --format html"
        )
    with tempfile.TemporaryDirectory(prefix="mlebench-latex-") as tmp:
        src = Path(tmp) / "report.tex"
        src.write_text(tex, encoding="utf-8")
        cmd = [exe, "-interaction=nonstopmode", "-halt-on-error", "-file-line-error", "-no-shell-escape", src.name]
        try:
            proc = subprocess.run(
                cmd, cwd=tmp, stdin=subprocess.DEVNULL, capture_output=True, timeout=PDFLATEX_TIMEOUT_S
            )
        except subprocess.TimeoutExpired:
            raise MlebenchError(f"pdflatex took more than {PDFLATEX_TIMEOUT_S} s on the LaTeX for {out_pdf}") from None
        pdf, log = src.with_suffix(".pdf"), src.with_suffix(".log")
        if proc.returncode != 0 or not pdf.exists():
            text = log.read_text(errors="replace") if log.exists() else proc.stdout.decode(errors="replace")
            tail = "\n".join(text.splitlines()[-20:])
            raise MlebenchError(
                f"pdflatex failed (exit {proc.returncode}) on the LaTeX for {out_pdf} "
                f"({src.name}); last 20 lines of {log.name}:\n{tail}"
            )
        with atomic_path(out_pdf) as tmp_pdf:
            shutil.copyfile(pdf, tmp_pdf)
    return out_pdf
