"""A small synthetic set for the sweep tests' cells, and the one-node Slurm (skipped, or failing
under CI, where it is not running)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from mlebench.data.synthetic import generate_synthetic

HOW_TO_START = "needs a running Slurm: run `scripts/services.sh start slurm` as root (as CI does)"


@pytest.fixture(scope="package")
def sweep_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("sweep") / "s", size=64, n_train=8, n_val=4, n_test=1,
                              seed=2, workers=1)


@pytest.fixture
def slurm() -> None:
    """A Slurm whose node is up, or skip (fail under CI)."""
    problem = None
    if shutil.which("sinfo") is None:
        problem = "sinfo is not installed"
    else:
        states = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True).stdout.split()
        if not any(s.rstrip("*") in ("idle", "mix", "alloc") for s in states):
            problem = f"no Slurm node is up (sinfo: {' '.join(states) or 'nothing'})"
    if problem is not None:
        if "CI" in os.environ:
            pytest.fail(f"CI must run the sweep tests on Slurm: {problem}")
        pytest.skip(f"{HOW_TO_START} ({problem})")
