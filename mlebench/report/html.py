"""HTML rendering of a report: one self-contained page (inline CSS, PNGs as data URIs).

Tables come from ``Styler.to_html`` with HTML escaping of cells and labels; the best cells get
the CSS class ``best`` (bold). The page (``templates/report.html.j2``) loads nothing from the
network, so it can be mailed, archived or opened offline.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pandas.io.formats.style import Styler
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from mlebench.report.document import Figure, Table

BEST_CLASS = "best"

_env = Environment(
    loader=PackageLoader("mlebench.report", "templates"),
    autoescape=select_autoescape(["html", "html.j2"]),  # the default misses ".html.j2"
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass
class _Section:
    anchor: str
    title: str
    notes: list[str]
    html: Markup = Markup("")
    src: str = ""
    caption: str = ""


def _anchor(prefix: str, name: str) -> str:
    return prefix + "-" + re.sub(r"[^A-Za-z0-9_-]+", "-", name)


def table_to_html(table: Table) -> str:
    """The table alone: escaped cells and labels, best cells in class ``best``."""
    cells = table.cells
    if not hasattr(Styler, "format_index_names"):  # pandas < 3 prints index names unescaped
        cells = cells.rename_axis(
            index=[None if n is None else html.escape(str(n)) for n in cells.index.names],
            columns=[None if n is None else html.escape(str(n)) for n in cells.columns.names],
        )
    best = table.best.fillna(False).astype(bool).to_numpy()
    styler = (
        cells.style.format(escape="html", na_rep="")
        .format_index(escape="html", axis=0)
        .format_index(escape="html", axis=1)
        .set_uuid(re.sub(r"[^A-Za-z0-9_]+", "_", table.name))
        .set_td_classes(pd.DataFrame(np.where(best, BEST_CLASS, ""), index=cells.index, columns=cells.columns))
    )
    if hasattr(styler, "format_index_names"):
        styler = styler.format_index_names(escape="html", axis=0).format_index_names(escape="html", axis=1)
    return styler.to_html()


def render_html(tables: list[Table], figures: list[Figure], title: str, subtitle: str = "") -> str:
    """The whole report as one HTML page with a table of contents."""
    table_sections = [
        _Section(_anchor("tab", t.name), t.caption, list(t.notes), html=Markup(table_to_html(t))) for t in tables
    ]
    figure_sections = [
        _Section(
            _anchor("fig", f.name), f.title, [],
            src="data:image/png;base64," + base64.b64encode(f.png).decode("ascii"), caption=f.caption,
        )
        for f in figures
    ]  # fmt: skip
    template = _env.get_template("report.html.j2")
    return template.render(title=title, subtitle=subtitle, tables=table_sections, figures=figure_sections)
