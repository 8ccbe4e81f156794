"""`mlebench report`: tables built from stored rows, checked cell by cell against the store."""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlebench import stats
from mlebench.corruptions import Corruption
from mlebench.data import dataset_info
from mlebench.protocols import CaseResult, get_protocol
from mlebench.report.published import load_published
from mlebench.report.tables import TableOptions, build_tables, paper_comparison, tidy_frame

REF = TableOptions(reference="mlesam")
from mlebench.results import BootstrapSpec, ResultsStore, case_counts, result_rows

from ..helpers import invoke

SYN = dataset_info("synthetic")
RDEL = ("rgb", "depth", "event", "lidar")
IDS = [f"s{i:02d}" for i in range(12)]


def _counts(seed: int, quality: float, n: int = len(IDS), k: int = 25) -> np.ndarray:
    """Per-sample counts of a model that gets ``quality`` of each present class right."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 400, size=(n, k)) * (rng.random((n, k)) < 0.3)
    tp = np.floor(truth * quality).astype(np.int64)
    fn = truth - tp
    fp = rng.integers(0, 30, size=(n, k)) * (truth > 0)
    return np.stack([tp, fp, fn], axis=1)


def _store_run(store: ResultsStore, method: str, protocol: str, train=RDEL, quality: float = 0.5, seed: int = 0,
               dataset: str = "synthetic", split: str = "val", group: str | None = None, run_seed: int = 0,
               params: int = 1_000_000, **protocol_options) -> str:
    info = dataset_info(dataset)
    proto = get_protocol(protocol, **protocol_options)
    cases = proto.cases(train, info)
    results = []
    for i, case in enumerate(cases):
        counts = _counts(seed * 1000 + i, quality - 0.01 * len(set(train) - set(case.test_modalities)),
                         k=info.num_classes)
        if case.condition not in ("all",) and case.condition in ("lidarjitter", "eventlowres", "underexposure"):
            counts = counts[:0]
        tp, fp, fn = counts[:, 0], counts[:, 1], counts[:, 2]
        iou = stats.iou_from_counts(tp, fp, fn).tolist() if len(counts) else [math.nan] * info.num_classes
        miou = stats.miou_from_counts(tp, fp, fn, info.miou_convention) if len(counts) else math.nan
        results.append(CaseResult(case, miou, 0.5, 0.5, iou, len(counts), sample_ids=IDS[: len(counts)],
                                  counts=counts))
    summary = proto.summary(results, train) if protocol != "tsne" else []
    rows = result_rows(protocol, results, summary, info.classes, info.miou_convention, BootstrapSpec(200))
    run_id = store.start_run(method=method, variant="v", dataset=dataset, train_modalities=train, preset="tiny",
                             config={"parameters": {"trainable": params}}, seed=run_seed, protocol=protocol,
                             split=split, miou_convention=info.miou_convention, group_id=group)
    store.finish_run(run_id, rows, counts=case_counts(protocol, results))
    return run_id


@pytest.fixture()
def store(tmp_path: Path) -> ResultsStore:
    s = ResultsStore(tmp_path / "r.sqlite")
    _store_run(s, "mlesam", "missing-modality", quality=0.6, seed=1)
    _store_run(s, "cmnext", "missing-modality", quality=0.4, seed=1)
    return s


def _table(tables, name):
    found = [t for t in tables if t.name == name]
    assert len(found) == 1, [t.name for t in tables]
    return found[0]


def test_missing_modality_table_cells_equal_the_store(store: ResultsStore):
    table = _table(build_tables(store, ["missing-modality"], options=REF), "missing-modality-synthetic-val")
    frame = store.results()
    assert list(table.values.columns) == ["R", "D", "E", "L", "R-D", "R-E", "R-L", "D-E", "D-L", "E-L", "R-D-E",
                                          "R-D-L", "R-E-L", "D-E-L", "R-D-E-L", "Mean", "E[p=0.2]", "E[p=0.1]",
                                          "E[p=0.05]"]
    assert list(table.values.index) == [("cmnext", "R-D-E-L"), ("Δ cmnext vs mlesam", "R-D-E-L"),
                                        ("mlesam", "R-D-E-L")]
    for method in ("mlesam", "cmnext"):
        run = frame[frame.method == method]
        stored = run[(run.metric == "miou") & (run.test_modalities == "rgb,lidar")]["value"].iloc[0]
        assert table.values.loc[(method, "R-D-E-L"), "R-L"] == pytest.approx(100 * stored, abs=1e-12)
        mean = run[run.metric == "miou_avg"]["value"].iloc[0]
        assert table.values.loc[(method, "R-D-E-L"), "Mean"] == pytest.approx(100 * mean, abs=1e-12)
        assert table.cells.loc[(method, "R-D-E-L"), "Mean"].startswith(f"{100 * mean:.2f}")
    delta = table.values.loc[("Δ cmnext vs mlesam", "R-D-E-L")]
    expected = table.values.loc[("cmnext", "R-D-E-L")] - table.values.loc[("mlesam", "R-D-E-L")]
    assert np.allclose(delta, expected)
    assert table.cells.loc[("Δ cmnext vs mlesam", "R-D-E-L"), "R"] == f"{expected['R']:+.2f}"
    # mlesam is better everywhere: bold on its row only, never on the Δ row.
    assert table.best.loc[("mlesam", "R-D-E-L")].all()
    assert not table.best.loc[("cmnext", "R-D-E-L")].any() and not table.best.loc[("Δ cmnext vs mlesam", "R-D-E-L")].any()
    # ... and significantly so on the same images: cmnext's cells carry ↓ (paired bootstrap).
    assert table.cells.loc[("cmnext", "R-D-E-L"), "R"].endswith(" ↓")
    assert not table.cells.loc[("mlesam", "R-D-E-L"), "R"].endswith("↑")
    assert ("↑/↓: better/worse than mlesam on the same images (paired bootstrap over images), Holm-corrected "
            "over the 19 cell(s) compared in this table: the chance of any false mark in the table is at most 0.05."
            in table.notes)  # 15 subsets, Mean and 3 E[p] columns of cmnext; these samples record no scenes


def test_no_mark_without_a_significant_difference(tmp_path: Path):
    s = ResultsStore(tmp_path / "r.sqlite")
    _store_run(s, "mlesam", "full", quality=0.5, seed=3)
    _store_run(s, "twin", "full", quality=0.5, seed=3)  # the very same counts
    table = _table(build_tables(s, ["full"], options=REF), "full-synthetic-val")
    assert table.cells.loc["twin", "R-D-E-L"] == table.cells.loc["mlesam", "R-D-E-L"]
    assert "↑" not in table.cells.loc["twin", "R-D-E-L"] and "↓" not in table.cells.loc["twin", "R-D-E-L"]


def test_intervals_and_seed_statistics_in_cells(tmp_path: Path):
    s = ResultsStore(tmp_path / "r.sqlite")
    run = _store_run(s, "mlesam", "full", quality=0.5, seed=0)
    table = _table(build_tables(s, ["full"], options=TableOptions(ci=True, reference="mlesam")), "full-synthetic-val")
    row = s.results(run_ids=[run]).query("metric == 'miou'").iloc[0]
    assert table.cells.loc["mlesam", "R-D-E-L"] == (f"{100 * row.value:.2f} [{100 * row.ci_low:.2f}, "
                                                   f"{100 * row.ci_high:.2f}]")
    for seed, quality in ((0, 0.5), (1, 0.6), (2, 0.55)):
        _store_run(s, "cmnext", "full", quality=quality, seed=10 + seed, group="g1", run_seed=seed)
    pooled = _table(build_tables(s, ["full"], options=TableOptions(seeds=True, reference="mlesam")), "full-synthetic-val")
    values = 100 * s.results().query("method == 'cmnext' and metric == 'miou'")["value"]
    assert len(values) == 3
    assert pooled.cells.loc["cmnext", "R-D-E-L"] == f"{values.mean():.2f} ± {values.std(ddof=1):.2f}"
    # with --ci, the 95% t interval for the mean of the 3 seeds beside mean ± sd: t(0.975, 2) = 4.303
    both = _table(build_tables(s, ["full"], options=TableOptions(seeds=True, ci=True, reference="mlesam")),
                  "full-synthetic-val")
    half = 4.302653 * values.std(ddof=1) / math.sqrt(3)
    assert both.cells.loc["cmnext", "R-D-E-L"] == (f"{values.mean():.2f} ± {values.std(ddof=1):.2f} "
                                                  f"[{values.mean() - half:.2f}, {values.mean() + half:.2f}]")
    assert any("95% t interval for the mean over the seeds" in n for n in both.notes)
    latest = _table(build_tables(s, ["full"]), "full-synthetic-val")  # without --seeds: the newest run
    assert latest.values.loc["cmnext", "R-D-E-L"] == pytest.approx(values.iloc[-1], abs=1e-12)


def test_conditions_noise_and_params_tables(tmp_path: Path):
    s = ResultsStore(tmp_path / "r.sqlite")
    _store_run(s, "mlesam", "conditions", params=20_790_000)
    _store_run(s, "mlesam", "noise", seed=4)
    conditions = _table(build_tables(s, ["conditions"]), "conditions-synthetic-val")
    assert list(conditions.values.columns[:3]) == ["Params (M)", "all", "cloud"]
    assert conditions.values.loc[("mlesam", "R-D-E-L"), "Params (M)"] == pytest.approx(20.79)
    # a failure with no samples in the split is measured as undefined: an empty cell
    assert conditions.cells.loc[("mlesam", "R-D-E-L"), "lidarjitter"] == ""
    noise = _table(build_tables(s, ["noise"]), "noise-synthetic-val")
    rows = [n for _, n in noise.values.index]
    assert rows[0] == "clean"
    gaussian = [r for r in rows if r.startswith("Gaussian")]
    assert gaussian == ["Gaussian σ=10", "Gaussian σ=25", "Gaussian σ=50 †", "Gaussian σ=75", "Gaussian σ=100"]
    assert rows.index("Gaussian σ=100") < rows.index("Uniform ±25") < rows.index("Salt & pepper 5%")
    assert list(noise.values.columns) == ["clean", "R", "D", "E", "L"]
    frame = s.results()
    stored = frame[(frame.corruption == Corruption("gaussian", 50.0, "depth").name) & (frame.metric == "miou")]
    assert noise.values.loc[("mlesam", "Gaussian σ=50 †"), "D"] == pytest.approx(100 * stored["value"].iloc[0])


def test_splits_are_never_pooled(tmp_path: Path):
    s = ResultsStore(tmp_path / "r.sqlite")
    _store_run(s, "mlesam", "full", split="val", quality=0.5)
    _store_run(s, "mlesam", "full", split="test", quality=0.7, seed=5)
    names = sorted(t.name for t in build_tables(s, ["full"], options=REF))
    assert names == ["full-synthetic-test", "full-synthetic-val"]


def test_paper_comparison_lines_up_matching_keys_only(tmp_path: Path):
    s = ResultsStore(tmp_path / "r.sqlite")
    _store_run(s, "mlesam", "missing-modality", dataset="deliver", quality=0.6, params=20_790_000)
    published = load_published()
    tables = paper_comparison(tidy_frame(s), published)
    matched = _table(tables, "paper-deliver")
    row = matched.values.xs(("VI", "mlesam", "rgb,depth,event,lidar", "rgb,depth", "all", "none", "miou", "val"))
    stored = s.results().query("metric == 'miou' and test_modalities == 'rgb,depth'")["value"].iloc[0]
    paper = published.query("table == 'VI' and method == 'mlesam' and train_modalities == 'rgb,depth,event,lidar' "
                            "and test_modalities == 'rgb,depth' and metric == 'miou'")["value"].iloc[0]
    assert row["measured"] == pytest.approx(100 * stored) and row["published"] == paper
    assert row["Δ"] == pytest.approx(100 * stored - paper)
    # a run on another split is never lined up with the paper's val numbers
    s2 = ResultsStore(tmp_path / "r2.sqlite")
    _store_run(s2, "mlesam", "missing-modality", dataset="deliver", split="test")
    assert not [t for t in paper_comparison(tidy_frame(s2), published) if t.name == "paper-deliver"]
    unmeasured = _table(paper_comparison(tidy_frame(s2), published), "paper-unmeasured-muses")
    assert unmeasured.values["published"].sum() == len(published.query(
        "dataset == 'muses' and metric in ['miou', 'miou_avg', 'params_m']"))


def test_report_cli_formats_and_errors(store: ResultsStore, tmp_path: Path):
    db = str(store.path)
    md = invoke("report", "--results", db, "--table", "missing-modality")
    assert md.exit_code == 0, md.output
    assert "| cmnext / R-D-E-L" in md.output and "**" in md.output
    csv = invoke("report", "--results", db, "--format", "csv")
    frame = pd.read_csv(pd.io.common.StringIO(csv.output))
    assert set(frame.table) == {"missing-modality-synthetic-val"}
    assert len(frame[frame.row == "mlesam / R-D-E-L"]) == 19
    out = tmp_path / "tables.tex"
    result = invoke("report", "--results", db, "--format", "latex", "-o", str(out), *(["--pdf"] if shutil.which(
        "pdflatex") else []))
    assert result.exit_code == 0, result.output
    tex = out.read_text()
    assert "\\begin{tabular}" in tex and "\\toprule" in tex and "\\textbf{" in tex
    if shutil.which("pdflatex"):
        pdf = out.with_suffix(".pdf")
        assert pdf.read_bytes().startswith(b"%PDF")
        if shutil.which("pdftotext"):
            text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True).stdout
            assert "R-D-E-L" in text and "Mean" in text
    html = tmp_path / "report.html"
    assert invoke("report", "--results", db, "--format", "html", "-o", str(html)).exit_code == 0
    page = html.read_text()
    assert "data:image/png;base64," in page and "mIoU over modality subsets" in page
    # bad input: clear, non-zero, nothing written
    bad = invoke("report", "--results", db, "--table", "robust")
    assert bad.exit_code == 2 and "unknown table 'robust'" in bad.output
    before = store.path.read_bytes()
    bad = invoke("report", "--results", db, "-o", db)
    assert bad.exit_code == 1 and "is the results store this command reads" in bad.output
    assert store.path.read_bytes() == before
    empty = tmp_path / "empty.sqlite"
    ResultsStore(empty)
    bad = invoke("report", "--results", str(empty))
    assert bad.exit_code == 1 and "nothing to report" in bad.output
    bad = invoke("report", "--results", db, "--pdf")
    assert bad.exit_code == 2 and "--pdf needs --format latex and -o" in bad.output


def test_marks_are_holm_corrected_over_the_cells_of_a_table():
    """Holm by hand for p = 0.001, 0.02, 0.03, 0.04 (m = 4): 0.001 <= 0.05/4 is rejected, then
    0.02 > 0.05/3 stops the procedure; uncorrected, all four would be marked."""
    from mlebench.report.significance import Comparison, holm_marks

    found = [Comparison(+1.0, 0.02, "scene"), Comparison(-1.0, 0.001, "scene"), Comparison(+1.0, 0.04, "scene"),
             Comparison(+1.0, 0.03, "scene")]
    assert holm_marks(found) == ["", "↓", "", ""]
    assert holm_marks([Comparison(+1.0, 0.01, "image"), Comparison(-1.0, 0.02, "image")]) == ["↑", "↓"]
    assert holm_marks([]) == []
