"""Training augmentation: DELIVER's pipeline step by step (against the same steps written with
torchvision's functions, and the reference's size arithmetic and crop-offset quirk); one
geometric transform (scale, crop, flip) for every modality and the label, pixel-exact; ignore
padding of the label; colour jitter and blur on RGB only; and the training view, seeded per
sample and epoch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from mlebench.data import load_dataset
from mlebench.data.augment import TrainAugment, TrainingView, resized_shape
from mlebench.data.transforms import Normalize

MODALITIES = ["rgb", "depth", "event", "lidar"]


def _ramp_sample(h: int = 32, w: int = 32) -> dict:
    label = torch.arange(h * w).reshape(h, w) % 25
    sample = {"label": label}
    for i, m in enumerate(["rgb", "depth", "lidar"]):
        sample[m] = (label * 10 + i).to(torch.uint8).expand(3, h, w).clone()
    return sample


def test_geometric_augmentation_is_consistent_across_modalities():
    augment = TrainAugment(crop_size=32, scale_range=(1.0, 1.0), jitter_p=0.0, blur_p=0.0, flip_p=0.5,
                           crop_offsets="exact")
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
    augment = TrainAugment(crop_size=16, base_size=32, scale_range=(1.0, 1.0), jitter_p=0.0, blur_p=0.0,
                           crop_offsets="exact")
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
    augment = TrainAugment(crop_size=48, scale_range=(0.5, 0.5), jitter_p=0.0, blur_p=0.0, flip_p=0.0,
                           crop_offsets="exact")
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
    augment = TrainAugment(crop_size=32, scale_range=(1.0, 1.0), flip_p=0.0, jitter_p=1.0, blur_p=1.0,
                           crop_offsets="exact")
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


# --- the reference pipeline, written with torchvision's functions ----------------------------------
def _reference(sample: dict, modalities: list[str], seed: int, crop: int, base: int,
               jitter_p: float = 0.2, flip_p: float = 0.5, blur_p: float = 0.2) -> dict:
    """DELIVER's get_train_augmentation (augmentations_mm.py l. 365-372) with the same draws,
    in the reference's order: jitter (l. 51-57), flip (l. 113-115), blur (l. 102-103), resized
    crop (l. 329-359: resize, crop with randint(0, margin + 1), then pad)."""
    g = torch.Generator().manual_seed(seed)

    def rand() -> float:
        return float(torch.rand((), generator=g))

    out = {m: sample[m].float() for m in modalities}
    mask = sample["label"][None]
    if rand() < jitter_p:
        b, c, s = (0.5 + rand() for _ in range(3))
        x = out["rgb"] / 255
        out["rgb"] = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(x, b), c), s) * 255
    if rand() < flip_p:
        out = {m: TF.hflip(x) for m, x in out.items()}
        mask = TF.hflip(mask)
    if rand() < blur_p:
        out["rgb"] = TF.gaussian_blur(out["rgb"] / 255, [3, 3]) * 255
    ratio = 0.5 + 1.5 * rand()
    h, w = mask.shape[1:]
    scale = int(base * ratio), int(base * 4 * ratio)
    factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    nh, nw = int(h * factor + 0.5), int(w * factor + 0.5)
    out = {m: TF.resize(x, [nh, nw], InterpolationMode.BILINEAR, antialias=False) for m, x in out.items()}
    mask = TF.resize(mask, [nh, nw], InterpolationMode.NEAREST)
    y1 = int(torch.randint(0, max(nh - crop, 0) + 2, (), generator=g))
    x1 = int(torch.randint(0, max(nw - crop, 0) + 2, (), generator=g))
    out = {m: x[:, y1 : y1 + crop, x1 : x1 + crop] for m, x in out.items()}
    mask = mask[:, y1 : y1 + crop, x1 : x1 + crop]
    pad = [0, 0, crop - mask.shape[2], crop - mask.shape[1]]
    out = {m: TF.pad(x, pad, fill=0) for m, x in out.items()}
    out["label"] = TF.pad(mask, pad, fill=255)[0]
    return out


def _photo_sample(h: int = 40, w: int = 56) -> dict:
    g = torch.Generator().manual_seed(7)
    return {"rgb": torch.randint(0, 256, (3, h, w), generator=g).float(),
            "depth": torch.randint(0, 256, (3, h, w), generator=g).float(),
            "label": torch.randint(0, 25, (h, w), generator=g)}


@pytest.mark.parametrize("probabilities", [{}, {"jitter_p": 1.0, "flip_p": 1.0, "blur_p": 1.0}])
def test_pipeline_is_the_reference_step_by_step(probabilities):
    """Every step, range, order and draw of DELIVER's pipeline: over seeds that cover scaling up
    and down, flips, and (second case) jitter and blur every time."""
    sample = _photo_sample()
    augment = TrainAugment(crop_size=32, **probabilities)
    for seed in range(12):
        ours = augment(sample, ["rgb", "depth"], torch.Generator().manual_seed(seed))
        expected = _reference(sample, ["rgb", "depth"], seed, crop=32, base=32, **probabilities)
        assert torch.equal(ours["label"], expected["label"]), seed
        for m in ("rgb", "depth"):
            torch.testing.assert_close(ours[m], expected[m], atol=1e-3, rtol=0, msg=f"seed {seed}, {m}")


def test_resized_shape_is_the_references_arithmetic():
    # short side to int(tH * ratio) (rounded as int(x + 0.5) after the factor) ...
    assert resized_shape(1024, 1024, 0.5, (1024, 1024)) == (512, 512)
    assert resized_shape(40, 56, 1.0, (32, 32)) == (32, 45)  # 56 * 0.8 = 44.8 -> 45
    assert resized_shape(1080, 1920, 1.3, (1024, 1024)) == (1331, 2366)  # factor 1331/1080
    # ... unless the image is wider than 4:1: then the long side is capped at int(4 tW ratio)
    assert resized_shape(100, 500, 1.0, (64, 64)) == (51, 256)  # factor min(256/500, 64/100)


def test_reference_crop_offsets_include_the_one_past_the_margin():
    """randint(0, margin + 1) is inclusive: offset margin + 1 cuts one pixel short, and the pad
    fills that row or column (label 255, modalities 0). ``exact`` never does."""
    sample = _photo_sample(32, 32)
    offsets: dict[str, set] = {"reference": set(), "exact": set()}
    for policy in offsets:
        augment = TrainAugment(crop_size=32, scale_range=(1.0, 1.0), jitter_p=0, flip_p=0, blur_p=0,
                               crop_offsets=policy)
        for seed in range(40):
            out = augment(sample, ["rgb"], torch.Generator().manual_seed(seed))
            short_rows, short_cols = out["label"][-1].eq(255).all(), out["label"][:, -1].eq(255).all()
            offsets[policy].add((bool(short_rows), bool(short_cols)))
            if short_rows:
                assert out["rgb"][:, -1].eq(0).all()
    assert offsets["exact"] == {(False, False)}
    assert (True, False) in offsets["reference"] and (False, True) in offsets["reference"]


def test_an_unknown_crop_offset_policy_is_refused():
    with pytest.raises(ValueError, match="unknown crop_offsets 'loose'"):
        TrainAugment(32, crop_offsets="loose")
