"""Report tables from the results store: each protocol says how its rows pivot
(:class:`~mlebench.protocols.TableSpec`); this module selects the runs, builds the tidy frame,
pivots it, formats the cells and marks the best and the significant ones. Renderers only format.

Run selection: the finished runs (or ``run_ids``); where several runs measure the same thing
(method, variant, data set, split, training modalities, protocol), the newest counts — or, with
``seeds=True``, the newest multi-seed group, whose cells show mean ± standard deviation over its
seeds. Numbers from different splits are never pooled: each (data set, split) gets its own table.

Cells: mIoU in percent with two decimals; ``ci=True`` appends the 95% bootstrap interval of a
single run ("62.10 [61.20, 63.00]", over scenes where the data set records them, the unit in the
note) and, to a multi-seed cell ("62.10 ± 0.80"), the 95% t interval for the mean over its seeds.
A cell of a non-reference method whose paired-bootstrap difference to the reference method's run
on the same training modalities is significant after Holm's correction over all the cells the
table compares gets ↑ (better) or ↓ (worse) (:mod:`mlebench.report.significance`). Empty cells:
nothing was measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from mlebench.data import dataset_info
from mlebench.errors import ConfigError
from mlebench.protocols import TableSpec, get_protocol, protocol_names
from mlebench.report.document import Table
from mlebench.report.significance import Comparison, SignificanceCache, holm_marks, marks_note
from mlebench.results.store import ResultsStore

_MEASUREMENT = ["method", "variant", "dataset", "split", "train_modalities", "protocol"]


def seed_interval(mean: float, sd: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """The t interval for the mean of ``n`` training seeds: mean ± t((1 + level)/2, n-1) sd / sqrt(n)."""
    half = float(scipy_stats.t.ppf((1 + level) / 2, n - 1)) * sd / math.sqrt(n)
    return mean - half, mean + half


@dataclass(frozen=True)
class TableOptions:
    ci: bool = False
    seeds: bool = False
    reference: str | None = None  # the method Δ rows and marks compare with (the CLI passes its default)
    significance: bool = True


def table_names() -> list[str]:
    """Every table any protocol offers."""
    return [spec.name for name in protocol_names() for spec in get_protocol(name).tables()]


def tidy_frame(store: ResultsStore, run_ids: Iterable[str] | None = None, seeds: bool = False) -> pd.DataFrame:
    """The stored rows of the selected runs with their run's fields, mIoU-type values in percent,
    and ``params_m`` (trainable parameters, millions) and ``n_runs`` per row."""
    runs = store.runs()
    runs = runs[runs["status"] == "finished"]
    if run_ids is not None:
        wanted = list(run_ids)
        unknown = sorted(set(wanted) - set(store.runs()["id"]))
        if unknown:
            raise ConfigError(f"no run {', '.join(unknown)} in results file {store.path}")
        runs = runs[runs["id"].isin(wanted)]
    if runs.empty:
        return pd.DataFrame()
    runs = runs.sort_values("started_at")
    chosen = []
    for _, same in runs.groupby([runs[c].fillna("") for c in _MEASUREMENT], sort=False):
        newest = same.iloc[-1]
        if seeds and newest["group_id"]:
            chosen += list(same.loc[same["group_id"] == newest["group_id"], "id"])
        else:
            chosen.append(newest["id"])
    frame = store.results(run_ids=chosen)
    params = {r.id: r.config.get("parameters", {}).get("trainable", math.nan) / 1e6 for r in runs.itertuples()}
    frame["params_m"] = frame["run_id"].map(params)
    percent = frame["metric"].str.startswith("miou")
    for column in ("value", "ci_low", "ci_high"):
        frame.loc[percent, column] = frame.loc[percent, column] * 100
    return frame[frame["class"] == ""].reset_index(drop=True)


def build_tables(store: ResultsStore, names: Sequence[str] | None = None, run_ids: Iterable[str] | None = None,
                 options: TableOptions = TableOptions()) -> list[Table]:
    """Every requested table (all by default) for every (data set, split) with measurements."""
    known = table_names()
    unknown = [n for n in (names or []) if n not in known]
    if unknown:
        raise ConfigError(f"unknown table {', '.join(unknown)}; known: {', '.join(known)}")
    frame = tidy_frame(store, run_ids, options.seeds)
    tables: list[Table] = []
    if frame.empty:
        return tables
    pairs = SignificanceCache(store) if options.significance and options.reference else None
    for protocol in protocol_names():
        mine = frame[frame["protocol"] == protocol]
        for spec in get_protocol(protocol).tables():
            if names and spec.name not in names:
                continue
            for (dataset, split), part in mine.groupby(["dataset", "split"], sort=True):
                table = _build(spec, part, dataset, split, options, pairs)
                if table is not None:
                    tables.append(table)
    return tables


def _build(spec: TableSpec, frame: pd.DataFrame, dataset: str, split: str, options: TableOptions,
           pairs: SignificanceCache | None) -> Table | None:
    info = dataset_info(dataset)
    prepared = spec.prepare(frame, info) if spec.prepare else frame
    if prepared.empty:
        return None
    index, columns = list(spec.rows), list(spec.columns)
    grouped = prepared.groupby(index + columns, observed=True, sort=True)
    stats = grouped.agg(value=("value", "mean"), spread=("value", lambda v: v.std(ddof=1) if len(v) > 1 else math.nan),
                        n=("value", "count"), ci_low=("ci_low", "first"), ci_high=("ci_high", "first"),
                        ci_unit=("ci_unit", "first"), run_id=("run_id", "first"), metric=("metric", "first"),
                        test_modalities=("test_modalities", "first"), condition=("condition", "first"),
                        corruption=("corruption", "first"), train_modalities=("train_modalities", "first"))
    values = stats["value"].unstack(columns)
    values = values.reindex(sorted(values.index, key=_sort_key(prepared, index)))
    cells = pd.DataFrame("", index=values.index, columns=values.columns)
    compared: list[tuple[Any, Any, Comparison]] = []  # (row key, column key, comparison)
    units: set[str] = set()
    d = spec.decimals
    for key, row in stats.iterrows():
        row_key, col_key = _split_key(key, len(index))
        if row.value != row.value:  # measured, but undefined (e.g. a condition without samples)
            continue
        text = f"{row.value:.{d}f}"
        if row.n > 1:
            text += f" ± {row.spread:.{d}f}"
            if options.ci:
                low, high = seed_interval(row.value, row.spread, int(row.n))
                text += f" [{low:.{d}f}, {high:.{d}f}]"
        elif options.ci and row.ci_low == row.ci_low:
            text += f" [{row.ci_low:.{d}f}, {row.ci_high:.{d}f}]"
            units.add(row.ci_unit or "image")
        if pairs is not None and row.n == 1:
            found = pairs.compare(row, options.reference, frame)
            if found is not None:
                compared.append((row_key, col_key, found))
        cells.loc[row_key, col_key] = text
    for (row_key, col_key, _), mark in zip(compared, holm_marks([c for _, _, c in compared])):
        if mark:
            cells.loc[row_key, col_key] += " " + mark
    notes = list(spec.notes)
    if spec.delta_rows and options.reference:
        values, cells = _with_deltas(values, cells, index, options.reference, spec.decimals)
    best = _best_mask(values, spec, index, options.reference)
    if compared:
        notes.append(marks_note(options.reference or "", len(compared), {c.unit for _, _, c in compared}))
    if pairs is not None and pairs.other_data:
        notes.append(f"Runs evaluated on other data than {options.reference}'s run (another data root or set of "
                     "images) are not marked: they cannot be paired.")
    if options.seeds and (stats["n"] > 1).any():
        notes.append("mean ± standard deviation over training seeds" + (
            "; [low, high] beside it: 95% t interval for the mean over the seeds." if options.ci else "."))
    if options.ci and units:
        over = " / ".join(sorted(f"{u}s" for u in units))
        notes.append(f"[low, high] of a single run: 95% bootstrap interval over the evaluated {over}.")
    notes.append(f"{info.name}, split '{split}', mIoU convention '{info.miou_convention}'; bold: the best method "
                 "per column among rows that differ only in their method.")
    caption = f"{spec.caption} — {dataset} ({split})"
    return Table(name=f"{spec.name}-{dataset}-{split}", caption=caption, values=values, cells=cells, best=best,
                 notes=notes, dataset=dataset)


def _split_key(key: Any, n_index: int) -> tuple[Any, Any]:
    key = key if isinstance(key, tuple) else (key,)
    row, col = key[:n_index], key[n_index:]
    return (row[0] if len(row) == 1 else row), (col[0] if len(col) == 1 else col)


def _sort_key(frame: pd.DataFrame, index: list[str]) -> Any:
    """Rows in the categorical order the protocol gave (plain values sort as text)."""
    orders = {c: list(frame[c].cat.categories) for c in index if isinstance(frame[c].dtype, pd.CategoricalDtype)}

    def key(row: Any) -> tuple:
        return tuple((orders[c].index(v), "") if c in orders and v in orders[c] else (-1, str(v))
                     for c, v in zip(index, _tuple(row)))

    return key


def _with_deltas(values: pd.DataFrame, cells: pd.DataFrame, index: list[str], reference: str,
                 decimals: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Under each non-reference method's row: "Δ vs <reference>" = that row minus the reference's
    row with the same remaining keys (e.g. training modalities)."""
    if "method" not in index:
        return values, cells
    rows_v, rows_c, labels = [], [], []
    at = index.index("method")
    refs = {tuple(k for i, k in enumerate(_tuple(key)) if i != at): key for key in values.index
            if _tuple(key)[at] == reference}
    for key in values.index:
        rows_v.append(values.loc[[key]])
        rows_c.append(cells.loc[[key]])
        labels.append(key)
        parts = _tuple(key)
        if parts[at] == reference:
            continue
        ref = refs.get(tuple(k for i, k in enumerate(parts) if i != at))
        if ref is None:
            continue
        delta = values.loc[[key]].to_numpy() - values.loc[[ref]].to_numpy()
        label = tuple(f"Δ {p} vs {reference}" if i == at else p for i, p in enumerate(parts))
        label = label if len(label) > 1 else label[0]
        rows_v.append(pd.DataFrame(delta, index=[label], columns=values.columns))
        text = [[("" if np.isnan(v) else f"{v:+.{decimals}f}") for v in delta[0]]]
        rows_c.append(pd.DataFrame(text, index=[label], columns=values.columns))
        labels.append(label)
    new_index = pd.MultiIndex.from_tuples(labels, names=values.index.names) if values.index.nlevels > 1 else \
        pd.Index(labels, name=values.index.name)
    out_v = pd.concat(rows_v)
    out_c = pd.concat(rows_c)
    out_v.index = new_index
    out_c.index = new_index
    return out_v, out_c


def _tuple(key: Any) -> tuple:
    return key if isinstance(key, tuple) else (key,)


def _best_mask(values: pd.DataFrame, spec: TableSpec, index: list[str], reference: str | None) -> pd.DataFrame:
    """The highest value per column among the methods compared like for like: rows that differ
    only in their method (same training modalities, same noise...). Δ rows and unranked columns
    (parameter counts) are never marked; a group of one method has no best."""
    best = pd.DataFrame(False, index=values.index, columns=values.columns)
    at = index.index("method") if "method" in index else None
    peers = [f for f in index if f != "method"] if spec.peers is None else list(spec.peers)
    groups: dict[tuple, list[Any]] = {}
    for key in values.index:
        parts = _tuple(key)
        if at is not None and str(parts[at]).startswith("Δ "):
            continue
        groups.setdefault(tuple(p for f, p in zip(index, parts) if f in peers), []).append(key)
    for column in values.columns:
        if column in spec.unranked_columns or _tuple(column)[0] in spec.unranked_columns:
            continue
        for rows in groups.values():
            col = values.loc[rows, column]
            if col.notna().sum() < 2:
                continue
            best.loc[col.index[col == col.max()], column] = True
    return best


def tables_to_csv(tables: Sequence[Table]) -> str:
    """All tables as one long CSV: table, row labels, column label, value, cell text."""
    parts = []
    for table in tables:
        values = table.values.copy()
        values.columns = [" / ".join(map(str, _tuple(c))) for c in values.columns]
        cells = table.cells.copy()
        cells.columns = values.columns
        rows = [" / ".join(map(str, _tuple(k))) for k in values.index]
        for i, row in enumerate(rows):
            for column in values.columns:
                value = values.iloc[i][column]
                if value != value and not cells.iloc[i][column]:
                    continue
                parts.append({"table": table.name, "row": row, "column": column, "value": value,
                              "cell": cells.iloc[i][column]})
    return pd.DataFrame(parts, columns=["table", "row", "column", "value", "cell"]).to_csv(index=False,
                                                                                          lineterminator="\n")


# --- measured beside published ---------------------------------------------------------------

_PAPER_KEY = ["method", "dataset", "split", "train_modalities", "test_modalities", "condition", "corruption",
              "metric"]


def measured_for_paper(frame: pd.DataFrame) -> pd.DataFrame:
    """The measured numbers in the published tables' vocabulary: mIoU per case, the mean over
    subsets with the training set as its test modalities, trainable parameters in millions."""
    if frame.empty:
        return pd.DataFrame(columns=[*_PAPER_KEY, "measured"])
    cases = frame[frame["metric"].isin(["miou", "miou_avg"])].copy()
    summary = cases["test_modalities"] == "*"
    cases.loc[summary, "test_modalities"] = cases.loc[summary, "train_modalities"]
    params = frame.drop_duplicates("run_id").assign(metric="params_m", value=lambda f: f["params_m"],
                                                    test_modalities=lambda f: f["train_modalities"],
                                                    condition="all", corruption="none")
    out = pd.concat([cases, params])[[*_PAPER_KEY, "value"]].rename(columns={"value": "measured"})
    return out.groupby(_PAPER_KEY, as_index=False)["measured"].mean()


def paper_comparison(frame: pd.DataFrame, published: pd.DataFrame) -> list[Table]:
    """Per data set: measured and published side by side with the difference wherever every key
    matches (split included: numbers of different splits are never lined up), and a count of
    the published numbers that have no measurement yet."""
    measured = measured_for_paper(frame)
    printed = published[published["metric"].isin(["miou", "miou_avg", "params_m"])]
    joined = printed.merge(measured, on=_PAPER_KEY, how="left")
    tables = []
    index = ["table", "method", "train_modalities", "test_modalities", "condition", "corruption", "metric", "split"]
    for dataset, part in joined.groupby("dataset", sort=True):
        hits = part[part["measured"].notna()]
        if not hits.empty:
            values = hits.set_index(index)[["measured", "value"]].rename(columns={"value": "published"})
            values["Δ"] = values["measured"] - values["published"]
            cells = values.apply(lambda col: col.map(lambda v: f"{v:+.2f}" if col.name == "Δ" else f"{v:.2f}"))
            tables.append(Table(
                name=f"paper-{dataset}", caption=f"Measured beside the paper's published numbers — {dataset}",
                values=values, cells=cells, best=pd.DataFrame(False, index=values.index, columns=values.columns),
                notes=["Only numbers whose method, split, modalities, condition, corruption and metric all match."],
                dataset=dataset))
        missing = part[part["measured"].isna()]
        if not missing.empty:
            counts = missing.groupby(["table", "method", "split", "train_modalities"]).size().rename("published")
            values = counts.to_frame().astype(float)
            values["measured"] = 0.0
            cells = values.astype(int).astype(str)
            tables.append(Table(
                name=f"paper-unmeasured-{dataset}",
                caption=f"Published numbers with no measurement yet — {dataset} (count per table and model)",
                values=values, cells=cells, best=pd.DataFrame(False, index=values.index, columns=values.columns),
                notes=["Run the matching method, modalities, protocol and split to fill them in."], dataset=dataset))
    return tables
