"""Training augmentation: one geometric transform (scale, crop, flip) for every modality and the
label, pixel-exact; ignore padding of the label; colour jitter and blur on RGB only; and the
training view, seeded per sample and epoch."""

from __future__ import annotations

from pathlib import Path

import torch

from mlebench.data import load_dataset
from mlebench.data.augment import TrainAugment, TrainingView
from mlebench.data.transforms import Normalize

MODALITIES = ["rgb", "depth", "event", "lidar"]


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
