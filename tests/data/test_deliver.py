"""The DELIVER loader against a fixture in the real layout, and its bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mlebench.data import dataset_info, dataset_names, load_dataset
from mlebench.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Normalize
from mlebench.errors import ConfigError, DataError

from ..helpers import deliver_path

from ..conftest import DELIVER_SAMPLES, H, W, deliver_arrays, save_png

ALL = ["rgb", "depth", "depth_raw", "event", "lidar"]


def test_registry_lists_the_four_data_sets():
    assert {"deliver", "mcubes", "muses", "synthetic"} <= set(dataset_names())
    info = dataset_info("deliver")
    assert info.num_classes == 25
    assert info.classes[0] == "Building" and info.classes[-1] == "Truck"
    assert len(info.palette) == 25
    assert info.defaults == ("rgb", "depth", "event", "lidar")


def test_decodes_every_modality_as_stored(deliver_root: Path):
    ds = load_dataset("deliver", deliver_root, "train", ALL)
    assert len(ds) == 3
    # Sorted by path: cloud/... before night/...
    assert [r.id for r in ds.refs] == [
        "cloud/MAP_1_point2/000001",
        "cloud/MAP_1_point2/000002",
        "night/MAP_3_point7_overexposure/000003",
    ]
    sample = ds[0]
    raw = deliver_arrays(0)
    assert sample["rgb"].dtype == torch.uint8 and sample["rgb"].shape == (3, H, W)
    assert np.array_equal(sample["rgb"].numpy(), raw["rgb"].transpose(2, 0, 1))
    # 4 channels cut to 3.
    assert np.array_equal(sample["depth"].numpy(), raw["depth"][:, :, :3].transpose(2, 0, 1))
    # 1 channel repeated to 3.
    assert np.array_equal(sample["lidar"].numpy(), np.stack([raw["lidar"]] * 3))
    # 16-bit depth rescaled to the common 0..255 scale.
    assert sample["depth_raw"].dtype == torch.float32
    assert torch.allclose(
        sample["depth_raw"][0], torch.from_numpy(raw["depth_raw"].astype(np.float32) * 255 / 65535)
    )
    assert torch.equal(sample["depth_raw"][0], sample["depth_raw"][1])
    assert torch.equal(sample["depth_raw"][0], sample["depth_raw"][2])


def test_16bit_depth_hand_values(deliver_root: Path):
    known = np.zeros((H, W), dtype=np.uint16)
    known[0, :4] = [0, 257, 32896, 65535]  # 0, 1, 128 and 255 on the 0..255 scale
    save_png(deliver_path(deliver_root, "depth_raw", *DELIVER_SAMPLES[0]), known)
    depth = load_dataset("deliver", deliver_root, "train", ["depth_raw"])[0]["depth_raw"]
    assert depth.shape == (3, H, W) and depth.dtype == torch.float32
    for channel in depth[:, 0, :4].tolist():
        assert channel == pytest.approx([0.0, 1.0, 128.0, 255.0], abs=1e-4)
    assert bool((depth[:, 1:] == 0).all())


def test_label_mapping_matches_reference(deliver_root: Path):
    sample = load_dataset("deliver", deliver_root, "train", ["rgb"])[1]
    stored = deliver_arrays(1)["label"][:, :, 0].astype(np.int64)
    # Reference: label[label == 255] = 0; label -= 1 (uint8 wrap-around 0 -> 255).
    reference = stored.copy()
    reference[reference == 255] = 0
    reference = (reference - 1) % 256
    label = sample["label"]
    assert label.dtype == torch.int64 and label.shape == (H, W)
    assert np.array_equal(label.numpy(), reference)
    assert label[0, 0] == 255 and label[0, 1] == 255
    assert int(label[label != 255].max()) <= 24


def test_event_low_resolution_is_resized_with_nearest(deliver_root: Path):
    ds = load_dataset("deliver", deliver_root, "val", ["event"], case="eventlowres")
    assert len(ds) == 1
    small = deliver_arrays(4)["event"]
    event = ds[0]["event"]
    assert event.shape == (3, H, W)
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(small.transpose(2, 0, 1))[None].float(), size=(H, W), mode="nearest"
    )[0].to(torch.uint8)
    assert torch.equal(event, expected)
    # Nearest resize only repeats pixels: every value comes from the stored frame.
    assert set(event.unique().tolist()) <= set(np.unique(small).tolist())


def test_cases_and_meta(deliver_root: Path):
    night = load_dataset("deliver", deliver_root, "train", ["rgb"], case="night")
    assert [r.meta["scene"] for r in night.refs] == ["MAP_3_point7_overexposure"]
    over = load_dataset("deliver", deliver_root, "train", ["rgb"], case="overexposure")
    assert over[0]["meta"] == {
        "id": "night/MAP_3_point7_overexposure/000003",
        "scene": "MAP_3_point7_overexposure",
        "split": "train",
        "weather": "night",
        "sensor_failure": "overexposure",
    }
    assert load_dataset("deliver", deliver_root, "val", ["rgb"], case="fog").refs[0].meta[
        "sensor_failure"
    ] == "none"
    with pytest.raises(DataError, match="no samples found .* split 'train', case 'rain'"):
        load_dataset("deliver", deliver_root, "train", ["rgb"], case="rain")


def test_case_is_matched_below_the_root_only(tmp_path: Path):
    # A root whose own path contains a case name must not match every sample.
    from ..conftest import write_deliver

    root = write_deliver(tmp_path / "fog_experiments" / "DELIVER")
    assert len(load_dataset("deliver", root, "val", ["rgb"], case="fog")) == 2
    with pytest.raises(DataError, match="no samples"):
        load_dataset("deliver", root, "train", ["rgb"], case="fog")


def test_normalisation_per_modality(deliver_root: Path):
    info = dataset_info("deliver")
    sample = load_dataset("deliver", deliver_root, "train", ["rgb", "lidar"])[0]
    out = Normalize(info, ["rgb", "lidar"])(sample)
    rgb = sample["rgb"].float() / 255
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert torch.allclose(out["rgb"], (rgb - mean) / std)
    assert torch.allclose(out["lidar"], sample["lidar"].float() / 255)
    assert out["label"] is sample["label"]
    # Hand values: black and white RGB pixels under ImageNet's mean and std.
    extremes = {"rgb": torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 2).expand(3, 1, 2)}
    got = Normalize(info, ["rgb"])(extremes)["rgb"]
    black = [-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225]
    white = [(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225]
    assert got[:, 0, 0].tolist() == pytest.approx(black, rel=1e-5)
    assert got[:, 0, 1].tolist() == pytest.approx(white, rel=1e-5)
    # Batches normalise the same way as single samples.
    batch = torch.stack([sample["rgb"], sample["rgb"]])
    assert torch.allclose(Normalize(info, ["rgb"])({"rgb": batch})["rgb"][1], out["rgb"])


# --- bad input ---------------------------------------------------------------------------


def test_missing_root(tmp_path: Path):
    with pytest.raises(DataError, match=f"data root {tmp_path / 'nope'} does not exist"):
        load_dataset("deliver", tmp_path / "nope", "train")


def test_empty_split(tmp_path: Path):
    (tmp_path / "img").mkdir()
    with pytest.raises(DataError, match="no samples found under .* for split 'test'"):
        load_dataset("deliver", tmp_path, "test")


def test_unknown_names(deliver_root: Path):
    with pytest.raises(ConfigError, match="unknown data set 'kitti'; known: deliver, mcubes"):
        load_dataset("kitti", deliver_root, "train")
    with pytest.raises(ConfigError, match="unknown modality 'thermal' .* known: rgb, depth"):
        load_dataset("deliver", deliver_root, "train", ["rgb", "thermal"])
    with pytest.raises(ConfigError, match="unknown split 'dev'"):
        load_dataset("deliver", deliver_root, "dev")
    with pytest.raises(ConfigError, match="unknown case 'snow'"):
        load_dataset("deliver", deliver_root, "train", case="snow")


def test_missing_companion_file(deliver_root: Path):
    victim = deliver_path(deliver_root, "lidar", *DELIVER_SAMPLES[0])
    victim.unlink()
    ds = load_dataset("deliver", deliver_root, "train", ["rgb", "lidar"])
    with pytest.raises(DataError, match=f"missing lidar file: {victim}"):
        ds[0]
    # Not asked for, not needed.
    load_dataset("deliver", deliver_root, "train", ["rgb"])[0]


def test_truncated_image(deliver_root: Path):
    victim = deliver_path(deliver_root, "rgb", *DELIVER_SAMPLES[1])
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=f"cannot read rgb file {victim}"):
        load_dataset("deliver", deliver_root, "train", ["rgb"])[1]


def test_wrong_channel_count(deliver_root: Path):
    victim = deliver_path(deliver_root, "depth", *DELIVER_SAMPLES[0])
    save_png(victim, np.zeros((H, W, 2), dtype=np.uint8))  # LA: 2 channels
    with pytest.raises(DataError, match=f"depth file {victim} has 2 channels; expected 1, 3 or 4"):
        load_dataset("deliver", deliver_root, "train", ["depth"])[0]


def test_label_values_outside_classes(deliver_root: Path):
    victim = deliver_path(deliver_root, "label", *DELIVER_SAMPLES[0])
    label = deliver_arrays(0)["label"]
    label[2, 2, 0], label[3, 3, 0] = 26, 200
    save_png(victim, label)
    with pytest.raises(DataError, match=f"label file {victim} holds values outside .*: 26, 200"):
        load_dataset("deliver", deliver_root, "train", ["rgb"])[0]


def test_size_mismatch_names_both_sizes(deliver_root: Path):
    victim = deliver_path(deliver_root, "lidar", *DELIVER_SAMPLES[0])
    save_png(victim, np.zeros((H + 2, W), dtype=np.uint8))
    with pytest.raises(DataError, match=f"lidar file {victim} is 8x8, but its label is 6x8"):
        load_dataset("deliver", deliver_root, "train", ["lidar"])[0]


def test_deliver_needs_a_root():
    with pytest.raises(DataError, match="--data-root is required"):
        load_dataset("deliver", None, "train")
