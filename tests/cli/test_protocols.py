"""Every protocol end to end through `mlebench run` and `mlebench eval`, with stored numbers
checked against an independent recomputation.

The reference loads the checkpoint a run wrote into a freshly built method and scores the split
itself, sample by sample: its own condition selection from each sample's meta, its own
corruption (seeded by the run's seed and the sample id), normalisation, zero padding to the
method's size multiple, argmax, and a ConfusionMatrix under the data set's mIoU convention.
Only the forward pass is run on the same consecutive chunks of samples as the evaluator's
``--batch-size``: a batched forward may differ from a single-sample one in the last bit of a
logit, which could flip an argmax and make an exact comparison flaky.

Also here: the MUSES and MCubeS layouts through `mlebench eval`, `mlebench bench feature-cache`,
`mlebench pretrain`, and the run options --epochs, --no-feature-cache and --split.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

from mlebench.registry import build_method
from mlebench.cli import main
from mlebench.corruptions import Corruption, apply_corruption, corruption_seed, stable_seed
from mlebench.data import dataset_info, load_dataset
from mlebench.data.synthetic import generate_synthetic
from mlebench.data.transforms import Normalize
from mlebench.engine.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from mlebench.metrics import ConfusionMatrix
from mlebench.results import ResultsStore

from tests.data.test_mcubes import make_sample as write_mcubes_sample
from tests.data.test_muses import SAMPLES as MUSES_SAMPLES
from tests.data.test_muses import write_muses

SEED = 5  # the runs' --seed: not the default, so that noise really is seeded by it
BATCH = 2  # the runs' --batch-size: 5 val samples -> batches of 2, 2 and 1
N_TRAIN, N_VAL, N_TEST = 4, 5, 2
MODS = ("rgb", "depth", "event", "lidar")
KEY = ["protocol", "test_modalities", "condition", "corruption", "metric", "class"]
TSNE_CLASSES = ["Road", "Building", "Sky"]
TSNE_PIXELS = 8


@pytest.fixture(scope="module", autouse=True)
def _module_env(one_torch_thread, tmp_path_factory: pytest.TempPathFactory):
    """Work in a private folder (runs write plots to ./runs/<run id>/), on one torch thread."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path_factory.mktemp("cwd"))
        yield


def cli(*args: Any) -> Any:
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


# --- the independent reference ------------------------------------------------------------------
def selected(meta: dict[str, Any], condition: str) -> bool:
    """Whether a sample counts for a condition: a weather, daytime or sensor failure of its own."""
    return condition == "all" or condition in {meta.get(k) for k in ("weather", "daytime", "sensor_failure")}


def fresh_method(dataset: str, ckpt: Path, modalities: Sequence[str] = MODS) -> Any:
    torch.manual_seed(12345)  # not the run's seed: nothing may depend on the global RNG state
    method = build_method("mlesam", dataset_info(dataset), list(modalities), "tiny", sam2_checkpoint=None)
    load_checkpoint(method, ckpt)
    return method.eval()


@torch.no_grad()
def predict(method: Any, samples: list[dict], modalities: Sequence[str], corruption: Corruption | None = None,
            seed: int = SEED, batch: int = BATCH) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(prediction (H, W), fused embedding (C, h, w)) of every sample."""
    norm = Normalize(method.info, method.modalities)
    out = []
    for start in range(0, len(samples), batch):
        chunk = samples[start:start + batch]
        inputs = {}
        for m in modalities:
            xs = []
            for s in chunk:
                raw = s[m]
                if corruption is not None and corruption.modality == m:
                    raw = apply_corruption(raw, corruption, corruption_seed(seed, s["meta"]["id"], corruption))
                xs.append(norm({m: raw})[m])
            inputs[m] = torch.stack(xs)
        h, w = chunk[0]["label"].shape
        mult = method.size_multiple
        ph, pw = -h % mult, -w % mult
        feats = {m: method.encode(m, F.pad(x, (0, pw, 0, ph))) for m, x in inputs.items()}
        output = method.decode(feats, (h + ph, w + pw))
        preds = output.logits[:, :, :h, :w].argmax(1)
        out += [(preds[i], output.embedding[i]) for i in range(len(chunk))]
    return out


def score(samples: list[dict], predictions: list, num_classes: int,
          condition: str = "all") -> tuple[ConfusionMatrix, int]:
    """The confusion matrix over the samples of ``condition`` (ignore 255), and their count."""
    cm, n = ConfusionMatrix(num_classes, 255), 0
    for s, (pred, _) in zip(samples, predictions):
        if selected(s["meta"], condition):
            cm.update(pred, s["label"])
            n += 1
    return cm, n


def reference(method: Any, samples: list[dict], modalities: Sequence[str], condition: str = "all",
              corruption: Corruption | None = None, batch: int = BATCH) -> dict[str, Any]:
    predictions = predict(method, samples, modalities, corruption, batch=batch)
    cm, n = score(samples, predictions, method.num_classes, condition)
    convention = method.info.miou_convention
    return {"miou": cm.miou(convention), "pixel_accuracy": cm.pixel_accuracy(),
            "mean_f1": cm.mean_f1(convention), "iou": cm.iou().tolist(), "samples": n, "matrix": cm.matrix}


def split_samples(dataset: str, root: Path, split: str, modalities: Sequence[str] = MODS) -> list[dict]:
    ds = load_dataset(dataset, root, split, list(modalities))
    return [ds[i] for i in range(len(ds))]


# --- reading the store --------------------------------------------------------------------------
def run_rows(db: Path, run_id: str):
    return ResultsStore(db).results([run_id])


def value(rows, metric: str, modalities: Sequence[str], condition: str = "all", corruption: str = "none",
          cls: str = "") -> float:
    sel = rows[(rows.metric == metric) & (rows.test_modalities == ",".join(modalities))
               & (rows.condition == condition) & (rows.corruption == corruption) & (rows["class"] == cls)]
    assert len(sel) == 1, (metric, modalities, condition, corruption, cls, len(sel))
    return float(sel.value.iloc[0])


def as_dict(rows) -> dict[tuple, float]:
    out = {tuple(r[k] for k in KEY): r.value for _, r in rows.iterrows()}
    assert len(out) == len(rows), "a result key is stored twice"
    return out


def same_values(a: dict[tuple, float], b: dict[tuple, float]) -> None:
    assert a.keys() == b.keys()
    differ = [k for k in a if not (a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])))]
    assert not differ, differ[:5]


def check_case(rows, method, samples, modalities, condition="all", corruption: Corruption | None = None,
               batch: int = BATCH) -> dict[str, Any]:
    """The stored numbers of one case equal the reference's, exactly (NaN where NaN)."""
    ref = reference(method, samples, modalities, condition, corruption, batch)
    where = dict(condition=condition, corruption=corruption.name if corruption else "none")
    assert value(rows, "samples", modalities, **where) == ref["samples"]
    for metric in ("miou", "pixel_accuracy", "mean_f1"):
        got = value(rows, metric, modalities, **where)
        if math.isnan(ref[metric]):
            assert math.isnan(got), metric
        else:
            assert got == pytest.approx(ref[metric], abs=1e-12), (metric, modalities, where)
    for name, want in zip(method.info.classes, ref["iou"]):
        got = value(rows, "iou", modalities, cls=name, **where)
        assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, abs=1e-12), name
    return ref


# --- one trained checkpoint per protocol, run and eval ------------------------------------------
@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = generate_synthetic(tmp_path_factory.mktemp("data") / "s", size=64, n_train=N_TRAIN, n_val=N_VAL,
                              n_test=N_TEST, seed=3, workers=1)
    val = [s["meta"] for s in split_samples("synthetic", root, "val", ["rgb"])]
    # What the condition checks below rely on: mixed batches, a failure alone in its batch.
    assert [(m["weather"], m["sensor_failure"]) for m in val] == [
        ("cloud", "none"), ("fog", "none"), ("night", "none"), ("rain", "motionblur"), ("sun", "overexposure")]
    return root


@pytest.fixture(scope="module")
def val_samples(root: Path) -> list[dict]:
    return split_samples("synthetic", root, "val")


PROTOCOL_CONFIG = {
    "full": "",
    "missing-modality": "",
    "noise": "protocol: {sweep: false}\n",
    "conditions": "",
    "tsne": f"protocol: {{classes: [{', '.join(TSNE_CLASSES)}], pixels_per_class: {TSNE_PIXELS}}}\n",
}


class ProtocolRuns:
    """`mlebench run --protocol P` (training 2 steps, or 2 epochs for `full`) and `mlebench eval`
    of the checkpoint it wrote, into one results file per protocol; each made once per module."""

    def __init__(self, root: Path, folder: Path) -> None:
        self.root, self.folder, self.done = root, folder, {}

    def __call__(self, protocol: str) -> dict[str, Any]:
        if protocol not in self.done:
            name = protocol.replace("-", "_")
            config = self.folder / f"{name}.yaml"
            config.write_text("train: {batch_size: 2, crop_size: 64, base_size: 64}\n" + PROTOCOL_CONFIG[protocol])
            db, ckpt = self.folder / f"{name}.sqlite", self.folder / f"{name}.pt"
            common = ["--protocol", protocol, "--data-root", self.root, "--config", config, "--seed", SEED,
                      "--weights", "none", "--batch-size", BATCH, "--results", db]
            length = ["--epochs", "2"] if protocol == "full" else ["--steps", "2"]
            trained = cli("run", *common, *length, "--save-checkpoint", ckpt)
            evaluated = cli("eval", *common, "--checkpoint", ckpt)
            runs = ResultsStore(db).runs()  # newest first
            assert list(runs.status) == ["finished", "finished"]
            eval_id, run_id = runs.id
            self.done[protocol] = {
                "db": db, "ckpt": ckpt, "config": config, "run_id": run_id, "eval_id": eval_id,
                "run_config": runs.config[1], "eval_config": runs.config[0],
                "run_rows": run_rows(db, run_id), "eval_rows": run_rows(db, eval_id),
                "run_output": trained.output, "eval_output": evaluated.output,
            }
        return self.done[protocol]


@pytest.fixture(scope="module")
def runs(root: Path, tmp_path_factory: pytest.TempPathFactory) -> ProtocolRuns:
    return ProtocolRuns(root, tmp_path_factory.mktemp("runs"))


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


# --- run options ----------------------------------------------------------------------------------
def test_epochs_set_the_steps(runs: ProtocolRuns):
    r = runs("full")  # --epochs 2 with 4 training samples in batches of 2
    assert r["run_config"]["train"]["steps"] == 2 * (N_TRAIN // 2) == 4
    assert r["run_config"]["train"]["batch_size"] == 2


def test_no_feature_cache_stores_the_same_numbers(runs: ProtocolRuns, tmp_path: Path, monkeypatch):
    r = runs("missing-modality")
    db = tmp_path / "naive.sqlite"
    import mlebench.engine.evaluate as evaluate

    forwards = []  # the uncached path: one plain forward per case and batch
    real = evaluate._case_forward
    monkeypatch.setattr(evaluate, "_case_forward", lambda *a: forwards.append(1) or real(*a))
    cli("eval", "--protocol", "missing-modality", "--data-root", runs.root, "--seed", SEED, "--weights",
        "none", "--batch-size", BATCH, "--results", db, "--checkpoint", r["ckpt"], "--no-feature-cache")
    assert len(forwards) == 15 * math.ceil(N_VAL / BATCH)
    store = ResultsStore(db)
    assert store.runs().config[0]["feature_cache"] is False
    same_values(as_dict(store.results()), as_dict(r["eval_rows"]))


def test_split_test_evaluates_the_test_split(runs: ProtocolRuns, root: Path, tmp_path: Path):
    r = runs("full")
    db = tmp_path / "test.sqlite"
    result = cli("eval", "--protocol", "full", "--data-root", root, "--seed", SEED, "--weights", "none",
                 "--batch-size", BATCH, "--results", db, "--checkpoint", r["ckpt"], "--split", "test")
    assert f"on synthetic/test ({N_TEST} samples)" in result.output
    store = ResultsStore(db)
    assert store.runs().config[0]["eval_split"] == "test"
    rows = store.results()
    assert value(rows, "samples", MODS) == N_TEST
    test_samples = split_samples("synthetic", root, "test")
    check_case(rows, fresh_method("synthetic", r["ckpt"]), test_samples, MODS)
    assert value(rows, "miou", MODS) != value(r["eval_rows"], "miou", MODS)


def test_an_option_the_protocol_does_not_take_is_a_clean_error(root: Path, tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_text("protocol: {sweep: false}\n")
    result = CliRunner().invoke(main, ["run", "--protocol", "full", "--data-root", str(root), "--config",
                                       str(config), "--results", str(tmp_path / "r.sqlite"), "--steps", "1",
                                       "--weights", "none"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert "Error:" in result.output and "sweep" in result.output


# --- MUSES and MCubeS through the evaluator -------------------------------------------------------
def perturbed_checkpoint(dataset: str, modalities: Sequence[str], out: Path) -> Path:
    """A fresh method with its trainable weights moved off their init (non-zero LoRA too)."""
    method = build_method("mlesam", dataset_info(dataset), list(modalities), "tiny", sam2_checkpoint=None)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in method.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return save_checkpoint(method, out)


@pytest.fixture(scope="module")
def muses(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("muses")
    root = write_muses(folder / "muses")
    ckpt = perturbed_checkpoint("muses", dataset_info("muses").defaults, folder / "m.pt")
    return {"root": root, "ckpt": ckpt, "folder": folder}


def _eval_layout(dataset: str, root: Path, ckpt: Path, protocol: str, split: str, db: Path, batch: int):
    cli("eval", "--dataset", dataset, "--data-root", root, "--checkpoint", ckpt, "--protocol", protocol,
        "--split", split, "--weights", "none", "--batch-size", batch, "--results", db, "--seed", SEED)
    store = ResultsStore(db)
    return store.runs().config[0], store.results([store.runs().id[0]])


def test_muses_missing_modality_and_conditions_match_the_reference(muses):
    info = dataset_info("muses")
    assert info.miou_convention == "deliver"
    mods = info.defaults
    samples = split_samples("muses", muses["root"], "train", mods)
    assert len(samples) == 4 and all((s["label"] == 255).any() for s in samples)  # ignore pixels exist
    method = fresh_method("muses", muses["ckpt"], mods)
    db = muses["folder"] / "mm.sqlite"
    config, rows = _eval_layout("muses", muses["root"], muses["ckpt"], "missing-modality", "train", db, 3)
    assert config["miou_convention"] == "deliver"
    assert len(rows[rows.metric == "miou"]) == 7
    for subset in [("frame",), ("event",), ("lidar",), ("frame", "lidar"), ("event", "lidar"), mods]:
        ref = check_case(rows, method, samples, subset, batch=3)
        assert ref["samples"] == 4
    # The deliver convention: a class absent from ground truth and prediction counts as 0.
    assert value(rows, "miou", mods) == pytest.approx(np.nan_to_num(
        reference(method, samples, mods, batch=3)["iou"], nan=0.0).mean(), abs=1e-12)
    db = muses["folder"] / "cond.sqlite"
    _, rows = _eval_layout("muses", muses["root"], muses["ckpt"], "conditions", "train", db, 3)
    counts = {"all": 4, "clear": 2, "fog": 2, "rain": 0, "snow": 0, "day": 2, "night": 2}
    assert {c: value(rows, "samples", mods, condition=c) for c in counts} == counts
    for condition in ("all", "fog", "night", "day"):
        check_case(rows, method, samples, mods, condition=condition, batch=3)


def test_muses_full_protocol_on_val(muses):
    mods = dataset_info("muses").defaults
    samples = split_samples("muses", muses["root"], "val", mods)
    assert len(samples) == 1 and samples[0]["meta"]["weather"] == MUSES_SAMPLES[4][1]
    _, rows = _eval_layout("muses", muses["root"], muses["ckpt"], "full", "val", muses["folder"] / "f.sqlite", 2)
    check_case(rows, fresh_method("muses", muses["ckpt"], mods), samples, mods)


def test_muses_ignore_pixels_never_count(muses, tmp_path: Path):
    """A sample whose label is all ignore (255) changes nothing but the sample count: every
    number equals the reference over the other samples only."""
    root = Path(shutil.copytree(muses["root"], tmp_path / "muses"))
    mods = dataset_info("muses").defaults
    first = load_dataset("muses", root, "train", ["frame"])
    label_file = first.companion_paths(first.refs[1])["label"]
    with Image.open(label_file) as image:
        shape = np.asarray(image).shape
    Image.fromarray(np.full(shape, 255, dtype=np.uint8)).save(label_file)
    samples = split_samples("muses", root, "train", mods)
    assert (samples[1]["label"] == 255).all()
    _, rows = _eval_layout("muses", root, muses["ckpt"], "full", "train", tmp_path / "r.sqlite", 3)
    assert value(rows, "samples", mods) == 4
    method = fresh_method("muses", muses["ckpt"], mods)
    predictions = predict(method, samples, mods, batch=3)
    others = [0, 2, 3]
    cm, _ = score([samples[i] for i in others], [predictions[i] for i in others], method.num_classes)
    assert cm.total == sum(int((samples[i]["label"] != 255).sum()) for i in others)
    assert value(rows, "miou", mods) == pytest.approx(cm.miou("deliver"), abs=1e-12)
    assert value(rows, "pixel_accuracy", mods) == pytest.approx(cm.pixel_accuracy(), abs=1e-12)
    for name, want in zip(method.info.classes, cm.iou().tolist()):
        got = value(rows, "iou", mods, cls=name)
        assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, abs=1e-12), name


def test_mcubes_missing_modality_matches_the_reference(tmp_path: Path):
    root = tmp_path / "multimodal_dataset"
    names = ["outscene0001_1_0000000001", "inscene0002_2_0000000002", "outscene0003_3_0000000003"]
    for seed, name in enumerate(names):
        write_mcubes_sample(root, name, seed=seed + 10, bits16=seed == 1)
    (root / "list_folder").mkdir()
    (root / "list_folder" / "train.txt").write_text("\n".join(names) + "\n")
    for split in ("val", "test"):
        (root / "list_folder" / f"{split}.txt").write_text(names[0] + "\n")
    info = dataset_info("mcubes")
    assert info.miou_convention == "deliver"
    mods = info.defaults
    ckpt = perturbed_checkpoint("mcubes", mods, tmp_path / "m.pt")
    config, rows = _eval_layout("mcubes", root, ckpt, "missing-modality", "train", tmp_path / "r.sqlite", 2)
    assert config["miou_convention"] == "deliver"
    samples = split_samples("mcubes", root, "train", mods)
    assert len(samples) == 3 and any((s["label"] == 255).any() for s in samples)
    method = fresh_method("mcubes", ckpt, mods)
    assert len(rows[rows.metric == "miou"]) == 15
    for subset in [("rgb",), ("aolp",), ("dolp", "nir"), ("rgb", "aolp", "dolp"), mods]:
        check_case(rows, method, samples, subset)


def test_data_loading_workers_change_nothing_and_bf16_eval_is_recorded(runs: ProtocolRuns, root: Path,
                                                                          tmp_path: Path):
    r = runs("missing-modality")
    db, ckpt = tmp_path / "w.sqlite", tmp_path / "w.pt"
    common = ["--protocol", "missing-modality", "--data-root", root, "--config", r["config"], "--seed", SEED,
              "--weights", "none", "--batch-size", BATCH, "--results", db]
    cli("run", *common, "--steps", "2", "--save-checkpoint", ckpt, "--num-workers", "2")
    a, b = read_checkpoint(r["ckpt"])["state_dict"], read_checkpoint(ckpt)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # 2 workers train the same weights
    run_id = ResultsStore(db).runs().id[0]
    same_values(as_dict(r["run_rows"]), as_dict(run_rows(db, run_id)))  # ... and score the same
    config = ResultsStore(db).runs().config[0]
    assert config["train"]["num_workers"] == 2 and config["eval_num_workers"] == 2 and config["eval_amp"] is False
    assert r["run_config"]["eval_num_workers"] == 0 and r["run_config"]["train"]["num_workers"] == 0  # CPU default
    cli("eval", *common, "--checkpoint", r["ckpt"], "--amp")
    runs_now = ResultsStore(db).runs()
    assert runs_now.config[0]["eval_amp"] is True
    fp32 = as_dict(r["eval_rows"])
    bf16 = as_dict(run_rows(db, runs_now.id[0]))
    assert fp32.keys() == bf16.keys()
    mious = [(fp32[k], bf16[k]) for k in fp32 if k[4] == "miou"]
    assert all(math.isfinite(b) for _, b in mious)
    assert max(abs(a - b) for a, b in mious) < 5.0  # bf16 logits: close to fp32, not bit-equal
    result = CliRunner().invoke(main, ["eval", *map(str, common), "--checkpoint", str(r["ckpt"]), "--num-workers", "-1"])
    assert result.exit_code == 2 and "--num-workers" in result.output


# --- bench and pretrain ---------------------------------------------------------------------------
def test_bench_feature_cache_json(root: Path):
    result = cli("bench", "feature-cache", "--samples", "3", "--batch-size", "2", "--data-root", root, "--json")
    report = json.loads(result.output)
    assert report["method"] == "mlesam" and report["protocol"] == "missing-modality" and report["preset"] == "tiny"
    assert report["cases"] == 15 and report["samples"] == 3 and report["batch_size"] == 2
    assert report["device"] == "cpu" and report["eval_size"] is None  # the tiny preset evaluates as stored
    assert report["miou_max_abs_diff"] == 0
    full, cached, uncached = (report["runs"][k] for k in ("full", "cached", "uncached"))
    assert (full["cases"], cached["cases"], uncached["cases"]) == (1, 15, 15)
    # Encoder passes per sample: four modalities once each; without the cache, every subset's
    # own (4 subsets of 1, 6 of 2, 4 of 3, 1 of 4 modalities: 32).
    assert (full["encoder_passes_per_sample"], cached["encoder_passes_per_sample"],
            uncached["encoder_passes_per_sample"]) == (4, 4, 32)
    for run in (full, cached, uncached):
        assert run["seconds"] > 0 and run["encode_s"] > 0 and run["decode_s"] > 0
        assert run["encode_s"] + run["decode_s"] + run["other_s"] == pytest.approx(run["seconds"])
        assert run["per_sample_s"] == run["seconds"] / 3
    assert report["ratio"] == uncached["seconds"] / cached["seconds"]  # formatting only, no timing claim
    assert report["cached_vs_full_per_sample"] == cached["per_sample_s"] / full["per_sample_s"]
    text = cli("bench", "feature-cache", "--samples", "2", "--batch-size", "2", "--data-root", root,
               "--eval-size", "96", "--protocol", "full").output
    assert "at 96 px short side" in text and "full protocol (1 case)" in text


def test_bench_decode_loader_and_throughput(root: Path):
    r = json.loads(cli("bench", "decode", "--samples", "2", "--batch-size", "2", "--repeats", "1", "--json").output)
    assert r["predictions_identical"] is True and r["image_size"] == [256, 256]
    assert r["speedup"] == r["decode_plain_s"] / r["decode_s"]
    r = json.loads(cli("bench", "loader", "--samples", "4", "--batch-size", "2", "--workers", "0,1", "--json").output)
    assert set(r["loader"]) == {"0", "1"} and all(v["train_samples_per_s"] > 0 for v in r["loader"].values())
    assert r["model_train_samples_per_s"] > 0 and r["model_eval_samples_per_s"] > 0
    result = CliRunner().invoke(main, ["bench", "loader", "--workers", "0,x"])
    assert result.exit_code == 2 and "'0,x' is not a comma-separated list of integers" in result.output
    if not torch.cuda.is_available():
        assert cli("bench", "throughput").output.strip() == (
            "bench throughput skipped: no CUDA device (torch.cuda.is_available() is False)")
    r = json.loads(cli("bench", "throughput", "--device", "cpu", "--preset", "tiny", "--steps", "1",
                       "--batch-size", "1", "--json").output)
    assert r["crop_size"] == 128 and r["eval_size"] == 128 and r["train_amp"] is False
    for key in ("train", "eval_fp32", "eval_bf16"):
        assert r[key]["images_per_s"] > 0 and r[key]["peak_gib"] is None  # no CUDA memory on CPU


def test_pretrain_writes_a_deterministic_loadable_sam2_checkpoint(tmp_path: Path):
    outs = [tmp_path / "a" / "x.pt", tmp_path / "b" / "x.pt"]
    for out in outs:
        result = cli("pretrain", "--steps", "2", "--n-images", "4", "--batch-size", "2", "--out", out)
        assert f"wrote {out}" in result.output
    blobs = [torch.load(out, map_location="cpu", weights_only=True) for out in outs]
    assert blobs[0]["model"].keys() == blobs[1]["model"].keys()
    for key, tensor in blobs[0]["model"].items():
        assert torch.equal(tensor, blobs[1]["model"][key]), key
    assert blobs[0]["mlebench_pretrain"]["final_loss"] == blobs[1]["mlebench_pretrain"]["final_loss"]
    assert blobs[0]["mlebench_pretrain"]["command"] == (
        "mlebench pretrain --method mlesam --steps 2 --batch-size 2 --lr 0.001 --seed 0 --n-images 4 --threads 2")
    method = build_method("mlesam", dataset_info("synthetic"), list(MODS), "tiny", sam2_checkpoint=str(outs[0]))
    sha = hashlib.sha256(outs[0].read_bytes()).hexdigest()
    assert method.frozen_source == f"sam2:{sha[:16]}"
    # Every SAM2 weight but the class-specific decoder parts (fresh for this data set's classes)
    # comes from the file.
    own, fresh = method.state_dict(), set(method.sam2_load_summary["fresh"])
    assert set(blobs[0]["model"]) <= set(own)
    loaded = [k for k in blobs[0]["model"] if k not in fresh]
    assert len(loaded) == method.sam2_load_summary["loaded"]
    assert sum(k.startswith("image_encoder.trunk.") for k in loaded) > 50
    for key in loaded:
        assert torch.equal(own[key], blobs[0]["model"][key]), key
