"""Per-sample counts in the store, intervals, `mlebench compare`, multi-seed groups, exports,
and the schema migration: every number checked against a recomputation from the counts."""

from __future__ import annotations

import io
import json
import math
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from mlebench.registry import build_method
from mlebench import stats
from mlebench.cli import main
from mlebench.data import dataset_info, load_dataset
from mlebench.data.synthetic import generate_synthetic
from mlebench.data.transforms import Normalize
from mlebench.engine.checkpoint import save_checkpoint
from mlebench.engine.evaluate import evaluate_cases
from mlebench.errors import ConfigError
from mlebench.metrics import ConfusionMatrix
from mlebench.protocols import EvalCase
from mlebench.report.compare import compare_runs
from mlebench.results import SCHEMA_VERSION, CaseCounts, CaseKey, ResultRow, ResultsStore, migrate

RDEL = ("rgb", "depth", "event", "lidar")


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("st") / "s", size=64, n_train=6, n_val=6, n_test=3,
                              seed=9, workers=1)


def _perturbed(seed: int, modalities=RDEL, **options):
    torch.manual_seed(seed)
    m = build_method("mlesam", dataset_info("synthetic"), modalities, "tiny", sam2_checkpoint=None, **options)
    with torch.no_grad():
        for p in m.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    return m.eval()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("ck")
    return save_checkpoint(_perturbed(0), folder / "a.pt"), save_checkpoint(_perturbed(1), folder / "b.pt")


@pytest.fixture(scope="module")
def evaluated(root: Path, checkpoints, tmp_path_factory: pytest.TempPathFactory):
    """Two checkpoints evaluated under missing-modality, and one under conditions, in one store."""
    db = tmp_path_factory.mktemp("db") / "r.sqlite"
    ids = []
    for ckpt, protocol in ((checkpoints[0], "missing-modality"), (checkpoints[1], "missing-modality"),
                           (checkpoints[0], "conditions")):
        result = invoke("eval", "--data-root", str(root), "--checkpoint", str(ckpt), "--results", str(db),
                        "--protocol", protocol, "--weights", "none")
        assert result.exit_code == 0, result.output
        ids.append(ResultsStore(db).runs()["id"].iloc[0])
    return db, ids


# --- per-sample counts ---------------------------------------------------------------------


def test_per_sample_counts_sum_to_the_confusion_matrix(root: Path):
    ds = load_dataset("synthetic", root, "val", RDEL)
    model = _perturbed(0)
    cases = [EvalCase(("rgb",)), EvalCase(RDEL, "night"), EvalCase(RDEL, "cloud")]
    for cache in (True, False):
        for r in evaluate_cases(model, ds, cases, batch_size=4, feature_cache=cache):
            assert r.counts.shape == (r.samples, 3, model.num_classes)
            expected_ids = [ref.id for ref in ds.refs if r.case.condition in ("all", *ref.meta.values())]
            assert r.sample_ids == expected_ids  # data-set order, only the condition's samples
            assert stats.iou_from_counts(*r.counts.transpose(1, 0, 2)).tolist() == pytest.approx(
                r.iou, nan_ok=True, abs=0)
            assert stats.miou_from_counts(*r.counts.transpose(1, 0, 2), convention="present") == r.miou
            # one sample's counts against a confusion matrix of that sample alone
            index = [ref.id for ref in ds.refs].index(r.sample_ids[-1])
            sample = ds[index]
            norm = Normalize(ds.info, RDEL)(sample)
            feats = {m: model.encode(m, norm[m][None]) for m in r.case.test_modalities}
            with torch.no_grad():
                pred = model.decode(feats, (64, 64)).logits.argmax(1)[0]
            cm = ConfusionMatrix(model.num_classes)
            cm.update(pred, sample["label"])
            m = cm.matrix.numpy()
            assert r.counts[-1].tolist() == [np.diag(m).tolist(), (m.sum(0) - np.diag(m)).tolist(),
                                             (m.sum(1) - np.diag(m)).tolist()]
    batch1 = evaluate_cases(model, ds, cases[:1], batch_size=1)[0]
    batch4 = evaluate_cases(model, ds, cases[:1], batch_size=4)[0]
    assert np.array_equal(batch1.counts, batch4.counts)


def test_stored_miou_equals_the_miou_of_the_stored_counts(evaluated):
    db, ids = evaluated
    store = ResultsStore(db)
    frame = store.results()
    for run_id in ids:
        counts = store.case_counts(run_id)
        assert counts, run_id
        convention = store.runs().set_index("id").loc[run_id, "miou_convention"]
        assert convention == "present"
        for c in counts:
            stored = frame[(frame.run_id == run_id) & (frame.metric == "miou")
                           & (frame.test_modalities == ",".join(c.key.test_modalities))
                           & (frame.condition == c.key.condition)]
            assert len(stored) == 1
            if not c.sample_ids:  # a condition without samples in this split
                assert math.isnan(stored["value"].iloc[0]) and math.isnan(stored["ci_low"].iloc[0])
                continue
            assert stored["value"].iloc[0] == stats.miou_from_counts(*c.counts.transpose(1, 0, 2), convention)
            # the interval is the bootstrap of the same counts (1000 resamples, seed 0)
            interval = stats.miou_interval(*c.counts.transpose(1, 0, 2), convention=convention)
            assert (stored["ci_low"].iloc[0], stored["ci_high"].iloc[0]) == (interval.low, interval.high)
            assert interval.low <= stored["value"].iloc[0] <= interval.high
            samples = frame[(frame.run_id == run_id) & (frame.metric == "samples")
                            & (frame.test_modalities == ",".join(c.key.test_modalities))
                            & (frame.condition == c.key.condition)]["value"].iloc[0]
            assert len(c.sample_ids) == samples


def test_summary_intervals_resample_all_subsets_together(evaluated):
    db, ids = evaluated
    store = ResultsStore(db)
    frame = store.results(run_ids=[ids[0]])
    counts = {c.key.test_modalities: c.counts for c in store.case_counts(ids[0])}
    assert len(counts) == 15
    avg = frame[frame.metric == "miou_avg"].iloc[0]
    subsets = list(counts)
    interval = stats.summary_interval([tuple(counts[s].transpose(1, 0, 2)) for s in subsets],
                                      lambda m: m.mean(axis=-1), convention="present")
    assert avg["value"] == pytest.approx(interval.estimate, abs=1e-15)
    assert (avg["ci_low"], avg["ci_high"]) == pytest.approx((interval.low, interval.high), abs=1e-12)
    terms = store.summary_terms(ids[0])
    key = ("missing-modality", "*", "all", "none", "miou_e_p0.2")
    assert sum(w for _, w in terms[key]) == pytest.approx(1.0) and len(terms[key]) == 15


def test_counts_are_compact(evaluated):
    db, _ = evaluated
    conn = sqlite3.connect(db)
    try:
        size = conn.execute("SELECT sum(length(counts) + length(sample_index)) FROM case_counts").fetchone()[0]
        n = conn.execute("SELECT sum(n_samples) FROM case_counts").fetchone()[0]
    finally:
        conn.close()
    # well under the raw 3 x 25 x 4 bytes per sample and case
    assert size < n * 3 * 25 * 4 / 2


# --- compare -------------------------------------------------------------------------------


def test_compare_pairs_the_same_images(evaluated):
    db, ids = evaluated
    store = ResultsStore(db)
    frame = compare_runs(store, ids[0], ids[1])
    assert len(frame[frame.metric == "miou"]) == 15
    a = {c.key.test_modalities: c for c in store.case_counts(ids[0])}
    b = {c.key.test_modalities: c for c in store.case_counts(ids[1])}
    row = frame[(frame.metric == "miou") & (frame.test_modalities == "rgb,lidar")].iloc[0]
    ref = stats.paired_difference(tuple(a[("rgb", "lidar")].counts.transpose(1, 0, 2)),
                                  tuple(b[("rgb", "lidar")].counts.transpose(1, 0, 2)), "present")
    assert (row.difference, row.ci_low, row.ci_high, row.p_value) == (ref.difference, ref.low, ref.high, ref.p_value)
    assert set(frame[frame.test_modalities == "*"].metric) == {"miou_avg", "miou_e_p0.2", "miou_e_p0.1",
                                                               "miou_e_p0.05"}
    # a run against itself: no difference, p = 1
    same = compare_runs(store, ids[0], ids[0])
    assert (same.difference == 0).all() and (same.p_value == 1).all()
    # a missing-modality run and a conditions run share exactly the full clean case
    mixed = compare_runs(store, ids[0], ids[2])
    assert list(mixed.test_modalities) == [",".join(RDEL)] and list(mixed.condition) == ["all"]
    assert mixed.difference.iloc[0] == 0  # the same checkpoint, the same images


def test_compare_cli_table_and_json(evaluated):
    db, ids = evaluated
    result = invoke("compare", ids[0], ids[1], "--results", str(db), "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["run_a"] == ids[0] and len(payload["cases"]) == 15 + 4
    frame = compare_runs(ResultsStore(db), ids[0], ids[1])
    assert [c["difference"] for c in payload["cases"]] == list(frame.difference)
    table = invoke("compare", ids[0], ids[1], "--results", str(db))
    assert table.exit_code == 0
    line = next(ln for ln in table.output.splitlines() if ln.startswith("rgb-lidar "))
    row = frame[(frame.metric == "miou") & (frame.test_modalities == "rgb,lidar")].iloc[0]
    assert f"{100 * row.difference:+.2f}" in line and f"[{100 * row.ci_low:.2f}, {100 * row.ci_high:.2f}]" in line


def _store_with(path: Path, runs: list[dict]) -> list[str]:
    store = ResultsStore(path)
    ids = []
    for spec in runs:
        run_id = store.start_run(method="m", variant="v", dataset=spec.get("dataset", "synthetic"),
                                 train_modalities=["rgb"], preset="tiny", config={}, seed=0,
                                 protocol="full", split=spec.get("split", "val"), miou_convention="present")
        counts = [CaseCounts(CaseKey("full", ("rgb",), "all", "none"), tuple(spec["ids"]), spec["counts"])]
        store.finish_run(run_id, [ResultRow("full", ("rgb",), "all", "none", "miou", 0.5)], counts=counts)
        ids.append(run_id)
    return ids


def test_compare_refuses_runs_that_cannot_be_paired(tmp_path: Path):
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 50, size=(4, 3, 5))
    ids = _store_with(tmp_path / "r.sqlite", [
        {"ids": list("abcd"), "counts": counts},
        {"ids": list("abcd"), "counts": counts, "split": "test"},
        {"ids": list("abcd"), "counts": counts, "dataset": "deliver"},
        {"ids": list("abce"), "counts": counts},
        {"ids": list("dcba"), "counts": counts[::-1]},
    ])
    store = ResultsStore(tmp_path / "r.sqlite")
    with pytest.raises(ConfigError, match=r"are on different splits \(val vs test\)"):
        compare_runs(store, ids[0], ids[1])
    with pytest.raises(ConfigError, match=r"are on different data sets \(synthetic vs deliver\)"):
        compare_runs(store, ids[0], ids[2])
    with pytest.raises(ConfigError, match=r"scored different samples for rgb \(1 only in a, 1 only in b\)"):
        compare_runs(store, ids[0], ids[3])
    with pytest.raises(ConfigError, match="no run nope"):
        compare_runs(store, ids[0], "nope")
    # the same samples in another order are aligned by id: identical counts, no difference
    aligned = compare_runs(store, ids[0], ids[4])
    assert aligned.difference.iloc[0] == 0 and aligned.p_value.iloc[0] == 1
    result = invoke("compare", ids[0], ids[1], "--results", str(tmp_path / "r.sqlite"))
    assert result.exit_code == 1 and "different splits" in result.output


# --- exports -------------------------------------------------------------------------------


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
        assert result.exit_code == 2
        assert f"{db} is the results store; writing there would destroy it" in result.output
    assert db.read_bytes() == before


# --- multi-seed runs -------------------------------------------------------------------------


def test_seeds_train_one_run_per_seed_as_a_group(root: Path, tmp_path: Path):
    db = tmp_path / "r.sqlite"
    result = invoke("run", "--data-root", str(root), "--steps", "2", "--seeds", "0,1", "--protocol", "full",
                    "--results", str(db), "--weights", "none", "--save-checkpoint", str(tmp_path / "m.pt"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m-s0.pt").is_file() and (tmp_path / "m-s1.pt").is_file()
    runs = ResultsStore(db).runs()
    assert sorted(runs["seed"]) == [0, 1] and runs["group_id"].nunique() == 1
    frame = pd.read_csv(io.StringIO(invoke("results", "export", "--results", str(db)).output))
    miou = frame[frame.metric == "miou"]
    assert len(miou) == 2 and miou["value"].nunique() == 2  # the seeds differ
    assert (miou["seeds_n"] == 2).all()
    assert miou["seeds_mean"].iloc[0] == pytest.approx(miou["value"].mean(), abs=1e-15)
    assert miou["seeds_std"].iloc[0] == pytest.approx(miou["value"].std(ddof=1), abs=1e-15)
    listing = invoke("results", "list", "--results", str(db)).output
    mean, std = 100 * miou["value"].mean(), 100 * miou["value"].std(ddof=1)
    assert f"miou {mean:.2f} ± {std:.2f} (mean ± std)" in listing
    assert f"{mean:7.2f} ± {std:5.2f}" in result.output  # the group summary printed after the runs
    bad = invoke("run", "--data-root", str(root), "--seeds", "0,1", "--seed", "3", "--results", str(db))
    assert bad.exit_code == 2 and "give --seed or --seeds, not both" in bad.output
    bad = invoke("run", "--data-root", str(root), "--seeds", "0,x", "--results", str(db))
    assert bad.exit_code == 2 and "'0,x' is not a comma-separated list of integers" in bad.output


def test_results_list_shows_protocol_seed_split_and_interval(evaluated):
    db, ids = evaluated
    listing = invoke("results", "list", "--results", str(db)).output
    header = listing.splitlines()[0].split()
    for column in ("protocol", "preset", "seed", "split", "convention", "mIoU"):
        assert column in header
    frame = ResultsStore(db).results(run_ids=[ids[2]])
    full = frame[(frame.metric == "miou") & (frame.condition == "all")].iloc[0]
    line = next(ln for ln in listing.splitlines() if ln.startswith(ids[2]))
    assert "conditions" in line and "val" in line and "present" in line
    assert f"{100 * full.value:.2f} [{100 * full.ci_low:.2f}, {100 * full.ci_high:.2f}]" in line


# --- schema migration ----------------------------------------------------------------------

_V1_SCHEMA = """
CREATE TABLE runs (id TEXT PRIMARY KEY, method TEXT NOT NULL, variant TEXT NOT NULL, dataset TEXT NOT NULL,
    train_modalities TEXT NOT NULL, preset TEXT NOT NULL, config TEXT NOT NULL, seed INTEGER NOT NULL,
    git_commit TEXT, versions TEXT NOT NULL, started_at TEXT NOT NULL, ended_at TEXT,
    status TEXT NOT NULL CHECK (status IN ('running', 'finished', 'failed')), error TEXT);
CREATE TABLE results (run_id TEXT NOT NULL REFERENCES runs(id), protocol TEXT NOT NULL,
    test_modalities TEXT NOT NULL, condition TEXT NOT NULL, corruption TEXT NOT NULL, metric TEXT NOT NULL,
    class TEXT NOT NULL DEFAULT '', value REAL);
CREATE INDEX results_run_id ON results(run_id);
INSERT INTO runs VALUES ('r1', 'mlesam', 'unified+aux', 'synthetic', 'rgb,depth', 'tiny',
    '{"protocol": "full", "eval_split": "val", "miou_convention": "present"}', 3, NULL, '{}',
    '2026-01-01T00:00:00+00:00', '2026-01-01T00:01:00+00:00', 'finished', NULL);
INSERT INTO results VALUES ('r1', 'full', 'rgb,depth', 'all', 'none', 'miou', '', 0.25);
PRAGMA application_id = 1296844098;
PRAGMA user_version = 1;
"""


def _v1_store(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(_V1_SCHEMA)
    conn.close()
    return path


def test_an_old_store_is_refused_untouched_then_migrated(tmp_path: Path):
    path = _v1_store(tmp_path / "old.sqlite")
    before = path.read_bytes()
    with pytest.raises(ConfigError, match=r"has schema version 1; .*`mlebench results migrate --results "):
        ResultsStore(path)
    result = invoke("results", "list", "--results", str(path))
    assert result.exit_code == 1 and "mlebench results migrate" in result.output
    assert path.read_bytes() == before  # never silently rewritten
    result = invoke("results", "migrate", "--results", str(path))
    assert result.exit_code == 0, result.output
    backup = tmp_path / "old.sqlite.v1.bak"
    assert f"original kept at {backup}" in result.output and backup.read_bytes() == before
    store = ResultsStore(path)
    run = store.runs().iloc[0]
    assert (run["protocol"], run["split"], run["miou_convention"], run["seed"]) == ("full", "val", "present", 3)
    frame = store.results()
    assert frame["value"].tolist() == [0.25] and math.isnan(frame["ci_low"].iloc[0])
    assert store.case_counts("r1") == []
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()
    # migrating again is a no-op; a second old file with an existing backup is refused
    assert migrate(path) == (SCHEMA_VERSION, path)
    other = _v1_store(tmp_path / "other.sqlite")
    (tmp_path / "other.sqlite.v1.bak").write_text("keep me")
    with pytest.raises(ConfigError, match="backup .*other.sqlite.v1.bak already exists"):
        migrate(other)
    assert (tmp_path / "other.sqlite.v1.bak").read_text() == "keep me"
    # a run without per-sample counts cannot be compared, and says why
    ids = _store_with(path, [{"ids": ["x"], "counts": np.ones((1, 3, 25), dtype=np.int64)}])
    with pytest.raises(ConfigError, match="run r1 has no per-sample counts"):
        compare_runs(ResultsStore(path), "r1", ids[0])
