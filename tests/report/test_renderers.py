"""The report renderers (LaTeX, HTML, Markdown) on hand-built tables.

pdflatex and Chromium are real external checks: without them these tests skip, except under CI
(``CI`` set), where a missing tool fails them, so CI always compiles and renders.
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mlebench.errors import MlebenchError
from mlebench.report.document import Figure, Table
from mlebench.report.html import render_html
from mlebench.report.latex import compile_pdf, escape_latex, latex_document, table_to_latex
from mlebench.report.markdown import table_to_markdown


def require_tool(*names: str) -> str:
    """The first of ``names`` on PATH; skip without it, but fail under CI."""
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    reason = f"{' / '.join(names)} not installed"
    if "CI" in os.environ:
        pytest.fail(f"{reason}, and CI must run this test")
    pytest.skip(reason)


def test_require_tool_fails_under_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        require_tool("pdflatex")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run"):
        require_tool("pdflatex")


def grouped_table() -> Table:
    """MultiIndex columns, a NaN and an empty cell, names to escape, every mark."""
    columns = pd.MultiIndex.from_tuples(
        [("mIoU", "RGB"), ("mIoU", "R-D_E&L %"), ("Δ", "vs #1")], names=["metric", "test_mods"]
    )
    index = pd.Index(["MLE-SAM", "CMNeXt_{b2}"], name="method")
    values = pd.DataFrame([[62.1, 55.0, np.nan], [60.0, 57.25, -2.1]], index=index, columns=columns)
    cells = pd.DataFrame(
        [["62.10 ± 0.40", "55.00 ↓", ""], ["60.00†", "57.25 ↑", "–2.10 σ (p<5%)"]], index=index, columns=columns
    )
    best = pd.DataFrame([[True, False, False], [False, True, False]], index=index, columns=columns)
    return Table("main_deliver", "mIoU (%) on DELIVER_night & fog ± 95% CI", values, cells, best,
                 notes=["† trained with 50% dropout", "Δ: difference to #1 < 0"])  # fmt: skip


def wide_table() -> Table:
    columns = [f"subset_{j}" for j in range(12)]
    values = pd.DataFrame(np.arange(36.0).reshape(3, 12), index=["a", "b", "c"], columns=columns)
    cells = values.map(lambda v: f"{v:.2f}")
    return Table("wide", "All 12 subsets", values, cells, values == values.max())


def row_grouped_table() -> Table:
    index = pd.MultiIndex.from_tuples([("fog", "rgb"), ("fog", "rgb+d"), ("night", "rgb")], names=["cond", "mods"])
    values = pd.DataFrame({"mIoU": [40.0, 45.5, 30.25]}, index=index)
    cells = values.map(lambda v: f"{v:.2f}")
    return Table("conditions", "Per condition", values, cells, values == values.max())


TABLES = [grouped_table, wide_table, row_grouped_table]


def png_bytes(size: tuple[int, int] = (40, 20)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 40, 40)).save(buf, "PNG")
    return buf.getvalue()


# --- LaTeX -----------------------------------------------------------------------------------


def test_latex_structure_escaping_bold_and_marks() -> None:
    latex = table_to_latex(grouped_table())
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert latex.count(rule) == 1
    assert r"\caption{mIoU (\%) on DELIVER\_night \& fog $\pm$ 95\% CI}" in latex
    assert r"\label{tab:main_deliver}" in latex
    assert r"\multicolumn{2}{c}{mIoU}" in latex
    assert r"R-D\_E\&L \%" in latex and r"vs \#1" in latex and r"CMNeXt\_\{b2\}" in latex
    assert r"test\_mods" in latex  # index names are escaped too
    # bold exactly the best cells
    assert re.findall(r"\\textbf\{([^}]*)\}", latex) == [r"62.10 $\pm$ 0.40", r"57.25 $\uparrow$"]
    assert r"55.00 $\downarrow$" in latex and r"60.00$^\dagger$" in latex and r"--2.10 $\sigma$ (p\textless{}5\%)" in latex
    assert r"$\Delta$" in latex
    assert latex.isascii(), "every Unicode mark is mapped"
    notes = latex.index(r"\footnotesize $^\dagger$ trained with 50\% dropout")
    assert latex.index(r"\end{tabular}") < notes < latex.index(r"\end{table}")
    assert r"\footnotesize $\Delta$: difference to \#1 \textless{} 0" in latex
    assert r"\resizebox" not in latex


def test_escape_latex_matches_styler() -> None:
    """Caption and notes are escaped like the cells (our escaper vs pandas')."""
    text = r"a\b_c&d%e$f#g{h}i~j^k"
    cells = pd.DataFrame([[text]])
    table = Table("x", "", cells, cells, cells == "")
    assert f"{escape_latex(text)} \\\\" in table_to_latex(table)


def test_latex_wide_table_scaled() -> None:
    latex = table_to_latex(wide_table())
    assert "\\resizebox{\\textwidth}{!}{\\begin{tabular}" in latex
    assert "\\end{tabular}}\n" in latex
    assert "\\usepackage{graphicx}" in latex_document([wide_table()])
    assert "graphicx" not in latex_document([grouped_table()])


@pytest.fixture(scope="module")
def pdfs(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Table, Path]]:
    require_tool("pdflatex")
    out = tmp_path_factory.mktemp("pdf")
    return [
        (table, compile_pdf(latex_document([table], title="Report_1 Δ"), out / f"{table.name}.pdf"))
        for table in (make() for make in TABLES)
    ]


def test_pdflatex_compiles_every_table(pdfs: list[tuple[Table, Path]]) -> None:
    for table, pdf in pdfs:
        assert pdf.read_bytes().startswith(b"%PDF"), table.name
        assert not list(pdf.parent.glob(".*.tmp"))


def test_pdf_text(pdfs: list[tuple[Table, Path]]) -> None:
    pdftotext = require_tool("pdftotext")  # poppler-utils; make system-deps installs it
    for table, pdf in pdfs:
        text = subprocess.run([pdftotext, "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
        assert table.caption.split(" ")[0] in text, table.name
        assert next(c for c in table.cells.to_numpy().ravel() if c).split(" ")[0] in text, table.name


def test_compile_pdf_failure_names_file_and_keeps_target(tmp_path: Path) -> None:
    require_tool("pdflatex")
    target = tmp_path / "report.pdf"
    target.write_bytes(b"old")
    broken = latex_document([grouped_table()]).replace(r"\toprule", r"\notacommand", 1)
    with pytest.raises(MlebenchError, match=r"report\.tex:\d+: Undefined control sequence") as err:
        compile_pdf(broken, target)
    assert str(target) in str(err.value)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.pdf"]


def test_compile_pdf_without_pdflatex(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MlebenchError, match="pdflatex not found; install texlive-latex-base"):
        compile_pdf(latex_document([grouped_table()]), tmp_path / "r.pdf")
    assert not (tmp_path / "r.pdf").exists()


# --- HTML ------------------------------------------------------------------------------------


class PageParser(HTMLParser):
    """Collects headings, bold cells and images of a report page."""

    def __init__(self) -> None:
        super().__init__()
        self.h2: list[str] = []
        self.best: list[str] = []
        self.images: list[str] = []
        self.external: list[str] = []
        self._text: list[str] | None = None
        self._into: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "h2":
            self._text, self._into = [], self.h2
        elif tag == "td" and "best" in (a.get("class") or "").split():
            self._text, self._into = [], self.best
        elif tag == "img":
            self.images.append(a["src"] or "")
        if tag in ("link", "script", "iframe") or (a.get("src") or "").startswith(("http", "//")):
            self.external.append(tag)

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("h2", "td") and self._text is not None:
            self._into.append("".join(self._text))
            self._text = None


def report_page() -> str:
    figures = [Figure("tsne_rgb", "t-SNE <RGB>", png_bytes(), "caption & more")]
    return render_html([make() for make in TABLES], figures, "Report <1>", "DELIVER & MUSES")


def test_html_page_content() -> None:
    page = report_page()
    parser = PageParser()
    parser.feed(page)
    parser.close()
    for i, make in enumerate(TABLES, 1):
        assert f"Table {i}: {make().caption}" in parser.h2
    assert "Figure 1: t-SNE <RGB>" in parser.h2
    wide_best = [f"{v}.00" for v in range(24, 36)]  # the last row of the wide table
    assert parser.best == ["62.10 ± 0.40", "57.25 ↑", *wide_best, "45.50"]
    assert parser.external == []
    (src,) = parser.images
    assert src.startswith("data:image/png;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
    assert image.format == "PNG" and image.size == (40, 20)
    # text is escaped, not interpreted
    assert "<h1>Report &lt;1&gt;</h1>" in page
    assert "R-D_E&amp;L %" in page and "DELIVER &amp; MUSES" in page
    assert 'href="#tab-main_deliver"' in page and 'id="tab-main_deliver"' in page
    assert "† trained with 50% dropout" in page and "–2.10 σ (p&lt;5%)" in page


def test_chromium_renders_page(tmp_path: Path) -> None:
    chromium = require_tool("chromium", "chromium-browser")
    page = tmp_path / "report.html"
    page.write_text(report_page(), encoding="utf-8")
    shot = tmp_path / "shot.png"
    base = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    subprocess.run([*base, f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri()],
                   capture_output=True, timeout=120, check=True)  # fmt: skip
    image = Image.open(shot)
    assert image.format == "PNG" and image.size == (1200, 1600)
    most_common = max(image.convert("RGB").getcolors(maxcolors=1 << 24))[0]
    assert 1 - most_common / (1200 * 1600) > 0.01, "screenshot is blank"
    dom = subprocess.run([*base, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120,
                         check=True).stdout  # fmt: skip
    assert "62.10 ± 0.40" in dom and "CMNeXt_{b2}" in dom


# --- Markdown --------------------------------------------------------------------------------


def test_markdown_exact() -> None:
    columns = pd.MultiIndex.from_tuples([("mIoU", "RGB"), ("mIoU", "R-D_E&L %"), ("Params", "M")])
    index = pd.Index(["MLE-SAM", "a|b", "c"], name="method")
    values = pd.DataFrame([[62.1, np.nan, 1.5], [60.0, 57.25, 1.5], [58.5, 57.2, 12.0]], index=index, columns=columns)
    cells = pd.DataFrame(
        [["62.10 ± 0.40", "", "1.50"], ["60.00*", "57.25 ↑", "1.50"], ["58.50", "57.20", "12.00"]],
        index=index, columns=columns,
    )  # fmt: skip
    best = pd.DataFrame([[True, False, False], [False, True, False], [False, False, False]], index=index, columns=columns)
    table = Table("tiny", "mIoU on DELIVER", values, cells, best, notes=["* p < 0.05"])
    assert table_to_markdown(table) == (
        "### mIoU on DELIVER\n"
        "\n"
        "| method   |       mIoU / RGB |   mIoU / R-D\\_E&L % |   Params / M |\n"
        "|:---------|-----------------:|--------------------:|-------------:|\n"
        "| MLE-SAM  | **62.10 ± 0.40** |                     |         1.50 |\n"
        "| a\\|b     |          60.00\\* |         **57.25 ↑** |         1.50 |\n"
        "| c        |            58.50 |               57.20 |        12.00 |\n"
        "\n"
        "\\* p \\< 0.05\n"
    )
