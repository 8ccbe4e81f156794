"""Every protocol end to end through `mlebench run` and `mlebench eval`, with stored numbers
checked against an independent recomputation (reference.py): full, missing-modality with its
summary, noise with and without the sweep, conditions and t-SNE silhouettes and plots; a run
and the eval of its checkpoint store identical rows, and runs of one seed train the same weights.
"""

from __future__ import annotations

import itertools
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mlebench.corruptions import Corruption, stable_seed
from mlebench.data import dataset_info
from mlebench.engine.checkpoint import read_checkpoint
from mlebench.results import ResultsStore

from .reference import (
    BATCH,
    MODS,
    N_TRAIN,
    N_VAL,
    SEED,
    TSNE_CLASSES,
    TSNE_PIXELS,
    ProtocolRuns,
    as_dict,
    check_case,
    cli,
    fresh_method,
    predict,
    same_values,
    score,
    selected,
    split_samples,
    value,
)

pytestmark = pytest.mark.usefixtures("_module_env")

PROTOCOLS = ["full", "missing-modality", "noise", "conditions", "tsne"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_run_and_eval_of_its_checkpoint_store_identical_rows(runs: ProtocolRuns, protocol: str):
    r = runs(protocol)
    a, b = as_dict(r["run_rows"]), as_dict(r["eval_rows"])
    same_values(a, b)
    assert {k[0] for k in a} == {protocol}
    assert r["run_config"]["protocol"] == r["eval_config"]["protocol"] == protocol
    assert r["eval_config"]["checkpoint"] == str(r["ckpt"]) and r["eval_config"]["train"] is None
    assert r["run_config"]["checkpoint"] is None
    steps = 2 * (N_TRAIN // 2) if protocol == "full" else 2
    assert r["run_config"]["train"]["steps"] == steps
    assert read_checkpoint(r["ckpt"])["extra"]["step"] == steps
    assert f"for {steps} steps on cpu" in r["run_output"]
    for config in (r["run_config"], r["eval_config"]):
        assert config["eval_split"] == "val" and config["feature_cache"] is True
        assert config["miou_convention"] == "present" and config["frozen_source"] == "seed:0"


def test_runs_of_the_same_seed_train_the_same_weights(runs: ProtocolRuns):
    """Four runs trained 2 steps with one seed: the same weights, tensor for tensor."""
    states = [read_checkpoint(runs(p)["ckpt"])["state_dict"] for p in ("missing-modality", "noise", "conditions",
                                                                      "tsne")]
    for state in states[1:]:
        assert state.keys() == states[0].keys()
        for key, tensor in state.items():
            assert torch.equal(tensor, states[0][key]), key


def test_full_protocol_matches_the_reference(runs: ProtocolRuns, val_samples):
    r = runs("full")
    rows = r["run_rows"]
    assert len(rows) == 4 + 25  # miou, pixel_accuracy, mean_f1, samples + 25 per-class IoUs
    method = fresh_method("synthetic", r["ckpt"])
    ref = check_case(rows, method, val_samples, MODS)
    assert ref["samples"] == N_VAL


def test_missing_modality_matches_the_reference_and_its_summary(runs: ProtocolRuns, val_samples):
    r = runs("missing-modality")
    rows = r["eval_rows"]
    subsets = [s for k in range(1, 5) for s in itertools.combinations(MODS, k)]
    cases = rows[rows.metric == "miou"]
    assert sorted(cases.test_modalities) == sorted(",".join(s) for s in subsets)
    method = fresh_method("synthetic", r["ckpt"])
    for subset in [("rgb",), ("lidar",), ("depth", "event"), ("rgb", "event", "lidar"), MODS]:
        check_case(rows, method, val_samples, subset)
    # Summary rows, recomputed from the 15 stored subset mIoUs.
    miou = {tuple(s.split(",")): v for s, v in zip(cases.test_modalities, cases.value)}
    assert len(miou) == 15 and len(set(miou.values())) > 3  # the subsets really differ
    assert value(rows, "miou_avg", ("*",)) == pytest.approx(sum(miou.values()) / 15, abs=1e-12)
    for p in (0.2, 0.1, 0.05):
        w = {s: p ** (4 - len(s)) * (1 - p) ** len(s) for s in miou}
        want = sum(w[s] * miou[s] for s in miou) / sum(w.values())
        assert value(rows, f"miou_e_p{p:g}", ("*",)) == pytest.approx(want, abs=1e-12)
    assert set(rows[rows.test_modalities == "*"].metric) == {"miou_avg", "miou_e_p0.2", "miou_e_p0.1",
                                                              "miou_e_p0.05"}


def test_noise_matches_the_reference_seeded_by_run_seed_and_sample_id(runs: ProtocolRuns, val_samples):
    r = runs("noise")
    rows = r["run_rows"]
    expected = ["none"] + [f"{kind}@{m}" for m in MODS for kind in ("gaussian-50", "uniform-100")]
    assert list(rows[rows.metric == "miou"].corruption) == expected
    method = fresh_method("synthetic", r["ckpt"])
    clean = check_case(rows, method, val_samples, MODS)
    corrupted = [check_case(rows, method, val_samples, MODS, corruption=Corruption.parse(name))
                 for name in ("gaussian-50@rgb", "uniform-100@depth", "gaussian-50@lidar")]
    assert any(c["miou"] != clean["miou"] for c in corrupted)  # the noise changes predictions
    # Another base seed is other noise, other predictions: the exact match above is discriminating.
    c = Corruption.parse("gaussian-50@rgb")
    other = score(val_samples, predict(method, val_samples, MODS, c, seed=SEED + 1), method.num_classes)[0]
    assert not torch.equal(other.matrix, corrupted[0]["matrix"])


def test_noise_with_the_sweep(runs: ProtocolRuns, val_samples, tmp_path: Path):
    """The whole sweep (61 cases) from the noise run's checkpoint: the cases, the shared cases
    equal to the paper-only run, and two sweep-only cases against the reference."""
    r = runs("noise")
    db = tmp_path / "sweep.sqlite"
    config = tmp_path / "sweep.yaml"
    config.write_text("protocol: {sweep: true}\n")
    cli("eval", "--protocol", "noise", "--data-root", runs.root, "--config", config, "--seed", SEED,
        "--weights", "none", "--batch-size", BATCH, "--results", db, "--checkpoint", r["ckpt"])
    rows = ResultsStore(db).results()
    names = list(rows[rows.metric == "miou"].corruption)
    per_modality = (["gaussian-50", "uniform-100"] + [f"gaussian-{s}" for s in (10, 25, 75, 100)]
                    + [f"uniform-{s}" for s in (25, 50, 150)] + [f"salt_pepper-{s}" for s in (0.05, 0.1, 0.2)]
                    + [f"missing_pixels-{s}" for s in (0.25, 0.5, 0.75)])
    assert len(names) == 61 and names[0] == "none"
    assert sorted(names[1:]) == sorted(f"{k}@{m}" for m in MODS for k in per_modality)
    paper = as_dict(r["eval_rows"])
    sweep = as_dict(rows)
    same_values(paper, {k: v for k, v in sweep.items() if k in paper})
    method = fresh_method("synthetic", r["ckpt"])
    for name in ("salt_pepper-0.1@depth", "missing_pixels-0.5@rgb"):
        check_case(rows, method, val_samples, MODS, corruption=Corruption.parse(name))


def test_conditions_select_their_own_samples(runs: ProtocolRuns, val_samples):
    r = runs("conditions")
    rows = r["run_rows"]
    info = dataset_info("synthetic")
    counts = {c: sum(selected(s["meta"], c) for s in val_samples) for c in ("all", *info.cases)}
    assert counts == {"all": 5, "cloud": 1, "fog": 1, "night": 1, "rain": 1, "sun": 1, "motionblur": 1,
                      "overexposure": 1, "underexposure": 0, "lidarjitter": 0, "eventlowres": 0}
    stored = {c: value(rows, "samples", MODS, condition=c) for c in counts}
    assert stored == counts
    method = fresh_method("synthetic", r["ckpt"])
    predictions = predict(method, val_samples, MODS)
    for condition in ("all", "night", "rain", "motionblur", "overexposure", "cloud"):
        cm, n = score(val_samples, predictions, method.num_classes, condition)
        assert n == counts[condition]
        assert value(rows, "miou", MODS, condition=condition) == pytest.approx(cm.miou("present"), abs=1e-12)
        assert value(rows, "pixel_accuracy", MODS, condition=condition) == pytest.approx(cm.pixel_accuracy(),
                                                                                         abs=1e-12)
    # A condition without samples has no mIoU (the synthetic set's "present" convention).
    for condition in ("underexposure", "lidarjitter", "eventlowres"):
        assert math.isnan(value(rows, "miou", MODS, condition=condition))
        assert math.isnan(value(rows, "pixel_accuracy", MODS, condition=condition))
    # The conditions really differ (so selecting the wrong samples shows).
    assert len({value(rows, "miou", MODS, condition=c) for c in ("night", "rain", "overexposure", "cloud")}) > 1


def _reference_silhouette(method, samples, predictions, modalities, condition) -> float | None:
    from sklearn.metrics import silhouette_score

    info = method.info
    keys, feats = {}, {}
    for s, (_, emb) in zip(samples, predictions):
        if not selected(s["meta"], condition):
            continue
        c, h, w = emb.shape
        label = s["label"]
        mult = method.size_multiple
        padded = F.pad(label, (0, -label.shape[1] % mult, 0, -label.shape[0] % mult), value=255)
        small = F.interpolate(padded[None, None].float(), size=(h, w), mode="nearest")[0, 0].long().reshape(-1)
        g = torch.Generator().manual_seed(stable_seed("mlebench-tsne-v1", SEED, s["meta"]["id"]))
        k = torch.rand(h * w, generator=g)
        f = emb.reshape(c, h * w).T.float()
        for name in TSNE_CLASSES:
            cls = info.classes.index(name)
            sel = small == cls
            keys.setdefault(cls, []).append(k[sel])
            feats.setdefault(cls, []).append(f[sel])
    x, y = [], []
    for name in TSNE_CLASSES:
        cls = info.classes.index(name)
        if cls not in keys:
            continue
        k, f = torch.cat(keys[cls]), torch.cat(feats[cls])
        if not len(k):
            continue
        keep = k.argsort()[:TSNE_PIXELS]
        x.append(f[keep].numpy())
        y.append(np.full(len(keep), cls))
    if len(y) < 2 or sum(len(v) for v in y) < 10:
        return None
    return float(silhouette_score(np.concatenate(x), np.concatenate(y)))


def test_tsne_silhouettes_match_the_reference_and_plots_are_written(runs: ProtocolRuns, val_samples):
    r = runs("tsne")
    rows = r["run_rows"]
    sil = rows[rows.metric == "silhouette"]
    # Cases: every single modality and the full set, under each sensor failure.
    sets = [(m,) for m in MODS] + [MODS]
    failures = ("motionblur", "overexposure", "underexposure", "lidarjitter", "eventlowres")
    assert len(rows[rows.metric == "miou"]) == len(sets) * len(failures)
    method = fresh_method("synthetic", r["ckpt"])
    n_rows = 0
    for modalities in sets:
        predictions = predict(method, val_samples, modalities)
        for condition in failures:
            want = _reference_silhouette(method, val_samples, predictions, modalities, condition)
            hit = sil[(sil.test_modalities == ",".join(modalities)) & (sil.condition == condition)]
            if want is None:
                assert hit.empty, (modalities, condition)
                continue
            n_rows += 1
            assert len(hit) == 1
            got = float(hit.value.iloc[0])
            assert -1 <= got <= 1
            assert got == want, (modalities, condition)
    # One row per case that has samples: 2 failures in the val split x 5 modality sets.
    assert n_rows == len(sil) == 10
    for run_id in (r["run_id"], r["eval_id"]):  # the t-SNE plots of both runs are written
        plots = sorted((Path("runs") / run_id).glob("tsne*.png"))
        assert plots, run_id
        for png in plots:
            with Image.open(png) as image:
                assert image.format == "PNG" and image.size[0] > 100


def test_tsne_top_classes_when_the_first_failure_has_no_samples(runs: ProtocolRuns, root: Path, tmp_path: Path):
    data = Path(shutil.copytree(root, tmp_path / "s"))
    for folder in data.glob("*/*/val/*_motionblur"):  # the split's only motionblur sample
        shutil.rmtree(folder)
    samples = split_samples("synthetic", data, "val", ["rgb"])
    assert [s["meta"]["sensor_failure"] for s in samples].count("overexposure") == 1
    assert "motionblur" not in [s["meta"]["sensor_failure"] for s in samples]
    config = tmp_path / "c.yaml"
    config.write_text(f"protocol: {{top_classes: 3, pixels_per_class: {TSNE_PIXELS}}}\n")
    db = tmp_path / "r.sqlite"
    cli("eval", "--protocol", "tsne", "--data-root", data, "--config", config, "--seed", SEED, "--weights",
        "none", "--batch-size", BATCH, "--results", db, "--checkpoint", runs("tsne")["ckpt"])
    rows = ResultsStore(db).results()
    assert value(rows, "samples", MODS, condition="overexposure") == 1
    sil = rows[rows.metric == "silhouette"]
    assert sorted(sil.condition) == ["overexposure"] * 5
