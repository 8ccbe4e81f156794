"""Helpers shared by test modules in several folders: the CLI run in-process, the environment of a
child interpreter, a stand-in method for training, a tiny perturbed MLE-SAM, and copies of the
small synthetic set with a file to break (fixtures using these live in tests/conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from click.testing import CliRunner
from PIL import Image

from mlebench.cli import main
from mlebench.data import dataset_info, load_dataset
from mlebench.registry import build_method

REPO_ROOT = Path(__file__).resolve().parents[1]

# Where DELIVER keeps each file, written out from the release's layout and its reference loader
# (jamycheung/DELIVER, semseg/datasets/deliver.py: depth = rgb.replace('/img', '/hha')
# .replace('_rgb', '_depth'), likewise lidar, event, semantic) — never taken from the loader's
# own table, so that a swapped folder or suffix there cannot stay consistent with the fixtures.
DELIVER_LAYOUT = {
    "rgb": "img/{weather}/{split}/{scene}/{frame}_rgb_front.png",
    "depth": "hha/{weather}/{split}/{scene}/{frame}_depth_front.png",
    "depth_raw": "depth/{weather}/{split}/{scene}/{frame}_depth_front.png",
    "event": "event/{weather}/{split}/{scene}/{frame}_event_front.png",
    "lidar": "lidar/{weather}/{split}/{scene}/{frame}_lidar_front.png",
    "label": "semantic/{weather}/{split}/{scene}/{frame}_semantic_front.png",
}


def deliver_path(root: Path, modality: str, weather: str, split: str, scene: str, frame: str) -> Path:
    """The file of ``modality`` (or ``"label"``) of one DELIVER sample, by :data:`DELIVER_LAYOUT`."""
    return Path(root) / DELIVER_LAYOUT[modality].format(weather=weather, split=split, scene=scene, frame=frame)
FAST = ["--weights", "none"]
RDEL = ("rgb", "depth", "event", "lidar")


def invoke(*args: object):
    """``mlebench ARGS`` in-process, every argument as a string; exceptions propagate."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of a child interpreter that imports mlebench and ``tests`` from this checkout."""
    pythonpath = os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": pythonpath, "PYTHONDONTWRITEBYTECODE": "1", **extra}


# -- a stand-in method for training -----------------------------------------------------------


class ProbeMethod(torch.nn.Module):
    """A stand-in method with what training and checkpoints need; its loss turns NaN at a call."""

    method_name, variant, preset, frozen_source = "probe", "probe", "tiny", "none"
    versioned_packages: tuple[str, ...] = ()

    def __init__(self, info, nan_from: int | None = None) -> None:
        super().__init__()
        self.info, self.modalities, self.nan_from, self.calls = info, ["rgb"], nan_from, 0
        self.weight = torch.nn.Parameter(torch.ones(()))

    def forward(self, inputs):
        return None

    def loss(self, output, target):
        self.calls += 1
        value = (self.weight - 3.0) ** 2
        return value * float("nan") if self.nan_from is not None and self.calls >= self.nan_from else value

    def config_dict(self):
        return {}

    def trainable_state_dict(self):
        return {"weight": self.weight.detach().clone()}


# -- a tiny MLE-SAM with its trainable weights moved off their init ------------------------------


def perturbed_method(seed: int, modalities=RDEL, **options):
    torch.manual_seed(seed)
    m = build_method("mlesam", dataset_info("synthetic"), modalities, "tiny", sam2_checkpoint=None, **options)
    with torch.no_grad():
        for p in m.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    return m.eval()


# -- copies of the small synthetic set with a file to break (the broken_root fixture) -----------

COPIED_FROM: dict[Path, Path] = {}


def root_of(copy: Path) -> Path:
    """The data set a ``broken_root`` copy was made from."""
    return COPIED_FROM[copy]


def first_val(root: Path) -> tuple[str, str, str, str]:
    ref = load_dataset("synthetic", root, "val", ["rgb"]).refs[0]
    weather, scene, frame = ref.id.split("/")
    return weather, "val", scene, frame


def png(path: Path, size: int) -> Path:
    Image.fromarray(np.zeros((size, size, 3), dtype=np.uint8)).save(path)
    return path


# -- real read-only and full file systems (tmpfs mounts; root only) ------------------------------


def mount_tmpfs(folder: Path, size: str = "256k", readonly: bool = False) -> bool:
    """Mount a tmpfs of ``size`` at ``folder`` (made here); False where mounting is not allowed
    (not root). Under CI, which runs as root, a refusal is a failure: these cases must run there."""
    import subprocess

    import pytest

    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if readonly else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        if "CI" in os.environ:
            pytest.fail(f"CI runs as root and must mount a tmpfs at {folder}: {done.stderr.strip()}")
        return False
    return True


def unmount(folder: Path) -> None:
    import subprocess

    subprocess.run(["umount", str(folder)], capture_output=True, check=False)


def fill(folder: Path) -> None:
    """Write into ``folder`` until its file system is full."""
    try:
        with open(folder / ".filler", "wb") as fh:
            while True:
                fh.write(bytes(4096))
    except OSError:
        pass


NO_MOUNT = "needs root to mount a tmpfs (read-only and full disks): run the tests as root, as CI does"
