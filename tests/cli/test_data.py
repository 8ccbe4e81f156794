"""`mlebench data check|show` from the command line, good and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mlebench.data import dataset_info, load_dataset

from ..conftest import DELIVER_SAMPLES, H, W, deliver_arrays
from ..helpers import deliver_path, invoke


def _panel_cells(image: np.ndarray, rows: int, cols: int) -> list[np.ndarray]:
    """The colour at the centre of every pixel cell of each panel of a `data show` figure.

    The rows through the panel images are the most non-white ones (titles and legends are
    sparser); within those rows each panel is a run of columns non-white on every row (panels
    are separated by white margins).
    """
    nonwhite = (image != 255).any(axis=-1)
    filled_rows = nonwhite.sum(axis=1)
    band = np.nonzero(filled_rows >= 0.95 * filled_rows.max())[0]
    top, bottom = band[0], band[-1] + 1
    assert np.array_equal(band, np.arange(top, bottom))  # one contiguous band of images
    filled = nonwhite[top:bottom].all(axis=0)
    edges = np.diff(np.concatenate([[0], filled.astype(int), [0]]))
    starts, ends = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
    ys = top + ((np.arange(rows) + 0.5) * (bottom - top) / rows).astype(int)
    panels = []
    for left, right in zip(starts, ends):
        xs = left + ((np.arange(cols) + 0.5) * (right - left) / cols).astype(int)
        panels.append(image[np.ix_(ys, xs)])
    return panels


def test_check_sound_layout(deliver_root: Path):
    result = invoke(
        "data", "check", "--dataset", "deliver", "--data-root", str(deliver_root),
        "--split", "train", "--split", "val",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "train: 3 samples (cloud 2, night 1, overexposure 1)" in result.output
    assert "val: 2 samples" in result.output
    assert "layout OK" in result.output


def test_check_json_counts_per_split_and_case(deliver_root: Path):
    result = invoke("data", "check", "--dataset", "deliver", "--data-root", str(deliver_root), "--json")
    report = json.loads(result.output)
    assert report["counts"]["train"]["total"] == 3
    assert report["counts"]["train"]["cloud"] == 2
    assert report["counts"]["train"]["night"] == 1
    assert report["counts"]["train"]["overexposure"] == 1
    assert report["counts"]["val"]["eventlowres"] == 1
    # DELIVER's test split is empty in the fixture: reported, and the layout is not sound.
    assert report["counts"]["test"]["total"] == 0
    assert any("split 'test'" in p for p in report["problems"])
    assert result.exit_code == 1


def test_check_lists_missing_and_unreadable_files(deliver_root: Path):
    missing = deliver_path(deliver_root, "event", *DELIVER_SAMPLES[0])
    missing.unlink()
    broken = deliver_path(deliver_root, "rgb", *DELIVER_SAMPLES[3])
    broken.write_bytes(broken.read_bytes()[:40])
    result = invoke(
        "data", "check", "--dataset", "deliver", "--data-root", str(deliver_root),
        "--split", "train", "--split", "val",
    )  # fmt: skip
    assert result.exit_code == 1
    assert f"{missing} (sample cloud/MAP_1_point2/000001)" in result.output
    assert f"cannot read rgb file {broken}" in result.output
    assert "layout has problems" in result.output


def test_show_writes_one_png_with_every_modality(deliver_root: Path, tmp_path: Path):
    out = tmp_path / "figs" / "sample.png"
    result = invoke(
        "data", "show", "--dataset", "deliver", "--data-root", str(deliver_root),
        "--split", "val", "--index", "1", "-o", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "fog/MAP_5_point1_eventlowres/000005" in result.output
    with Image.open(out) as img:
        panels = _panel_cells(np.asarray(img.convert("RGB")), H, W)
    assert not list(out.parent.glob("*.tmp"))
    # Five panels side by side, in order: rgb, depth, event, lidar, then the coloured label.
    assert len(panels) == 5
    raw = deliver_arrays(4)
    rgb, depth, event, lidar, label = panels
    assert np.array_equal(rgb, raw["rgb"])
    assert np.array_equal(depth, raw["depth"][..., :3])  # HHA: the first three channels
    # The 3x4 low-resolution event frame, resized with nearest neighbour to 6x8.
    assert np.array_equal(event, raw["event"].repeat(2, axis=0).repeat(2, axis=1))
    assert np.array_equal(lidar, np.repeat(raw["lidar"][..., None], 3, axis=2))
    # Label panel: each cell has the palette colour of its class (stored id - 1), ignore black.
    palette = dataset_info("deliver").palette
    stored = raw["label"][..., 0]
    expected = np.array(
        [[(0, 0, 0) if v in (0, 255) else palette[v - 1] for v in row] for row in stored],
        dtype=np.uint8,
    )
    assert np.array_equal(label, expected)


def test_bad_options_are_usage_errors(deliver_root: Path):
    result = invoke("data", "check", "--dataset", "kitti", "--data-root", str(deliver_root))
    assert result.exit_code == 2
    assert "'kitti' is not one of" in result.output and "deliver" in result.output
    result = invoke(
        "data", "check", "--dataset", "deliver", "--data-root", str(deliver_root), "--modalities", "rgb,thermal"
    )
    assert result.exit_code == 2
    assert "unknown modality 'thermal' for deliver; choose from rgb, depth" in result.output
    result = invoke(
        "data", "show", "--dataset", "deliver", "--data-root", str(deliver_root), "--index", "9", "-o", "x.png"
    )
    assert result.exit_code == 2
    assert "9 is out of range: deliver/val has 2 samples" in result.output
    result = invoke("data", "check", "--dataset", "deliver", "--data-root", str(deliver_root), "--split", "dev")
    assert result.exit_code == 2 and "unknown split 'dev'" in result.output


def test_user_errors_exit_1_without_traceback(tmp_path: Path, deliver_root: Path):
    result = invoke("data", "check", "--dataset", "deliver", "--data-root", str(tmp_path / "absent"))
    assert result.exit_code == 1
    assert result.output.startswith("Error: deliver: data root")
    assert "Traceback" not in result.output
    victim = deliver_path(deliver_root, "label", *DELIVER_SAMPLES[3])
    Image.fromarray(np.full((6, 8), 77, dtype=np.uint8)).save(victim)
    result = invoke("data", "show", "--dataset", "deliver", "--data-root", str(deliver_root), "-o", str(tmp_path / "a.png"))
    assert result.exit_code == 1
    assert f"Error: label file {victim} holds values outside the classes and 255: 77" in result.output
    assert not (tmp_path / "a.png").exists()


def test_synth_then_check_and_show(tmp_path: Path):
    out = tmp_path / "synthetic"
    result = invoke(
        "data", "synth", "--out", str(out), "--size", "64", "--n-train", "3", "--n-val", "2",
        "--n-test", "2", "--seed", "5", "--workers", "1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "train: 3 samples" in result.output and "layout OK" in result.output
    result = invoke("data", "check", "--dataset", "synthetic", "--data-root", str(out), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["counts"]["val"]["total"] == 2
    # The DELIVER loader reads the same folder.
    assert invoke("data", "check", "--dataset", "deliver", "--data-root", str(out)).exit_code == 0
    png = tmp_path / "s.png"
    assert invoke("data", "show", "--data-root", str(out), "--split", "test", "-o", str(png)).exit_code == 0
    # The figure shows sample 0 of the test split: its RGB and its label, coloured by class.
    sample = load_dataset("synthetic", out, "test", ["rgb"])[0]
    with Image.open(png) as img:
        panels = _panel_cells(np.asarray(img.convert("RGB")), 64, 64)
    assert len(panels) == 5
    assert np.array_equal(panels[0], sample["rgb"].numpy().transpose(1, 2, 0))
    palette = np.array(dataset_info("synthetic").palette, dtype=np.uint8)
    assert np.array_equal(panels[-1], palette[sample["label"].numpy()])


def test_synth_bad_options(tmp_path: Path):
    result = invoke("data", "synth", "--out", str(tmp_path / "x"), "--size", "8")
    assert result.exit_code == 2 and "--size" in result.output
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    result = invoke("data", "synth", "--out", str(foreign), "--size", "64", "--n-train", "1",
                    "--n-val", "1", "--n-test", "1")
    assert result.exit_code == 1 and str(foreign) in result.output
    assert (foreign / "thesis.tex").read_text() == "precious"


def test_show_scales_raw_float_modalities_by_255_whatever_their_maximum():
    from mlebench.data.show import displayable

    events = torch.zeros(3, 2, 2)  # MUSES event frames are float32 counts on the 0..255 scale
    events[:, 0, 0] = 1.0
    brighter = events * 3
    assert displayable(brighter)[0, 0].tolist() == pytest.approx([3 / 255] * 3)  # holds today
    assert displayable(events)[0, 0].tolist() == pytest.approx([1 / 255] * 3)  # gives 1.0
