"""Augmentation, schedule and a few real training steps of the tiny preset on synthetic data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from methods import build_method
from mlebench.data import load_dataset
from mlebench.data.augment import TrainAugment, TrainingView
from mlebench.data.synthetic import generate_synthetic
from mlebench.data.transforms import Normalize
from mlebench.engine.train import TrainConfig, train, warmup_poly_factor

MODALITIES = ["rgb", "depth", "event", "lidar"]


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "set"
    return generate_synthetic(root, size=64, n_train=8, n_val=2, n_test=2, seed=3, workers=1)


def test_warmup_poly_schedule():
    assert warmup_poly_factor(0, 100, 10, 0.1, 0.9) == pytest.approx(0.1)
    assert warmup_poly_factor(5, 100, 10, 0.1, 0.9) == pytest.approx(0.55)
    assert warmup_poly_factor(10, 100, 10, 0.1, 0.9) == pytest.approx(1.0)
    assert warmup_poly_factor(55, 100, 10, 0.1, 0.9) == pytest.approx(0.5**0.9)
    assert warmup_poly_factor(100, 100, 10, 0.1, 0.9) == 0.0


def _ramp_sample(h: int = 32, w: int = 32) -> dict:
    label = torch.arange(h * w).reshape(h, w) % 25
    sample = {"label": label}
    for i, m in enumerate(["rgb", "depth", "lidar"]):
        sample[m] = (label * 10 + i).to(torch.uint8).expand(3, h, w).clone()
    return sample


def test_geometric_augmentation_is_consistent_across_modalities():
    augment = TrainAugment(crop_size=32, scale_range=(1.0, 1.0), jitter_p=0.0, blur_p=0.0, flip_p=0.5)
    flips = set()
    for seed in range(12):
        out = augment(_ramp_sample(), ["rgb", "depth", "lidar"], torch.Generator().manual_seed(seed))
        for i, m in enumerate(["rgb", "depth", "lidar"]):
            assert torch.equal(out[m][0], (out["label"] * 10 + i).float()), (seed, m)
        flips.add(bool(out["label"][0, 0] != 0))
    assert flips == {True, False}  # both flipped and unflipped draws occurred


def test_scale_and_crop_pad_the_label_with_ignore():
    augment = TrainAugment(crop_size=48, scale_range=(0.5, 0.5), jitter_p=0.0, blur_p=0.0)
    out = augment(_ramp_sample(), ["rgb"], torch.Generator().manual_seed(0))
    assert out["label"].shape == (48, 48) and out["rgb"].shape == (3, 48, 48)
    values = set(out["label"].unique().tolist())
    assert 255 in values and values - {255} <= set(range(25))


def test_colour_jitter_and_blur_touch_rgb_only():
    augment = TrainAugment(crop_size=32, scale_range=(1.0, 1.0), flip_p=0.0, jitter_p=1.0, blur_p=1.0)
    sample = _ramp_sample()
    out = augment(sample, ["rgb", "depth"], torch.Generator().manual_seed(0))
    assert torch.equal(out["depth"], sample["depth"].float())
    assert not torch.equal(out["rgb"], sample["rgb"].float())


def test_training_view_is_seeded_per_sample(synthetic_root: Path):
    ds = load_dataset("synthetic", synthetic_root, "train", MODALITIES)
    view = TrainingView(ds, TrainAugment(32), seed=1)
    a, b = view[3], view[3]
    assert all(torch.equal(a[m], b[m]) for m in MODALITIES + ["label"])
    view.set_epoch(1)
    assert not torch.equal(view[3]["rgb"], a["rgb"])
    plain = Normalize(ds.info, MODALITIES)(ds[3])
    assert not torch.equal(plain["rgb"], a["rgb"]) and a["rgb"].dtype == torch.float32


def _fixed_batch_loss(model, ds) -> float:
    norm = Normalize(ds.info, MODALITIES)
    samples = [norm(ds[i]) for i in range(len(ds))]
    batch = {m: torch.stack([s[m] for s in samples]) for m in MODALITIES}
    target = torch.stack([s["label"] for s in samples])
    model.eval()
    with torch.no_grad():
        return float(model.loss(model(batch), target))


def test_a_few_tiny_steps_lower_the_loss_and_are_deterministic(synthetic_root: Path):
    ds = load_dataset("synthetic", synthetic_root, "train", MODALITIES)
    config = TrainConfig(steps=25, batch_size=4, crop_size=64, lr=2e-3, log_every=5)
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_method("mlesam", ds.info, MODALITIES, "tiny", sam2_checkpoint=None)
        before = _fixed_batch_loss(model, ds)
        logged = train(model, ds, config)
        after = _fixed_batch_loss(model, ds)
        assert len(logged) == 5
        assert after < 0.8 * before, (before, after)
        models.append(model)
    for (name, a), b in zip(models[0].trainable_state_dict().items(), models[1].trainable_state_dict().values()):
        assert torch.equal(a, b), name
