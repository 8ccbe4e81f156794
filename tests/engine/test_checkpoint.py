"""Method checkpoints: every identity field is checked on load, and the message names it; weights
holding NaN or infinite values are refused before anything is loaded, and the file is untouched."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from mlebench.registry import build_method
from mlebench.data import dataset_info
from mlebench.engine.checkpoint import checkpoint_identity, load_checkpoint, read_checkpoint, save_checkpoint
from mlebench.errors import ConfigError

RD = ("rgb", "depth")


def _method(name: str = "mlesam", modalities=RD, dataset: str = "synthetic", **options):
    return build_method(name, dataset_info(dataset), modalities, "tiny", sam2_checkpoint=None, **options)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    m = _method()
    with torch.no_grad():
        for p in m.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))
    return save_checkpoint(m, tmp_path_factory.mktemp("ckpt") / "m.pt", extra={"step": 7})


def test_round_trip_restores_every_trainable_tensor(saved: Path):
    fresh = _method()
    assert load_checkpoint(fresh, saved) == {"step": 7}
    stored = read_checkpoint(saved)["state_dict"]
    own = fresh.trainable_state_dict()
    assert own.keys() == stored.keys()
    assert all(torch.equal(own[k], stored[k]) for k in own)


def test_identity_lists_every_field():
    assert set(checkpoint_identity(_method())) == {
        "method", "variant", "dataset", "classes", "modalities", "preset", "frozen_source"}


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("method", "mlesam-noaux", "is for method 'mlesam-noaux', but this run uses 'mlesam'"),
        ("variant", "integrated+aux", "is for variant 'integrated+aux', but this run uses 'unified+aux'"),
        ("dataset", "deliver", "is for dataset 'deliver', but this run uses 'synthetic'"),
        ("modalities", ["rgb", "lidar"], "is for modalities ['rgb', 'lidar'], but this run uses ['rgb', 'depth']"),
        ("preset", "paper", "is for preset 'paper', but this run uses 'tiny'"),
        ("frozen_source", "sam2:0123456789abcdef", "is for frozen_source 'sam2:0123456789abcdef', but this run uses "
                                                   "'seed:0'"),
    ],
)
def test_each_identity_field_is_refused_on_mismatch(saved: Path, tmp_path: Path, field, value, message):
    """A checkpoint whose one identity field differs is refused, naming the field; the weights
    of the method are left untouched."""
    blob = torch.load(saved, weights_only=True)
    blob[field] = value
    doctored = tmp_path / "doctored.pt"
    torch.save(blob, doctored)
    fresh = _method()
    before = {k: v.clone() for k, v in fresh.trainable_state_dict().items()}
    with pytest.raises(ConfigError, match=re.escape(f"checkpoint {doctored} {message}")):
        load_checkpoint(fresh, doctored)
    after = fresh.trainable_state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_class_lists_are_compared_name_by_name(saved: Path, tmp_path: Path):
    blob = torch.load(saved, weights_only=True)
    classes = list(blob["classes"])
    classes[3] = "Unicorn"
    torch.save({**blob, "classes": classes}, tmp_path / "a.pt")
    with pytest.raises(ConfigError, match=f"class 3 is 'Unicorn', this run's is '{blob['classes'][3]}'"):
        load_checkpoint(_method(), tmp_path / "a.pt")
    torch.save({**blob, "classes": classes[:-1]}, tmp_path / "b.pt")
    with pytest.raises(ConfigError, match="was trained on 24 classes, this run has 25"):
        load_checkpoint(_method(), tmp_path / "b.pt")


def test_real_mismatches_are_refused(saved: Path):
    """Not doctored files: methods that really differ in one respect."""
    for other, message in [
        (_method(init_seed=1), "is for frozen_source 'seed:0', but this run uses 'seed:1'"),
        (_method("mlesam-weighted"), "is for method 'mlesam', but this run uses 'mlesam-weighted'"),
        (_method(modalities=("rgb", "depth", "event")), "is for modalities"),
        (_method(dataset="deliver"), "is for dataset 'synthetic', but this run uses 'deliver'"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_checkpoint(other, saved)


def test_missing_and_misshapen_weights_are_named(saved: Path, tmp_path: Path):
    blob = torch.load(saved, weights_only=True)
    state = dict(blob["state_dict"])
    key = sorted(state)[0]
    del state[key]
    torch.save({**blob, "state_dict": state}, tmp_path / "missing.pt")
    with pytest.raises(ConfigError, match=f"missing: \\['{key}'\\]"):
        load_checkpoint(_method(), tmp_path / "missing.pt")
    state = dict(blob["state_dict"])
    state[key] = torch.zeros(3, 3)
    torch.save({**blob, "state_dict": state}, tmp_path / "shape.pt")
    with pytest.raises(ConfigError, match=f"{key} has shape \\(3, 3\\)"):
        load_checkpoint(_method(), tmp_path / "shape.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="checkpoint .*junk.pt is a text file, not a checkpoint"):
        load_checkpoint(_method(), tmp_path / "junk.pt")


@pytest.mark.parametrize("value", [math.nan, -math.inf])
def test_checkpoint_with_non_finite_weights_is_refused_untouched(tmp_path: Path, value: float):
    from mlebench.engine.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    method = _method()
    path = save_checkpoint(method, tmp_path / "m.pt", extra={"step": 3})
    blob = torch.load(path, weights_only=True)
    keys = list(blob["state_dict"])
    first_bad, later_bad = keys[len(keys) // 2], keys[-1]
    for key in (first_bad, later_bad):
        blob["state_dict"][key] = blob["state_dict"][key].clone()
        blob["state_dict"][key].view(-1)[0] = value
    torch.save(blob, path)
    saved = path.read_bytes()

    target = _method()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(ConfigError, match=re.escape(f"checkpoint {path} holds NaN or infinite weights: {first_bad} "
                                                    f"has 1 of ")):
        load_checkpoint(target, path)
    after = target.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing half-loaded
    assert path.read_bytes() == saved


def test_weights_that_cannot_be_written_are_rescued_and_the_error_names_both(tmpfs, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch):
    """A checkpoint on a disk that filled up during training: one line saying the disk is full
    and where the trained weights went instead; the rescued file loads into the method."""
    import tempfile

    from mlebench.engine.checkpoint import save_or_rescue
    from mlebench.errors import OutputError

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    method = _method()
    with torch.no_grad():
        for p in method.parameters():
            if p.requires_grad:
                p.add_(0.5)
    full = tmpfs("full", full=True)
    with pytest.raises(OutputError) as raised:
        save_or_rescue(method, full / "m.pt", extra={"step": 7})
    text = str(raised.value)
    assert text.startswith(f"cannot write {full / 'm.pt'}: the disk is full (no space left on device); the trained "
                           f"weights were written to {tmp_path / 'tmp' / 'mlebench-rescued'}/m-")
    rescued = next((tmp_path / "tmp" / "mlebench-rescued").glob("m-*.pt"))
    assert f"--save-checkpoint {rescued} --resume" in text and not (full / "m.pt").exists()
    fresh = _method()
    assert load_checkpoint(fresh, rescued)["step"] == 7
    assert all(torch.equal(a, b) for a, b in zip(fresh.trainable_state_dict().values(),
                                                 method.trainable_state_dict().values()))
