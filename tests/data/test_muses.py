"""The MUSES loader on a tiny data set written in the real layout (SDK projections included), and
NaN or infinite projections refused naming the file."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mlebench.data import dataset_info, load_dataset
from mlebench.data.check import check_dataset
from mlebench.errors import ConfigError, DataError

from ..conftest import save_png16_rgb

H, W = 6, 8

# (split, weather, daytime, name, projection form); "npz-small" is rendered at half size.
SAMPLES = [
    ("train", "clear", "day", "REC0001_frame_000101", "npz"),
    ("train", "clear", "night", "REC0002_frame_000202", "png"),
    ("train", "fog", "day", "REC0003_frame_000303", "npz-small"),
    ("train", "fog", "night", "REC0004_frame_000404", "png"),
    ("val", "snow", "day", "REC0005_frame_000505", "npz"),
    ("test", "rain", "night", "REC0006_frame_000606", "npz"),  # no public label
]


# --- writing files as the MUSES download and the SDK do ----------------------------------------
def save_png(path: Path, array: np.ndarray) -> Path:
    """8-bit PNG; Pillow picks L, LA or RGB from the array's shape."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def sdk_lidar(size: tuple[int, int]) -> np.ndarray:
    """An SDK LiDAR image: [range m, intensity, z m], 0 where there is no return."""
    img = np.zeros((*size, 3), dtype=np.float32)
    img[1, 2] = (12.5, 40.0, -1.5)
    img[2, 3] = (2.0, 0.0, 0.0)  # a return exactly at sensor height: still "occupied"
    img[size[0] - 1, size[1] - 1] = (300.0, 300.0, 40.0)  # beyond 255 / +31.75 m: clipped
    img[0, size[1] - 1] = (5.0, 7.0, -40.0)  # below -31.75 m: clipped to 1, not to "empty"
    return img


def sdk_event(size: tuple[int, int]) -> np.ndarray:
    """An SDK event image: [positive count, negative count, 0]."""
    img = np.zeros((*size, 3), dtype=np.uint8)
    img[0, 0] = (3, 1, 0)
    img[2, 1] = (255, 0, 0)
    img[size[0] - 1, 0] = (0, 7, 0)
    return img


def expected_lidar(sdk: np.ndarray) -> np.ndarray:
    """The documented mapping, written out independently of the loader."""
    out = np.zeros((3, *sdk.shape[:2]), dtype=np.float32)
    for y, x in zip(*np.nonzero(sdk[:, :, 0] > 0)):
        r, i, z = (float(v) for v in sdk[y, x])
        out[:, y, x] = (min(r, 255.0), min(max(i, 0.0), 255.0), min(max(128 + 4 * z, 1.0), 255.0))
    return out


def sample_arrays(index: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(index)
    label = rng.integers(0, 19, size=(H, W)).astype(np.uint8)
    label[0, 0] = 255  # the ignore value must stay 255
    size = (H // 2, W // 2) if SAMPLES[index][4] == "npz-small" else (H, W)
    return {
        "frame": rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8),
        "label": label,
        "lidar": sdk_lidar(size),
        "event": sdk_event(size),
    }


def muses_path(root: Path, kind: str, split: str, weather: str, daytime: str, name: str) -> Path:
    folders = {
        "frame": ("frame_camera", "_frame_camera.png"),
        "label": ("gt_semantic", "_gt_labelTrainIds.png"),
        "lidar": ("projected_to_rgb/lidar", "_lidar"),
        "event": ("projected_to_rgb/event_camera", "_event_camera"),
    }
    folder, suffix = folders[kind]
    return root / folder / split / weather / daytime / f"{name}{suffix}"


def write_projection(path_stem: Path, modality: str, sdk: np.ndarray, form: str) -> Path:
    if form.startswith("npz"):
        path = path_stem.with_name(path_stem.name + ".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, sdk)  # the SDK's save: stored under "arr_0"
        return path
    path = path_stem.with_name(path_stem.name + ".png")
    bgr = sdk[:, :, ::-1]  # cv2.imwrite stores the array as BGR
    if modality == "lidar":
        return save_png16_rgb(path, ((bgr + 100.0) * 150.0).astype(np.uint16))
    return save_png(path, np.ascontiguousarray(bgr))


def write_muses(root: Path) -> Path:
    for index, (split, weather, daytime, name, form) in enumerate(SAMPLES):
        arrays = sample_arrays(index)
        where = (split, weather, daytime, name)
        save_png(muses_path(root, "frame", *where), arrays["frame"])
        if split != "test":
            save_png(muses_path(root, "label", *where), arrays["label"])
        for modality in ("lidar", "event"):
            write_projection(muses_path(root, modality, *where), modality, arrays[modality], form)
    return root


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    return write_muses(tmp_path / "muses")


def find(dataset, name: str) -> dict:
    for index, ref in enumerate(dataset.refs):
        if ref.id.endswith(f"/{name}"):
            return dataset[index]
    raise AssertionError(f"{name} not indexed")


def esc(path: Path) -> str:
    """A path as a literal inside a ``pytest.raises(match=...)`` pattern."""
    return re.escape(str(path))


def where_of(index: int) -> tuple[str, str, str, str]:
    return SAMPLES[index][:4]


# --- static facts ------------------------------------------------------------------------------
def test_info() -> None:
    info = dataset_info("muses")
    assert info.num_classes == 19 and len(info.palette) == 19
    assert info.classes[0] == "road" and info.classes[18] == "bicycle"
    assert info.palette[0] == (128, 64, 128) and info.palette[18] == (119, 11, 32)
    assert info.cases == ("clear", "fog", "rain", "snow", "day", "night")
    assert info.splits == ("train", "val", "test")
    assert info.defaults == ("frame", "event", "lidar")
    assert info.miou_convention == "deliver"
    assert info.modality("frame").normalization == "imagenet" and info.modality("frame").dense
    for name in ("event", "lidar"):
        assert not info.modality(name).dense and info.modality(name).normalization == "unit"


# --- decoding ----------------------------------------------------------------------------------
def test_index_ids_and_meta(root: Path) -> None:
    ds = load_dataset("muses", root, "train")
    assert [r.id for r in ds.refs] == [
        "clear/day/REC0001_frame_000101",
        "clear/night/REC0002_frame_000202",
        "fog/day/REC0003_frame_000303",
        "fog/night/REC0004_frame_000404",
    ]
    sample = ds[1]
    assert sample["meta"] == {
        "id": "clear/night/REC0002_frame_000202",
        "scene": "REC0002",  # the recording: its frames are related
        "split": "train",
        "weather": "clear",
        "daytime": "night",
        "sensor_failure": "none",
    }


def test_frame_and_label_exact(root: Path) -> None:
    ds = load_dataset("muses", root, "train", ["frame"])
    sample = ds[0]
    arrays = sample_arrays(0)
    assert sample["frame"].dtype == torch.uint8 and sample["frame"].shape == (3, H, W)
    assert torch.equal(sample["frame"], torch.from_numpy(arrays["frame"].transpose(2, 0, 1)))
    assert sample["label"].dtype == torch.int64
    assert torch.equal(sample["label"], torch.from_numpy(arrays["label"].astype(np.int64)))
    assert sample["label"][0, 0] == 255  # ignore stays ignore, never mapped to a class
    assert set(sample) == {"frame", "label", "meta"}


def test_npz_lidar_and_event_exact(root: Path) -> None:
    sample = load_dataset("muses", root, "train", ["lidar", "event"])[0]
    lidar, event = sample["lidar"], sample["event"]
    assert lidar.dtype == torch.float32 and lidar.shape == (3, H, W)
    assert event.dtype == torch.float32 and event.shape == (3, H, W)
    assert torch.equal(lidar, torch.from_numpy(expected_lidar(sdk_lidar((H, W)))))
    # Spot values of the documented mapping.
    assert lidar[:, 1, 2].tolist() == [12.5, 40.0, 122.0]  # 128 + 4 * (-1.5)
    assert lidar[:, 2, 3].tolist() == [2.0, 0.0, 128.0]
    assert lidar[:, H - 1, W - 1].tolist() == [255.0, 255.0, 255.0]
    assert lidar[:, 0, W - 1].tolist() == [5.0, 7.0, 1.0]
    assert lidar[:, 0, 0].tolist() == [0.0, 0.0, 0.0]  # no return
    assert torch.equal(event, torch.from_numpy(sdk_event((H, W)).transpose(2, 0, 1)).float())
    assert event[:, 0, 0].tolist() == [3.0, 1.0, 0.0]  # positive, negative, zero


def test_png_projections_match_npz(root: Path) -> None:
    """PNGs (16-bit LiDAR, BGR as cv2 writes) decode to the same tensors as the .npz form."""
    ds = load_dataset("muses", root, "train", ["lidar", "event"])
    assert ds.refs[1].paths["lidar"].suffix == ".png"
    assert ds.refs[0].paths["lidar"].suffix == ".npz"
    npz, png = ds[0], ds[1]
    assert torch.equal(png["lidar"], npz["lidar"])
    assert torch.equal(png["event"], npz["event"])


def test_npz_preferred_over_png(root: Path) -> None:
    where = where_of(1)
    stem = muses_path(root, "lidar", *where)
    other = np.zeros((H, W, 3), dtype=np.float32)
    other[0, 0] = (9.0, 9.0, 0.0)
    write_projection(stem, "lidar", other, "npz")  # now both .npz and .png exist
    ds = load_dataset("muses", root, "train", ["lidar"])
    assert ds.refs[1].paths["lidar"].suffix == ".npz"
    assert ds[1]["lidar"][:, 0, 0].tolist() == [9.0, 9.0, 128.0]


def test_small_projection_resized_nearest(root: Path) -> None:
    sample = load_dataset("muses", root, "train", ["frame", "lidar", "event"], case="fog")[0]
    assert sample["meta"]["id"] == "fog/day/REC0003_frame_000303" and sample["meta"]["scene"] == "REC0003"
    small_lidar = expected_lidar(sdk_lidar((H // 2, W // 2)))
    small_event = sdk_event((H // 2, W // 2)).transpose(2, 0, 1).astype(np.float32)
    # Half size -> every value covers a 2x2 block; no blending with empty neighbours.
    up = lambda a: np.repeat(np.repeat(a, 2, axis=1), 2, axis=2)  # noqa: E731
    assert sample["lidar"].shape == (3, H, W) and sample["event"].shape == (3, H, W)
    assert torch.equal(sample["lidar"], torch.from_numpy(up(small_lidar)))
    assert torch.equal(sample["event"], torch.from_numpy(up(small_event)))


def test_npy_projection(root: Path) -> None:
    where = where_of(0)
    stem = muses_path(root, "lidar", *where)
    stem.with_name(stem.name + ".npz").unlink()
    np.save(stem.with_name(stem.name + ".npy"), sdk_lidar((H, W)))
    ds = load_dataset("muses", root, "train", ["lidar"])
    assert ds.refs[0].paths["lidar"].suffix == ".npy"
    assert torch.equal(ds[0]["lidar"], torch.from_numpy(expected_lidar(sdk_lidar((H, W)))))


# --- cases and splits --------------------------------------------------------------------------
def test_case_filters(root: Path) -> None:
    fog = load_dataset("muses", root, "train", ["frame"], case="fog")
    assert [r.meta["scene"] for r in fog.refs] == ["REC0003", "REC0004"]
    night = load_dataset("muses", root, "train", ["frame"], case="night")
    assert [r.id for r in night.refs] == [
        "clear/night/REC0002_frame_000202",
        "fog/night/REC0004_frame_000404",
    ]
    assert all(r.meta["daytime"] == "night" for r in night.refs)
    with pytest.raises(DataError, match="no samples"):
        load_dataset("muses", root, "train", ["frame"], case="snow")


def test_splits(root: Path) -> None:
    val = load_dataset("muses", root, "val")
    assert [r.id for r in val.refs] == ["snow/day/REC0005_frame_000505"]
    assert val[0]["meta"]["split"] == "val"
    # Test labels are not public: samples are listed, decoding names the missing label file.
    test = load_dataset("muses", root, "test", case="rain")
    assert len(test) == 1
    label = muses_path(root, "label", *where_of(5))
    with pytest.raises(DataError, match=f"missing label file: {esc(label)} .*not public"):
        test[0]


def test_companion_paths(root: Path) -> None:
    ds = load_dataset("muses", root, "train", ["frame", "lidar"])
    paths = ds.companion_paths(ds.refs[0])
    assert set(paths) == {"frame", "lidar", "label"}
    assert all(p.is_file() for p in paths.values())


# --- bad input ---------------------------------------------------------------------------------
def test_root_required_and_must_exist(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="required"):
        load_dataset("muses", None, "train")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("muses", tmp_path / "nowhere", "train")


def test_empty_split(tmp_path: Path) -> None:
    (tmp_path / "muses" / "frame_camera" / "val" / "clear" / "day").mkdir(parents=True)
    with pytest.raises(DataError, match="no samples found .* split 'val'"):
        load_dataset("muses", tmp_path / "muses", "val")


def test_unknown_names(root: Path) -> None:
    with pytest.raises(ConfigError, match="unknown modality 'radar'"):
        load_dataset("muses", root, "train", ["frame", "radar"])
    with pytest.raises(ConfigError, match="unknown case 'motionblur'"):
        load_dataset("muses", root, "train", case="motionblur")
    with pytest.raises(ConfigError, match="unknown split"):
        load_dataset("muses", root, "training")


def test_missing_projection_names_path(root: Path) -> None:
    stem = muses_path(root, "lidar", *where_of(0))
    npz = stem.with_name(stem.name + ".npz")
    npz.unlink()
    ds = load_dataset("muses", root, "train", ["frame", "lidar"])
    with pytest.raises(DataError, match=f"missing lidar file: {esc(npz)}"):
        ds[0]
    ds[1]  # the other samples still decode


def test_missing_frame_companion_names_path(root: Path) -> None:
    ds = load_dataset("muses", root, "train", ["frame"])
    frame = ds.refs[2].paths["frame"]
    frame.unlink()
    with pytest.raises(DataError, match=f"missing frame file: {esc(frame)}"):
        ds[2]


def test_truncated_pngs(root: Path) -> None:
    frame = muses_path(root, "frame", *where_of(0))
    frame.write_bytes(frame.read_bytes()[:60])
    stem = muses_path(root, "lidar", *where_of(1))
    lidar = stem.with_name(stem.name + ".png")
    lidar.write_bytes(lidar.read_bytes()[:-30])
    ds = load_dataset("muses", root, "train", ["frame", "lidar"])
    with pytest.raises(DataError, match=f"cannot read frame file {esc(frame)}"):
        ds[0]
    with pytest.raises(DataError, match=f"cannot read lidar file {esc(lidar)}"):
        ds[1]


def test_two_channel_pngs(root: Path) -> None:
    la = np.zeros((H, W, 2), dtype=np.uint8)
    frame = save_png(muses_path(root, "frame", *where_of(0)), la)
    stem = muses_path(root, "event", *where_of(1))
    event = save_png(stem.with_name(stem.name + ".png"), la)
    with pytest.raises(DataError, match=f"frame file {esc(frame)} has 2 channels"):
        load_dataset("muses", root, "train", ["frame"])[0]
    with pytest.raises(DataError, match=f"event file {esc(event)} has 2 channel"):
        load_dataset("muses", root, "train", ["event"])[1]


def test_eight_bit_lidar_png_refused(root: Path) -> None:
    stem = muses_path(root, "lidar", *where_of(1))
    png = save_png(stem.with_name(stem.name + ".png"), np.zeros((H, W, 3), dtype=np.uint8))
    with pytest.raises(DataError, match=f"lidar file {esc(png)} is an 8-bit PNG"):
        load_dataset("muses", root, "train", ["lidar"])[1]


def test_label_value_outside_classes(root: Path) -> None:
    arrays = sample_arrays(0)
    label = arrays["label"].copy()
    label[2, 2] = 30
    path = save_png(muses_path(root, "label", *where_of(0)), label)
    with pytest.raises(DataError, match=f"label file {esc(path)} holds values .*: 30"):
        load_dataset("muses", root, "train", ["frame"])[0]


def test_label_with_channels_refused(root: Path) -> None:
    path = save_png(muses_path(root, "label", *where_of(0)), np.zeros((H, W, 3), dtype=np.uint8))
    with pytest.raises(DataError, match=f"label file {esc(path)} has shape"):
        load_dataset("muses", root, "train", ["frame"])[0]


def test_npz_without_expected_key(root: Path) -> None:
    stem = muses_path(root, "lidar", *where_of(0))
    npz = stem.with_name(stem.name + ".npz")
    np.savez_compressed(npz, image=sdk_lidar((H, W)))
    expected = f"lidar file {esc(npz)} has no array 'arr_0'.*found: image"
    with pytest.raises(DataError, match=expected):
        load_dataset("muses", root, "train", ["lidar"])[0]


def test_corrupt_npz_and_bad_shape(root: Path) -> None:
    stem = muses_path(root, "event", *where_of(0))
    npz = stem.with_name(stem.name + ".npz")
    npz.write_bytes(b"PK\x03\x04 definitely not a zip archive")
    ds = load_dataset("muses", root, "train", ["event"])
    with pytest.raises(DataError, match=f"cannot read event file {esc(npz)}"):
        ds[0]
    np.savez_compressed(npz, np.zeros((H, W), dtype=np.uint8))
    with pytest.raises(DataError, match=rf"event file {esc(npz)} has shape \(6, 8\)"):
        ds[0]


def test_frame_size_mismatch(root: Path) -> None:
    frame = save_png(
        muses_path(root, "frame", *where_of(0)), np.zeros((H, W + 2, 3), dtype=np.uint8)
    )
    with pytest.raises(DataError, match=f"frame file {esc(frame)} is 6x10, but its label is 6x8"):
        load_dataset("muses", root, "train", ["frame"])[0]


# --- NaN and infinite values -------------------------------------------------------------------


MU_H, MU_W = 4, 6
MU_WHERE = ("val", "clear", "day", "REC0001_frame_000001")


def _write_muses(root: Path, form: str) -> dict[str, Path]:
    split, weather, daytime, name = MU_WHERE
    rng = np.random.default_rng(1)
    files = {
        "frame": root / "frame_camera" / split / weather / daytime / f"{name}_frame_camera.png",
        "label": root / "gt_semantic" / split / weather / daytime / f"{name}_gt_labelTrainIds.png",
    }
    for p in files.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (MU_H, MU_W, 3), dtype=np.uint8)).save(files["frame"])
    Image.fromarray(rng.integers(0, 19, (MU_H, MU_W), dtype=np.uint8)).save(files["label"])
    for modality, folder in (("lidar", "lidar"), ("event", "event_camera")):
        path = root / "projected_to_rgb" / folder / split / weather / daytime / f"{name}_{folder}.{form}"
        path.parent.mkdir(parents=True, exist_ok=True)
        arr = np.zeros((MU_H, MU_W, 3), dtype=np.float32)
        arr[1, 2] = (12.0, 30.0, -1.0)
        np.savez_compressed(path, arr) if form == "npz" else np.save(path, arr)
        files[modality] = path
    return files


@pytest.mark.parametrize("form", ["npz", "npy"])
@pytest.mark.parametrize("modality", ["lidar", "event"])
def test_muses_refuses_non_finite_projections_naming_the_file(tmp_path: Path, form: str, modality: str):
    files = _write_muses(tmp_path / "muses", form)
    bad = files[modality]
    arr = np.zeros((MU_H, MU_W, 3), dtype=np.float32)
    arr[2, 3, 1] = math.nan
    arr[0, 0, 0] = math.inf
    np.savez_compressed(bad, arr) if form == "npz" else np.save(bad, arr)
    ds = load_dataset("muses", tmp_path / "muses", "val", ["frame", modality])
    with pytest.raises(DataError, match=re.escape(f"{modality} file {bad} holds NaN or infinite values "
                                                  "(1 NaN and 1 infinite of 72; first at index (0, 0, 0))")):
        ds[0]
    report = check_dataset("muses", tmp_path / "muses", ["frame", modality], ["val"])
    assert [u.split(" holds ")[0] for u in report.unreadable] == [f"{modality} file {bad}"]


def test_the_scene_of_a_frame_is_its_recording() -> None:
    from mlebench.data.muses import recording_of

    assert recording_of("REC0006_frame_040219") == recording_of("REC0006_frame_040220") == "REC0006"
    assert recording_of("frame_000101") == "frame_000101"  # no recording prefix: the frame alone
