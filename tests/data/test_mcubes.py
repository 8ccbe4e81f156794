"""MCubeS loader on a tiny fixture in the real layout (8x200 pixels, so the 192-column crop
leaves 8 columns): exact decoded values, splits, meta, and every malformed input, NaN and
infinite polarisation arrays included (refused naming the file, listed by `data check`)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from mlebench.data import dataset_info, load_dataset
from mlebench.data.check import check_dataset
from mlebench.data.mcubes import MCUBES_LEFT_CROP, scene_of
from mlebench.errors import ConfigError, DataError

from ..conftest import save_png16_rgb
from ..helpers import invoke

H, W = 8, 200
CROP = MCUBES_LEFT_CROP
TRAIN_8BIT = "outscene1208_2_0000000150"  # 8-bit RGB and NIR
TRAIN_16BIT = "inscene0042_1_0000000010"  # 16-bit RGB and NIR
VAL_NAME = "outscene0007_3_0000000001"
TEST_NAME = "plainname"  # no frame counter: the scene is the whole name


def make_sample(root: Path, name: str, seed: int, bits16: bool = False) -> dict[str, np.ndarray]:
    """Write one sample's six files; return the arrays as written."""
    rng = np.random.default_rng(seed)
    hi = 65536 if bits16 else 256
    dtype = np.uint16 if bits16 else np.uint8
    arrays = {
        "rgb": rng.integers(0, hi, (H, W, 3)).astype(dtype),
        "sin": rng.uniform(-1, 1, (H, W)).astype(np.float32),
        "cos": rng.uniform(-1, 1, (H, W)).astype(np.float32),
        "dolp": rng.uniform(0, 1, (H, W)).astype(np.float32),
        "nir": rng.integers(0, hi, (H, W)).astype(dtype),
        "label": rng.choice([*range(20), 255], (H, W)).astype(np.uint8),
    }
    if bits16:
        # Known extremes at the first column kept by the crop.
        arrays["rgb"][0, CROP] = [65535, 0, 65535]
        arrays["nir"][0, CROP] = 65535
    for folder in ("polL_color", "polL_aolp_sin", "polL_aolp_cos", "polL_dolp", "NIR_warped", "GT"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    if bits16:
        save_png16_rgb(root / "polL_color" / f"{name}.png", arrays["rgb"])
    else:
        Image.fromarray(arrays["rgb"], mode="RGB").save(root / "polL_color" / f"{name}.png")
    np.save(root / "polL_aolp_sin" / f"{name}.npy", arrays["sin"])
    np.save(root / "polL_aolp_cos" / f"{name}.npy", arrays["cos"])
    np.save(root / "polL_dolp" / f"{name}.npy", arrays["dolp"])
    Image.fromarray(arrays["nir"]).save(root / "NIR_warped" / f"{name}.png")
    Image.fromarray(arrays["label"], mode="L").save(root / "GT" / f"{name}.png")
    return arrays


@pytest.fixture
def mcubes(tmp_path: Path) -> tuple[Path, dict[str, dict[str, np.ndarray]]]:
    root = tmp_path / "multimodal_dataset"
    written = {
        TRAIN_8BIT: make_sample(root, TRAIN_8BIT, seed=1),
        TRAIN_16BIT: make_sample(root, TRAIN_16BIT, seed=2, bits16=True),
        VAL_NAME: make_sample(root, VAL_NAME, seed=3),
        TEST_NAME: make_sample(root, TEST_NAME, seed=4),
    }
    lists = root / "list_folder"
    lists.mkdir()
    # Blank lines are skipped; a line with a space keeps its first token.
    (lists / "train.txt").write_text(f"{TRAIN_8BIT}\n\n{TRAIN_16BIT} extra tokens\n")
    (lists / "val.txt").write_text(f"  {VAL_NAME}  \n")
    (lists / "test.txt").write_text(f"{TEST_NAME}\n")
    return root, written


def cropped_chw(arr: np.ndarray) -> torch.Tensor:
    """(H, W[, C]) as written -> (3, H, W - 192) as the loader should return it."""
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(arr[:, CROP:].transpose(2, 0, 1)))


def path_re(path: Path) -> str:
    return re.escape(str(path))


# --- decoded values --------------------------------------------------------------------------


def test_info() -> None:
    info = dataset_info("mcubes")
    assert info.num_classes == 20
    assert info.classes[0] == "asphalt" and info.classes[-1] == "sky"
    assert len(info.palette) == 20
    assert info.palette[0] == (44, 160, 44) and info.palette[-1] == (99, 121, 57)
    assert info.modality_names == ("rgb", "aolp", "dolp", "nir")
    assert [info.modality(m).normalization for m in info.modality_names] == [
        "imagenet", "identity", "identity", "unit",
    ]  # fmt: skip
    assert info.splits == ("train", "val", "test", "reference-val")
    assert info.cases == ()
    assert info.miou_convention == "deliver"


def test_decodes_8bit_sample_exactly(mcubes) -> None:
    root, written = mcubes
    ds = load_dataset("mcubes", root, "train", ["rgb", "aolp", "dolp", "nir"])
    assert len(ds) == 2
    sample = ds[0]
    src = written[TRAIN_8BIT]

    assert sample["rgb"].dtype == torch.uint8
    assert torch.equal(sample["rgb"], cropped_chw(src["rgb"]))

    aolp = sample["aolp"]
    assert aolp.dtype == torch.float32 and aolp.shape == (3, H, W - CROP)
    assert torch.equal(aolp[0], torch.from_numpy(src["sin"][:, CROP:]))
    assert torch.equal(aolp[1], torch.from_numpy(src["cos"][:, CROP:]))
    assert torch.equal(aolp[2], torch.from_numpy(src["sin"][:, CROP:]))

    assert sample["dolp"].dtype == torch.float32
    assert torch.equal(sample["dolp"], cropped_chw(src["dolp"]))

    assert sample["nir"].dtype == torch.uint8
    assert torch.equal(sample["nir"], cropped_chw(src["nir"]))

    assert sample["label"].dtype == torch.int64
    assert torch.equal(sample["label"], torch.from_numpy(src["label"][:, CROP:].astype(np.int64)))


def test_crop_drops_left_192_columns(mcubes) -> None:
    root, written = mcubes
    sample = load_dataset("mcubes", root, "train", ["dolp", "nir"])[0]
    src = written[TRAIN_8BIT]
    assert CROP == 192
    for key in ("dolp", "nir", "label"):
        assert tuple(sample[key].shape[-2:]) == (H, W - CROP)
    # Column 192 as written is column 0 as loaded.
    assert torch.equal(sample["dolp"][0, :, 0], torch.from_numpy(src["dolp"][:, 192]))
    assert torch.equal(sample["nir"][1, :, 0], torch.from_numpy(src["nir"][:, 192]))
    assert sample["label"][:, 0].tolist() == src["label"][:, 192].tolist()


def test_16bit_png_rescaled_to_0_255(mcubes) -> None:
    root, written = mcubes
    sample = load_dataset("mcubes", root, "train", ["rgb", "nir"])[1]
    src = written[TRAIN_16BIT]
    for key in ("rgb", "nir"):
        assert sample[key].dtype == torch.float32
        expected = cropped_chw(src[key]).to(torch.float32) * np.float32(255.0 / 65535.0)
        assert torch.allclose(sample[key], expected, rtol=0, atol=1e-4)
    # Full 16-bit precision survives (Pillow alone would keep only the high byte of RGB).
    assert sample["rgb"][:, 0, 0].tolist() == [255.0, 0.0, 255.0]
    assert sample["nir"][:, 0, 0].tolist() == [255.0, 255.0, 255.0]
    assert torch.equal(sample["nir"][0], sample["nir"][1]) and torch.equal(
        sample["nir"][0], sample["nir"][2]
    )


def test_splits_read_their_own_list_files(mcubes) -> None:
    root, _ = mcubes
    train = load_dataset("mcubes", root, "train", ["rgb"])
    val = load_dataset("mcubes", root, "val", ["rgb"])
    test = load_dataset("mcubes", root, "test", ["rgb"])
    assert [r.id for r in train.refs] == [TRAIN_8BIT, TRAIN_16BIT]
    assert [r.id for r in val.refs] == [VAL_NAME]
    assert [r.id for r in test.refs] == [TEST_NAME]
    # The reference code's "val" reads test.txt: offered explicitly, and recorded as such.
    reference = load_dataset("mcubes", root, "reference-val", ["rgb"])
    assert [r.id for r in reference.refs] == [TEST_NAME]
    assert reference[0]["meta"]["split"] == "reference-val"
    assert torch.equal(reference[0]["rgb"], test[0]["rgb"])


def test_meta(mcubes) -> None:
    root, _ = mcubes
    assert load_dataset("mcubes", root, "train", ["rgb"])[0]["meta"] == {
        "id": TRAIN_8BIT,
        "scene": "outscene1208_2",
        "split": "train",
        "weather": "none",
        "sensor_failure": "none",
    }
    assert load_dataset("mcubes", root, "val", ["rgb"])[0]["meta"]["scene"] == "outscene0007_3"
    test_meta = load_dataset("mcubes", root, "test", ["rgb"])[0]["meta"]
    assert test_meta["scene"] == TEST_NAME and test_meta["split"] == "test"


def test_scene_of() -> None:
    assert scene_of("outscene1208_2_0000000150") == "outscene1208_2"
    assert scene_of("plainname") == "plainname"
    assert scene_of("name_2") == "name_2"  # too short to be a frame counter


def test_default_modalities_and_only_requested_keys(mcubes) -> None:
    root, _ = mcubes
    ds = load_dataset("mcubes", root, "val")
    assert ds.modalities == ("rgb", "aolp", "dolp", "nir")
    only = load_dataset("mcubes", root, "val", ["aolp"])[0]
    assert set(only) == {"aolp", "label", "meta"}


def test_companion_paths_list_both_aolp_files(mcubes) -> None:
    root, _ = mcubes
    ds = load_dataset("mcubes", root, "test", ["aolp", "nir"])
    paths = ds.companion_paths(ds.refs[0])
    assert paths == {
        "aolp_sin": root / "polL_aolp_sin" / f"{TEST_NAME}.npy",
        "aolp_cos": root / "polL_aolp_cos" / f"{TEST_NAME}.npy",
        "nir": root / "NIR_warped" / f"{TEST_NAME}.png",
        "label": root / "GT" / f"{TEST_NAME}.png",
    }
    assert all(p.is_file() for p in paths.values())


def test_batches_with_default_collate(mcubes) -> None:
    root, _ = mcubes
    (root / "list_folder" / "val.txt").write_text(f"{VAL_NAME}\n{TEST_NAME}\n")
    ds = load_dataset("mcubes", root, "val", ["rgb", "aolp"])
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert batch["rgb"].shape == (2, 3, H, W - CROP)
    assert batch["label"].shape == (2, H, W - CROP)
    assert batch["meta"]["id"] == [VAL_NAME, TEST_NAME]


# --- bad input -------------------------------------------------------------------------------


def test_root_none() -> None:
    with pytest.raises(DataError, match="--data-root"):
        load_dataset("mcubes", None, "train", ["rgb"])


def test_missing_root(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match=path_re(missing)):
        load_dataset("mcubes", missing, "train", ["rgb"])


def test_missing_list_file(mcubes) -> None:
    root, _ = mcubes
    list_file = root / "list_folder" / "val.txt"
    list_file.unlink()
    with pytest.raises(DataError, match="missing split list file " + path_re(list_file)):
        load_dataset("mcubes", root, "val", ["rgb"])


def test_empty_split(mcubes) -> None:
    root, _ = mcubes
    list_file = root / "list_folder" / "test.txt"
    list_file.write_text("\n  \n")
    with pytest.raises(DataError, match=path_re(list_file) + " names no samples"):
        load_dataset("mcubes", root, "test", ["rgb"])


def test_unknown_modality_and_split(mcubes) -> None:
    root, _ = mcubes
    with pytest.raises(ConfigError, match="unknown modality 'depth'"):
        load_dataset("mcubes", root, "train", ["rgb", "depth"])
    with pytest.raises(ConfigError, match="unknown split 'extra'"):
        load_dataset("mcubes", root, "extra", ["rgb"])


@pytest.mark.parametrize(
    ("modality", "folder", "ext"),
    [
        ("rgb", "polL_color", ".png"),
        ("aolp", "polL_aolp_cos", ".npy"),
        ("dolp", "polL_dolp", ".npy"),
        ("nir", "NIR_warped", ".png"),
        ("rgb", "GT", ".png"),
    ],
)
def test_missing_companion_file(mcubes, modality: str, folder: str, ext: str) -> None:
    root, _ = mcubes
    path = root / folder / f"{TEST_NAME}{ext}"
    path.unlink()
    ds = load_dataset("mcubes", root, "test", [modality])
    with pytest.raises(DataError, match="missing .* file: " + path_re(path)):
        ds[0]


@pytest.mark.parametrize("name", [TRAIN_8BIT, TRAIN_16BIT])
@pytest.mark.parametrize(("modality", "folder"), [("rgb", "polL_color"), ("nir", "NIR_warped")])
def test_truncated_png(mcubes, name: str, modality: str, folder: str) -> None:
    root, _ = mcubes
    path = root / folder / f"{name}.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    ds = load_dataset("mcubes", root, "train", [modality])
    with pytest.raises(DataError, match=f"cannot read {modality} file " + path_re(path)):
        ds[[r.id for r in ds.refs].index(name)]


def test_truncated_label(mcubes) -> None:
    root, _ = mcubes
    path = root / "GT" / f"{TEST_NAME}.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cannot read label file " + path_re(path)):
        load_dataset("mcubes", root, "test", ["dolp"])[0]


@pytest.mark.parametrize(
    ("modality", "folder", "expected"), [("rgb", "polL_color", 3), ("nir", "NIR_warped", 1)]
)
def test_wrong_channel_count(mcubes, modality: str, folder: str, expected: int) -> None:
    root, _ = mcubes
    path = root / folder / f"{TEST_NAME}.png"
    Image.fromarray(np.zeros((H, W, 2), dtype=np.uint8), mode="LA").save(path)
    with pytest.raises(DataError, match=path_re(path) + f" has 2 channels; expected {expected}"):
        load_dataset("mcubes", root, "test", [modality])[0]


def test_rgb_nir_swapped_channel_counts(mcubes) -> None:
    root, _ = mcubes
    rgb = root / "polL_color" / f"{TEST_NAME}.png"
    Image.fromarray(np.zeros((H, W), dtype=np.uint8), mode="L").save(rgb)
    with pytest.raises(DataError, match=path_re(rgb) + " has 1 channels; expected 3"):
        load_dataset("mcubes", root, "test", ["rgb"])[0]
    nir = root / "NIR_warped" / f"{TEST_NAME}.png"
    Image.fromarray(np.zeros((H, W, 3), dtype=np.uint8), mode="RGB").save(nir)
    with pytest.raises(DataError, match=path_re(nir) + " has 3 channels; expected 1"):
        load_dataset("mcubes", root, "test", ["nir"])[0]


def test_label_value_outside_classes(mcubes) -> None:
    root, written = mcubes
    path = root / "GT" / f"{TEST_NAME}.png"
    label = written[TEST_NAME]["label"].copy()
    label[3, 150] = 40  # inside the cropped-away columns: still refused
    label[4, 199] = 20
    Image.fromarray(label, mode="L").save(path)
    with pytest.raises(DataError, match="label file " + path_re(path) + ".*: 20, 40"):
        load_dataset("mcubes", root, "test", ["rgb"])[0]


def test_label_with_three_channels(mcubes) -> None:
    root, _ = mcubes
    path = root / "GT" / f"{TEST_NAME}.png"
    Image.fromarray(np.zeros((H, W, 3), dtype=np.uint8), mode="RGB").save(path)
    with pytest.raises(DataError, match="label file " + path_re(path) + " has shape"):
        load_dataset("mcubes", root, "test", ["rgb"])[0]


def test_image_not_wider_than_crop(mcubes) -> None:
    root, _ = mcubes
    path = root / "GT" / f"{TEST_NAME}.png"
    Image.fromarray(np.zeros((H, CROP), dtype=np.uint8), mode="L").save(path)
    with pytest.raises(DataError, match=path_re(path) + " is 192 pixels wide"):
        load_dataset("mcubes", root, "test", ["rgb"])[0]


@pytest.mark.parametrize("shape", [(H, W, 1), (3, H, W), (H * W,)])
@pytest.mark.parametrize(
    ("modality", "folder"),
    [("aolp", "polL_aolp_sin"), ("aolp", "polL_aolp_cos"), ("dolp", "polL_dolp")],
)
def test_npy_wrong_shape(mcubes, shape: tuple[int, ...], modality: str, folder: str) -> None:
    root, _ = mcubes
    path = root / folder / f"{TEST_NAME}.npy"
    np.save(path, np.zeros(shape, dtype=np.float32))
    with pytest.raises(DataError, match=path_re(path) + re.escape(f" has shape {shape}")):
        load_dataset("mcubes", root, "test", [modality])[0]


def test_npy_not_numbers(mcubes) -> None:
    root, _ = mcubes
    path = root / "polL_dolp" / f"{TEST_NAME}.npy"
    np.save(path, np.full((H, W), "x"))
    with pytest.raises(DataError, match=path_re(path)):
        load_dataset("mcubes", root, "test", ["dolp"])[0]


@pytest.mark.parametrize(
    ("modality", "folder", "ext"),
    [
        ("rgb", "polL_color", ".png"),
        ("aolp", "polL_aolp_sin", ".npy"),
        ("dolp", "polL_dolp", ".npy"),
        ("nir", "NIR_warped", ".png"),
    ],
)
def test_size_mismatch(mcubes, modality: str, folder: str, ext: str) -> None:
    root, _ = mcubes
    path = root / folder / f"{TEST_NAME}{ext}"
    if ext == ".npy":
        np.save(path, np.zeros((H, W - 10), dtype=np.float32))
    else:
        shape = (H, W - 10, 3) if modality == "rgb" else (H, W - 10)
        Image.fromarray(np.zeros(shape, dtype=np.uint8)).save(path)
    sizes = f" is {H}x{W - 10}, but its label is {H}x{W}"
    with pytest.raises(DataError, match=path_re(path) + sizes):
        load_dataset("mcubes", root, "test", [modality])[0]


# --- NaN and infinite values ------------------------------------------------------------------


MC_H, MC_W = 4, 200  # MCubeS drops the left 192 columns, so images must be wider
MC_NAME = "outscene0001_1_0000000001"


def _write_mcubes(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for folder in ("polL_color", "polL_aolp_sin", "polL_aolp_cos", "polL_dolp", "NIR_warped", "GT", "list_folder"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (MC_H, MC_W, 3), dtype=np.uint8)).save(root / "polL_color" / f"{MC_NAME}.png")
    np.save(root / "polL_aolp_sin" / f"{MC_NAME}.npy", rng.uniform(-1, 1, (MC_H, MC_W)).astype(np.float32))
    np.save(root / "polL_aolp_cos" / f"{MC_NAME}.npy", rng.uniform(-1, 1, (MC_H, MC_W)).astype(np.float32))
    np.save(root / "polL_dolp" / f"{MC_NAME}.npy", rng.uniform(0, 1, (MC_H, MC_W)).astype(np.float32))
    Image.fromarray(rng.integers(0, 256, (MC_H, MC_W), dtype=np.uint8)).save(root / "NIR_warped" / f"{MC_NAME}.png")
    Image.fromarray(rng.integers(0, 20, (MC_H, MC_W), dtype=np.uint8)).save(root / "GT" / f"{MC_NAME}.png")
    for split in ("train", "val", "test"):
        (root / "list_folder" / f"{split}.txt").write_text(f"{MC_NAME}\n")
    return root


@pytest.fixture()
def mcubes_root(tmp_path: Path) -> Path:
    return _write_mcubes(tmp_path / "multimodal_dataset")


def _spoil_npy(path: Path, value: float, dtype=np.float32, at=(1, 195)) -> None:
    arr = np.load(path).astype(dtype)
    arr[at] = value
    np.save(path, arr)


@pytest.mark.parametrize(
    "folder, modality, value, dtype, reason",
    [
        ("polL_dolp", "dolp", math.nan, np.float32, r"holds NaN or infinite values \(1 NaN and 0 infinite of 800"),
        ("polL_aolp_cos", "aolp", math.inf, np.float32, r"holds NaN or infinite values \(0 NaN and 1 infinite of 800"),
        ("polL_aolp_sin", "aolp", -math.inf, np.float64, r"holds NaN or infinite values \(0 NaN and 1 infinite"),
        ("polL_dolp", "dolp", 1e300, np.float64, r"holds values beyond the float32 range"),
    ],
)
def test_mcubes_refuses_non_finite_arrays_naming_the_file(mcubes_root: Path, folder, modality, value, dtype, reason):
    bad = mcubes_root / folder / f"{MC_NAME}.npy"
    _spoil_npy(bad, value, dtype)
    before = bad.read_bytes()
    ds = load_dataset("mcubes", mcubes_root, "val", [modality])
    with pytest.raises(DataError, match=re.escape(str(bad)) + " " + reason) as err:
        ds[0]
    assert "\n" not in str(err.value)
    assert bad.read_bytes() == before

    # `data check` lists the file as unreadable, with the reason, and fails.
    report = check_dataset("mcubes", mcubes_root, [modality], ["val"])
    assert not report.ok
    assert len(report.unreadable) == 1
    assert re.match(re.escape(f"{modality if modality == 'dolp' else folder[5:]} file {bad} ") + reason,
                    report.unreadable[0]), report.unreadable
    result = invoke("data", "check", "--dataset", "mcubes", "--data-root", str(mcubes_root), "--modalities", modality,
                    "--split", "val")
    assert result.exit_code == 1, result.output
    assert "unreadable files (1):" in result.output and str(bad) in result.output
    assert "layout has problems" in result.output


def test_mcubes_finite_sample_still_decodes(mcubes_root: Path):
    sample = load_dataset("mcubes", mcubes_root, "val", ["rgb", "aolp", "dolp", "nir"])[0]
    assert all(torch.isfinite(sample[m].float()).all() for m in ("rgb", "aolp", "dolp", "nir"))
    assert check_dataset("mcubes", mcubes_root, None, ["val"]).ok
