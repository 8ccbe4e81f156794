"""The MUSES and MCubeS layouts through `mlebench eval`, checked against the independent reference
(reference.py): missing-modality and conditions on MUSES, its full protocol on val, ignore pixels
that never count, and missing-modality on MCubeS (the `deliver` mIoU convention throughout)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
import torch
from PIL import Image

from mlebench.data import dataset_info, load_dataset
from mlebench.engine.checkpoint import save_checkpoint
from mlebench.registry import build_method
from mlebench.results import ResultsStore
from tests.data.test_mcubes import make_sample as write_mcubes_sample
from tests.data.test_muses import SAMPLES as MUSES_SAMPLES
from tests.data.test_muses import write_muses

from .reference import SEED, check_case, cli, fresh_method, predict, reference, score, split_samples, value

pytestmark = pytest.mark.usefixtures("_module_env")


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
