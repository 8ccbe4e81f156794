"""Augmentation, schedule and a few real training steps of the tiny preset on synthetic data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mlebench.registry import build_method
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


def test_training_steps_follow_the_schedule(synthetic_root: Path, monkeypatch: pytest.MonkeyPatch):
    """The learning rate each optimizer step uses: lr x warmup_poly_factor(step), from step 0."""
    ds = load_dataset("synthetic", synthetic_root, "train", ["rgb"])
    used: list[float] = []
    real_step = torch.optim.AdamW.step

    def recording(self, *args, **kwargs):
        used.append(self.param_groups[0]["lr"])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording)
    config = TrainConfig(steps=20, batch_size=2, crop_size=32, lr=0.5, warmup_fraction=0.2,
                         warmup_ratio=0.1, power=0.9, log_every=10)
    logged = train(_Probe(["rgb"]), ds, config)
    # Warm-up over 4 steps from 0.1 lr, then (1 - (s - 4) / 16)^0.9.
    expected = [0.5 * (0.1 + 0.9 * s / 4) for s in range(4)]
    expected += [0.5 * (1 - (s - 4) / 16) ** 0.9 for s in range(4, 20)]
    assert used == pytest.approx(expected)
    assert len(logged) == 2


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


def test_one_random_crop_cuts_every_modality_and_the_label():
    """Crop 16 of 32 at scale 1: every output is the same window of its input, pixel-exact."""
    h = w = 32
    ids = torch.arange(h * w).reshape(h, w)  # every pixel its own value: the window shows
    sample = {"label": ids, "rgb": torch.stack([ids % 256, (ids * 7) % 256, 255 - ids % 256]).float(),
              "depth": (-ids.float()).expand(3, h, w), "lidar": ids.float().expand(3, h, w) + 0.5}
    augment = TrainAugment(crop_size=16, base_size=32, scale_range=(1.0, 1.0), jitter_p=0.0, blur_p=0.0)
    windows = set()
    for seed in range(16):
        out = augment(sample, ["rgb", "depth", "lidar"], torch.Generator().manual_seed(seed))
        label = out["label"]
        flipped = bool(label[0, 0] > label[0, 1])
        corner = int(label[0, -1] if flipped else label[0, 0])
        top, left = divmod(corner, w)
        window = (slice(top, top + 16), slice(left, left + 16))
        expected = ids[window].flip(-1) if flipped else ids[window]
        assert torch.equal(label, expected), seed
        for m in ("rgb", "depth", "lidar"):
            crop = sample[m][(slice(None), *window)]
            # (RGB passes through /255 and *255 for the colour ops: equal up to rounding.)
            torch.testing.assert_close(out[m], crop.flip(-1) if flipped else crop, atol=1e-4, rtol=0)
        windows.add((top, left, flipped))
    # The window is drawn at random, and so is the flip.
    assert len({(t, l) for t, l, _ in windows}) > 8 and {f for _, _, f in windows} == {True, False}
    again = augment(sample, ["rgb", "depth", "lidar"], torch.Generator().manual_seed(15))
    assert torch.equal(again["label"], label) and torch.equal(again["rgb"], out["rgb"])


def test_scale_and_crop_pad_the_label_with_ignore():
    # Scale 0.5 of a 48 crop on a 32 px image: short side 24 (factor 3/4), then padded to 48
    # (right and bottom), so the only crop is the whole padded image.
    augment = TrainAugment(crop_size=48, scale_range=(0.5, 0.5), jitter_p=0.0, blur_p=0.0, flip_p=0.0)
    sample = _ramp_sample()
    out = augment(sample, ["rgb"], torch.Generator().manual_seed(0))
    assert out["label"].shape == (48, 48) and out["rgb"].shape == (3, 48, 48)
    # Nearest neighbour for the label: output pixel i reads input pixel floor(i * 32 / 24).
    src = [i * 32 // 24 for i in range(24)]
    expected = torch.full((48, 48), 255)
    expected[:24, :24] = sample["label"][src][:, src]
    assert torch.equal(out["label"], expected)
    assert torch.equal(out["rgb"][:, 24:, :], torch.zeros(3, 24, 48))  # modalities pad with 0
    assert torch.equal(out["rgb"][:, :, 24:], torch.zeros(3, 48, 24))
    bilinear = torch.nn.functional.interpolate(sample["rgb"][None].float(), size=(24, 24), mode="bilinear")
    torch.testing.assert_close(out["rgb"][:, :24, :24], bilinear[0])


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
    epoch1 = view[3]
    assert not torch.equal(epoch1["rgb"], a["rgb"])
    # Index epoch * len + i is sample i of that epoch (what the batch sampler hands out).
    view.set_epoch(0)
    assert all(torch.equal(view[len(ds) + 3][m], epoch1[m]) for m in MODALITIES + ["label"])
    other_seed = TrainingView(ds, TrainAugment(32), seed=2)
    assert not torch.equal(other_seed[3]["rgb"], a["rgb"])
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
