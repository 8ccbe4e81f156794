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
