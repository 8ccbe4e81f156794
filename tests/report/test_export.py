"""`mlebench results export` and ``export_results``: CSV and JSON of a known run cell by cell, the
seed columns, unfinished runs left out, intervals and per-sample rows of evaluated runs, and the
store never overwritten by its own export."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from mlebench.data import dataset_info
from mlebench.errors import ConfigError
from mlebench.report.export import EXPORT_COLUMNS
from mlebench.results import RESULT_COLUMNS, ResultsStore

from ..helpers import invoke
from ..results.stores import ROWS, begin_run, expected_frame, export_text


# -- a known run -----------------------------------------------------------------------------------
@pytest.fixture()
def finished_store(tmp_path: Path) -> tuple[ResultsStore, str]:
    store = ResultsStore(tmp_path / "r.db")
    run_id = begin_run(store)
    store.finish_run(run_id, ROWS)
    begin_run(store)  # an unfinished run, never exported by default
    return store, run_id


def test_export_csv(finished_store) -> None:
    store, run_id = finished_store
    text = export_text(store, "csv")
    assert text.splitlines()[0] == ",".join(EXPORT_COLUMNS)
    parsed = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    expected = expected_frame(run_id)
    for column in ("value", "ci_low", "ci_high", "seeds_mean", "seeds_std"):
        parsed[column] = pd.to_numeric(parsed[column].replace("", None)).astype("float64")
    parsed["seed"] = parsed["seed"].astype("int64")
    parsed["seeds_n"] = parsed["seeds_n"].astype("int64")
    for column in ("split", "miou_convention", "group_id"):
        parsed[column] = parsed[column].astype(object).replace("", None)
    pd.testing.assert_frame_equal(parsed[list(RESULT_COLUMNS)], expected)
    # one run: one "seed" per row, its mean is the value, no spread
    known = parsed["value"].notna()
    assert (parsed.loc[known, "seeds_n"] == 1).all() and (parsed.loc[~known, "seeds_n"] == 0).all()
    assert parsed.loc[known, "seeds_mean"].tolist() == parsed.loc[known, "value"].tolist()
    assert parsed["seeds_std"].isna().all()


def test_export_json(finished_store) -> None:
    store, run_id = finished_store
    text = export_text(store, "JSON")
    records = json.loads(text)
    assert records[2]["value"] is None  # NaN
    assert "NaN" not in text
    expected = expected_frame(run_id).to_dict("records")
    for record in expected:
        for column in ("value", "ci_low", "ci_high"):
            if math.isnan(record[column]):
                record[column] = None
    assert [{k: r[k] for k in RESULT_COLUMNS} for r in records] == expected
    assert list(records[0]) == list(EXPORT_COLUMNS)


def test_export_unknown_format(finished_store) -> None:
    store, _ = finished_store
    with pytest.raises(ConfigError, match="csv, json"):
        export_text(store, "parquet")


# -- evaluated runs (the evaluated fixture, tests/conftest.py) -------------------------------------
def test_export_has_intervals_and_per_sample_rows(evaluated, tmp_path: Path):
    db, ids = evaluated
    out = invoke("results", "export", "--results", str(db), "--format", "json")
    rows = pd.DataFrame(json.loads(out.output))
    miou = rows[(rows.metric == "miou") & (rows.run_id == ids[0])]
    assert miou["ci_low"].notna().all() and (miou["ci_low"] <= miou["value"]).all()
    assert rows[rows.metric == "pixel_accuracy"]["ci_low"].isna().all()
    assert {"preset", "seed", "split", "miou_convention", "seeds_mean", "seeds_std", "seeds_n"} <= set(rows.columns)
    path = tmp_path / "samples.csv"
    result = invoke("results", "export", "--results", str(db), "--per-sample", "-o", str(path))
    assert result.exit_code == 0, result.output
    per_sample = pd.read_csv(path, keep_default_na=False)
    store = ResultsStore(db)
    total = sum(c.counts.shape[0] * c.counts.shape[2] for r in ids for c in store.case_counts(r))
    assert len(per_sample) == total
    case = per_sample[(per_sample.run_id == ids[0]) & (per_sample.test_modalities == "rgb,lidar")]
    counts = next(c for c in store.case_counts(ids[0]) if c.key.test_modalities == ("rgb", "lidar")).counts
    assert case[["tp", "fp", "fn"]].sum().tolist() == counts.sum(axis=(0, 2)).tolist()
    first = case.iloc[1]
    assert first["class"] == dataset_info("synthetic").classes[1]
    assert (first.tp, first.fp, first.fn) == tuple(counts[0, :, 1])
    result = invoke("results", "export", "--results", str(db), "--per-sample", "--format", "json")
    assert result.exit_code == 2 and "--per-sample writes csv only" in result.output


def test_export_never_overwrites_the_store(evaluated):
    db, _ = evaluated
    before = db.read_bytes()
    for fmt in ("csv", "json"):
        result = invoke("results", "export", "--results", str(db), "--format", fmt, "-o", str(db))
        assert result.exit_code == 1
        assert f"-o/--out {db} is the results store this command reads; writing there would destroy it" in result.output
    assert db.read_bytes() == before
