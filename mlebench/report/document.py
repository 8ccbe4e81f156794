"""What a report is made of: tables (numbers plus their display text) and figures (PNG bytes).

:mod:`mlebench.report.tables` builds these from the results store; the renderers
(:mod:`.latex`, :mod:`.html`, :mod:`.markdown`) only format them, so every format shows the same
numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd


@dataclass
class Table:
    """One table of a report.

    ``values`` holds the numbers (mIoU in percent, parameters in millions; NaN where nothing was
    measured), ``cells`` the same shape as plain Unicode display text ("62.10", "62.10 ± 0.40",
    "62.10 ↑", "Gaussian σ=50 †"; "" where nothing was measured) that each renderer escapes and
    maps to its own markup, ``best`` a boolean mask of the cells to set in bold. Row and column
    labels are the frames' index and columns (a MultiIndex for grouped headers). ``name`` is
    identifier-like (it becomes the LaTeX label and the HTML anchor).
    """

    name: str
    caption: str
    values: pd.DataFrame
    cells: pd.DataFrame
    best: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    dataset: str = ""

    @property
    def label(self) -> str:
        return "tab:" + self.name

    def __post_init__(self) -> None:
        for name, frame in (("cells", self.cells), ("best", self.best)):
            if frame.shape != self.values.shape:
                raise ValueError(f"table {self.name}: {name} has shape {frame.shape}, values {self.values.shape}")


@dataclass
class Figure:
    """A PNG figure with a title and a caption."""

    name: str
    title: str
    png: bytes
    caption: str = ""
