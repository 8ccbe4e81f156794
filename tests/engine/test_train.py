"""Training: the warm-up and poly schedule, the learning rate each step uses, the logged loss after
a resume, a non-finite loss that names only a checkpoint that exists, and a few real training
steps of the tiny preset on synthetic data (augmentation: data/test_augment.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mlebench.registry import build_method
from mlebench.data import load_dataset
from mlebench.data.transforms import Normalize
from mlebench.engine.checkpoint import read_checkpoint
from mlebench.engine.train import NonFiniteLoss, TrainConfig, train, warmup_poly_factor

from ..helpers import ProbeMethod

MODALITIES = ["rgb", "depth", "event", "lidar"]


@pytest.fixture(scope="module")
def root(small_synthetic: Path) -> Path:
    """The small synthetic set (tests/conftest.py)."""
    return small_synthetic


def test_warmup_poly_schedule():
    assert warmup_poly_factor(0, 100, 10, 0.1, 0.9) == pytest.approx(0.1)
    assert warmup_poly_factor(5, 100, 10, 0.1, 0.9) == pytest.approx(0.55)
    assert warmup_poly_factor(10, 100, 10, 0.1, 0.9) == pytest.approx(1.0)
    assert warmup_poly_factor(55, 100, 10, 0.1, 0.9) == pytest.approx(0.5**0.9)
    assert warmup_poly_factor(100, 100, 10, 0.1, 0.9) == 0.0
    assert warmup_poly_factor(120, 100, 10, 0.1, 0.9) == 0.0  # past the end: stays at 0
    assert warmup_poly_factor(9, 100, 10, 0.1, 0.9) == pytest.approx(0.1 + 0.9 * 0.9)
    assert warmup_poly_factor(91, 100, 10, 0.1, 0.9) == pytest.approx(0.1**0.9)  # 9 of 90 left
    assert warmup_poly_factor(30, 40, 0, 0.1, 2.0) == pytest.approx(0.25**2)  # no warm-up
    assert warmup_poly_factor(0, 40, 0, 0.1, 2.0) == 1.0


class _Probe(torch.nn.Module):
    """A stand-in method: one weight, a loss that needs no model, and the data set's API."""

    def __init__(self, modalities):
        super().__init__()
        self.modalities = list(modalities)
        self.weight = torch.nn.Parameter(torch.ones(()))

    def forward(self, inputs):
        return None

    def loss(self, output, target):
        return self.weight * 0.0 + (self.weight - 3.0) ** 2


def _recorded_learning_rates(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """A list that gets the learning rate of every AdamW step from now on."""
    used: list[float] = []
    real_step = torch.optim.AdamW.step

    def recording(self, *args, **kwargs):
        used.append(self.param_groups[0]["lr"])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording)
    return used


def test_training_steps_follow_the_schedule(synthetic_root: Path, monkeypatch: pytest.MonkeyPatch):
    """The learning rate each optimizer step uses: lr x warmup_poly_factor(step), from step 0."""
    ds = load_dataset("synthetic", synthetic_root, "train", ["rgb"])
    used = _recorded_learning_rates(monkeypatch)
    config = TrainConfig(steps=20, batch_size=2, crop_size=32, lr=0.5, warmup_fraction=0.2,
                         warmup_ratio=0.1, power=0.9, log_every=10)
    logged = train(_Probe(["rgb"]), ds, config)
    # Warm-up over 4 steps from 0.1 lr, then (1 - (s - 4) / 16)^0.9.
    expected = [0.5 * (0.1 + 0.9 * s / 4) for s in range(4)]
    expected += [0.5 * (1 - (s - 4) / 16) ** 0.9 for s in range(4, 20)]
    assert used == pytest.approx(expected)
    assert len(logged) == 2


def test_cosine_schedule_and_warmup_steps(synthetic_root: Path, monkeypatch: pytest.MonkeyPatch):
    """``schedule: cosine`` (CWSAM's CosineAnnealingLR to ``min_lr``, per step), and a warm-up
    given in steps (SAMed's 250 iterations) instead of a fraction."""
    ds = load_dataset("synthetic", synthetic_root, "train", ["rgb"])
    used = _recorded_learning_rates(monkeypatch)
    config = TrainConfig(steps=12, batch_size=2, crop_size=32, lr=0.5, schedule="cosine", min_lr=0.01,
                         warmup_fraction=0.0, log_every=10)
    train(_Probe(["rgb"]), ds, config)
    # torch's own CosineAnnealingLR, stepped once per step with T_max = 12, gives the same rates
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(()))], lr=0.5)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=12, eta_min=0.01)
    expected = []
    for _ in range(12):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        cosine.step()
    assert used == pytest.approx(expected)
    used.clear()
    train(_Probe(["rgb"]), ds, TrainConfig(steps=10, batch_size=2, crop_size=32, lr=1.0, warmup_steps=4,
                                           warmup_fraction=0.5, warmup_ratio=0.25, power=1.0, log_every=10))
    assert used == pytest.approx([0.25, 0.4375, 0.625, 0.8125] + [1 - s / 6 for s in range(6)])


class _Checkpointable(_Probe):
    """The probe with what checkpoints need, and a loss that can 'kill' the run at a call."""

    method_name, variant, preset, frozen_source = "probe", "probe", "tiny", "none"
    versioned_packages: tuple[str, ...] = ()

    def __init__(self, info, kill_at: int | None = None):
        super().__init__(["rgb"])
        self.info, self.kill_at, self.calls = info, kill_at, 0

    def loss(self, output, target):
        self.calls += 1
        if self.calls == self.kill_at:
            raise KeyboardInterrupt("killed")
        return super().loss(output, target)

    def config_dict(self):
        return {}

    def trainable_state_dict(self):
        return {"weight": self.weight.detach().clone()}


def test_resumed_run_logs_the_mean_over_its_own_steps(synthetic_root: Path, tmp_path: Path):
    ds = load_dataset("synthetic", synthetic_root, "train", ["rgb"])

    def config(log_every: int) -> TrainConfig:
        return TrainConfig(steps=10, batch_size=2, crop_size=32, lr=0.1, log_every=log_every, checkpoint_every=5)

    # Uninterrupted, logging every 5 steps: the second value is the mean loss of steps 6-10.
    uninterrupted = train(_Checkpointable(ds.info), ds, config(5))
    # Killed in step 7 (checkpoint at 5), resumed: it runs steps 6-10 and logs once, at 10.
    checkpoint = tmp_path / "ckpt.pt"
    with pytest.raises(KeyboardInterrupt):
        train(_Checkpointable(ds.info, kill_at=7), ds, config(10), checkpoint=checkpoint)
    resumed = train(_Checkpointable(ds.info), ds, config(10), checkpoint=checkpoint, resume=True)
    assert resumed == pytest.approx([uninterrupted[1]])  # logs about half of it today


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
    models, logs = [], []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_method("mlesam", ds.info, MODALITIES, "tiny", sam2_checkpoint=None)
        before = _fixed_batch_loss(model, ds)
        logged = train(model, ds, config)
        after = _fixed_batch_loss(model, ds)
        assert len(logged) == 5
        assert after < 0.8 * before, (before, after)
        models.append(model)
        logs.append(logged)
    assert logs[0] == logs[1]  # bit-identical runs log identical losses
    for (name, a), b in zip(models[0].trainable_state_dict().items(), models[1].trainable_state_dict().values()):
        assert torch.equal(a, b), name


def test_non_finite_loss_names_only_a_checkpoint_that_exists(root: Path, tmp_path: Path):
    ds = load_dataset("synthetic", root, "train", ["rgb"])
    config = TrainConfig(steps=6, batch_size=2, crop_size=32, log_every=1, checkpoint_every=2)
    ckpt = tmp_path / "m.pt"
    with pytest.raises(NonFiniteLoss) as caught:
        train(ProbeMethod(ds.info, nan_from=1), ds, config, checkpoint=ckpt)
    assert str(caught.value) == "loss became nan at step 1; no checkpoint was written yet (try a lower learning rate)"
    assert not ckpt.exists()
    stale = tmp_path / "stale.pt"  # an older run's file at the (stable) path: not this run's
    stale.write_bytes(b"PK\x03\x04 older")
    with pytest.raises(NonFiniteLoss, match="no checkpoint was written yet"):
        train(ProbeMethod(ds.info, nan_from=1), ds, config, checkpoint=stale)
    assert stale.read_bytes() == b"PK\x03\x04 older"
    with pytest.raises(NonFiniteLoss) as caught:
        train(ProbeMethod(ds.info, nan_from=4), ds, config, checkpoint=ckpt)
    assert f"at step 4; the last good checkpoint is kept at {ckpt} (step 2)" in str(caught.value)
    assert read_checkpoint(ckpt)["extra"]["step"] == 2
