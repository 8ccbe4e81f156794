"""Fixtures of the end-to-end tests of every protocol (test_protocols.py, test_run_options.py,
test_real_layouts.py, test_bench.py): the synthetic data set, its val samples and the protocol
runs are made once for the package; ``_module_env`` gives each module a private working folder
on one torch thread. Modules with data of their own (test_run.py, test_bad_input.py,
test_results.py) override ``root``."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlebench.data.synthetic import generate_synthetic

from .reference import N_TEST, N_TRAIN, N_VAL, ProtocolRuns, split_samples


@pytest.fixture(scope="module")
def _module_env(one_torch_thread, tmp_path_factory: pytest.TempPathFactory):
    """Work in a private folder (runs write plots to ./runs/<run id>/), on one torch thread."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path_factory.mktemp("cwd"))
        yield


@pytest.fixture(scope="package")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = generate_synthetic(tmp_path_factory.mktemp("data") / "s", size=64, n_train=N_TRAIN, n_val=N_VAL,
                              n_test=N_TEST, seed=3, workers=1)
    val = [s["meta"] for s in split_samples("synthetic", root, "val", ["rgb"])]
    # What the condition checks of test_protocols.py rely on: mixed batches, a failure alone in its batch.
    assert [(m["weather"], m["sensor_failure"]) for m in val] == [
        ("cloud", "none"), ("fog", "none"), ("night", "none"), ("rain", "motionblur"), ("sun", "overexposure")]
    return root


@pytest.fixture(scope="package")
def val_samples(root: Path) -> list[dict]:
    return split_samples("synthetic", root, "val")


@pytest.fixture(scope="package")
def runs(root: Path, tmp_path_factory: pytest.TempPathFactory) -> ProtocolRuns:
    return ProtocolRuns(root, tmp_path_factory.mktemp("runs"))
