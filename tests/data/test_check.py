"""The evaluation files checked before anything runs (``check_eval_files``), where the loader
decides which sizes may differ from the label's: DELIVER-layout low-resolution event frames pass,
a smaller depth image does not."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mlebench.data import load_dataset
from mlebench.data.check import check_eval_files
from mlebench.errors import DataError

from ..helpers import deliver_path, first_val, png


def test_the_loader_decides_which_sizes_may_differ(broken_root: Path, tmp_path: Path):
    """DELIVER stores low-resolution event frames on purpose; the loader resizes them."""
    where = first_val(broken_root)
    shutil.copy(png(tmp_path / "small.png", 32), deliver_path(broken_root, "event", *where))
    check_eval_files(load_dataset("synthetic", broken_root, "val", ["rgb", "event"]))
    with pytest.raises(DataError, match="depth file .* is 32x32, but its label is 64x64"):
        shutil.copy(tmp_path / "small.png", deliver_path(broken_root, "depth", *where))
        check_eval_files(load_dataset("synthetic", broken_root, "val", ["rgb", "depth"]))
