"""Shared test fixtures: tiny data sets written in real layouts at test time, synthetic sets and
an evaluated results store used by test modules in several folders, and a private cache."""

from __future__ import annotations

import shutil
import struct
import zlib
from typing import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlebench.data.synthetic import generate_synthetic
from mlebench.engine.checkpoint import save_checkpoint
from mlebench.results import ResultsStore

from .helpers import COPIED_FROM, deliver_path, invoke, perturbed_method


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory):
    """Keep every test away from the user's real cache directory."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MLEBENCH_CACHE_DIR", str(tmp_path_factory.mktemp("mlebench-cache")))
    yield
    mp.undo()


def save_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def save_png16_rgb(path: Path, array: np.ndarray) -> Path:
    """A 16-bit RGB PNG (Pillow cannot write one): filter 0 rows, one IDAT chunk."""
    h, w, _ = array.shape
    rows = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )  # fmt: skip
    return path


H, W = 6, 8

# (weather, split, scene, frame) of every sample in the DELIVER fixture.
DELIVER_SAMPLES = [
    ("cloud", "train", "MAP_1_point2", "000001"),
    ("cloud", "train", "MAP_1_point2", "000002"),
    ("night", "train", "MAP_3_point7_overexposure", "000003"),
    ("fog", "val", "MAP_5_point1", "000004"),
    ("fog", "val", "MAP_5_point1_eventlowres", "000005"),
]


def deliver_arrays(index: int) -> dict[str, np.ndarray]:
    """The arrays written for sample ``index`` (as stored on disk)."""
    rng = np.random.default_rng(index)
    label = rng.integers(1, 26, size=(H, W)).astype(np.uint8)
    label[0, 0], label[0, 1] = 0, 255  # unlabelled, and the explicit ignore value
    semantic = np.stack([label, np.full_like(label, 7), np.zeros_like(label)], axis=2)
    event_size = (H // 2, W // 2) if "eventlowres" in DELIVER_SAMPLES[index][2] else (H, W)
    return {
        "rgb": rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8),
        # HHA stored as RGBA: the loader keeps the first three channels.
        "depth": rng.integers(0, 256, size=(H, W, 4), dtype=np.uint8),
        "depth_raw": rng.integers(0, 65536, size=(H, W), dtype=np.uint16),
        "event": rng.integers(0, 256, size=(*event_size, 3), dtype=np.uint8),
        # LiDAR as a single channel: the loader repeats it to three.
        "lidar": rng.integers(0, 256, size=(H, W), dtype=np.uint8),
        "label": semantic,
    }


def write_deliver(root: Path) -> Path:
    for index, (weather, split, scene, frame) in enumerate(DELIVER_SAMPLES):
        for modality, array in deliver_arrays(index).items():
            save_png(deliver_path(root, modality, weather, split, scene, frame), array)
    return root


@pytest.fixture()
def deliver_root(tmp_path: Path) -> Path:
    return write_deliver(tmp_path / "DELIVER")


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module's in-process model runs (restored afterwards): on a
    small shared CPU torch's default pool oversubscribes the cores and runs several times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory of its own, so that a default runs/ folder would show up here."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# -- synthetic data sets shared by test modules in several folders (made once per session) -----


@pytest.fixture(scope="session")
def small_synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 train, 2 val and 1 test sample at 64 px: for refused commands, progress lines and the
    loaders' file checks (cli/test_bad_input.py, engine/test_progress.py, engine/test_train.py,
    data/test_check.py)."""
    return generate_synthetic(tmp_path_factory.mktemp("reliability") / "s", size=64, n_train=4, n_val=2, n_test=1,
                              workers=1)


@pytest.fixture()
def broken_root(small_synthetic: Path, tmp_path: Path) -> Path:
    """A copy of ``small_synthetic`` for a test to break (``helpers.root_of`` gives the original)."""
    copy = Path(shutil.copytree(small_synthetic, tmp_path / "copy"))
    COPIED_FROM[copy] = small_synthetic
    return copy


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 train samples (seed 3): training steps and the training view (engine/test_train.py,
    data/test_augment.py)."""
    root = tmp_path_factory.mktemp("synth") / "set"
    return generate_synthetic(root, size=64, n_train=8, n_val=2, n_test=2, seed=3, workers=1)


# -- two checkpoints evaluated into one store: per-sample counts, compare, export, list --------


@pytest.fixture(scope="session")
def counts_synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 val samples (seed 9), the data set of ``evaluated``."""
    return generate_synthetic(tmp_path_factory.mktemp("st") / "s", size=64, n_train=6, n_val=6, n_test=3,
                              seed=9, workers=1)


@pytest.fixture(scope="session")
def counts_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("ck")
    return save_checkpoint(perturbed_method(0), folder / "a.pt"), save_checkpoint(perturbed_method(1), folder / "b.pt")


@pytest.fixture(scope="session")
def evaluated(counts_synthetic: Path, counts_checkpoints, tmp_path_factory: pytest.TempPathFactory):
    """Two checkpoints evaluated under missing-modality, and one under conditions, in one store
    (results/test_rows.py, report/test_compare.py, report/test_export.py, cli/test_results.py)."""
    db = tmp_path_factory.mktemp("db") / "r.sqlite"
    ids = []
    for ckpt, protocol in ((counts_checkpoints[0], "missing-modality"), (counts_checkpoints[1], "missing-modality"),
                           (counts_checkpoints[0], "conditions")):
        result = invoke("eval", "--data-root", str(counts_synthetic), "--checkpoint", str(ckpt), "--results", str(db),
                        "--protocol", protocol, "--weights", "none")
        assert result.exit_code == 0, result.output
        ids.append(ResultsStore(db).runs()["id"].iloc[0])
    return db, ids


@pytest.fixture()
def tmpfs(tmp_path: Path):
    """``tmpfs(name, size="256k", readonly=False, full=False) -> Path``: a real file system of its
    own for this test (unmounted afterwards); the test skips where mounting is not allowed (not
    root), except under CI, where it fails."""
    from .helpers import NO_MOUNT, fill, mount_tmpfs, unmount

    mounted: list[Path] = []

    def make(name: str, size: str = "256k", readonly: bool = False, full: bool = False) -> Path:
        folder = tmp_path / "mnt" / name
        if not mount_tmpfs(folder, size, readonly):
            pytest.skip(NO_MOUNT)
        mounted.append(folder)
        if full:
            fill(folder)
        return folder

    yield make
    for folder in reversed(mounted):
        unmount(folder)


# -- results stores on both back ends -------------------------------------------------------------
@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test (skips, or fails under CI, without a server)."""
    from .postgres import admin_url, fresh_database

    admin_url()
    yield from fresh_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> "str | Path":
    """Where a test's results store lives: a new SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "results.sqlite"
    return request.getfixturevalue("postgres_url")
