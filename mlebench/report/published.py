"""The published numbers of the MLE-SAM paper, as committed CSV files (``baselines/paper/``).

One file per paper table (``table1.csv`` ... ``table8.csv``), one row per published number, with
the columns :data:`PUBLISHED_COLUMNS`; ``baselines/README.md`` gives their vocabulary. Rows
whose ``metric`` is ``miou_derived`` are not printed in the paper: they are computed from a
printed value and a printed difference (their ``note`` says how).

:func:`load_published` reads and checks them; it never guesses, so a broken file is an error
that names the file, the line and the column.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pandas as pd

from mlebench.errors import ConfigError

__all__ = ["KEY_COLUMNS", "PAPER_DIR", "PUBLISHED_COLUMNS", "load_published"]

PAPER_DIR = Path(__file__).resolve().parents[2] / "baselines" / "paper"

PUBLISHED_COLUMNS: tuple[str, ...] = (
    "table", "method", "dataset", "split", "train_modalities", "test_modalities",
    "condition", "corruption", "metric", "value", "note",
)  # fmt: skip

# A published number is identified by everything but its value and note.
KEY_COLUMNS: tuple[str, ...] = PUBLISHED_COLUMNS[:9]


def _read_table(path: Path) -> pd.DataFrame:
    """One CSV file, columns checked, ``value`` parsed; a ``source`` column says file:line."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"published numbers: cannot read {path}: {exc}") from exc
    if not rows:
        raise ConfigError(f"published numbers: {path} is empty (expected the header "
                          f"{','.join(PUBLISHED_COLUMNS)})")
    header = [name.strip() for name in rows[0]]
    if header != list(PUBLISHED_COLUMNS):
        missing = [c for c in PUBLISHED_COLUMNS if c not in header]
        unknown = [c for c in header if c not in PUBLISHED_COLUMNS]
        problems = []
        if missing:
            problems.append(f"missing column(s) {', '.join(missing)}")
        if unknown:
            problems.append(f"unknown column(s) {', '.join(repr(c) for c in unknown)}")
        if not problems:
            problems.append(f"columns out of order ({','.join(header)})")
        raise ConfigError(f"published numbers: {path}: {'; '.join(problems)}; expected exactly "
                          f"{','.join(PUBLISHED_COLUMNS)}")
    records = []
    for line, cells in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(PUBLISHED_COLUMNS):
            raise ConfigError(f"published numbers: {path}, line {line}: {len(cells)} fields, "
                              f"expected {len(PUBLISHED_COLUMNS)}")
        record = dict(zip(PUBLISHED_COLUMNS, (cell.strip() for cell in cells)))
        for column in KEY_COLUMNS:
            if not record[column]:
                raise ConfigError(f"published numbers: {path}, line {line}: empty {column!r}")
        try:
            value = float(record["value"])
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise ConfigError(f"published numbers: {path}, line {line}: value "
                              f"{record['value']!r} is not a finite number")
        record["value"] = value
        record["source"] = f"{path.name}:{line}"
        records.append(record)
    return pd.DataFrame.from_records(records, columns=[*PUBLISHED_COLUMNS, "source"])


def load_published(directory: Path = PAPER_DIR) -> pd.DataFrame:
    """All ``table*.csv`` under ``directory`` as one frame (columns :data:`PUBLISHED_COLUMNS`).

    ``value`` is a float; every other column is text. Raises :class:`ConfigError` on a missing
    directory, a bad header, a non-numeric value or two rows with the same key
    (:data:`KEY_COLUMNS`).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"published numbers: no directory {directory}")
    paths = sorted(directory.glob("table*.csv"))
    if not paths:
        raise ConfigError(f"published numbers: no table*.csv files in {directory}")
    frame = pd.concat([_read_table(path) for path in paths], ignore_index=True)
    duplicated = frame[frame.duplicated(list(KEY_COLUMNS), keep=False)]
    if not duplicated.empty:
        groups = duplicated.groupby(list(KEY_COLUMNS), sort=False)["source"].apply(", ".join)
        described = [f"({', '.join(key)}) at {sources}" for key, sources in groups.items()]
        raise ConfigError(f"published numbers: {len(described)} duplicate key(s) in {directory}: "
                          + "; ".join(described))
    return frame.drop(columns="source").reset_index(drop=True)
