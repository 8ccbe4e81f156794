"""Progress lines where CI reads them: training lines at a steady pace of the clock (not of the
steps), evaluation lines counting samples and batches over several passes, and the lines of a
real run in its log."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlebench.data import load_dataset
from mlebench.engine.progress import CountingDataset
from mlebench.engine.train import TrainConfig, train
from mlebench.results import ResultsStore

from ..helpers import FAST, ProbeMethod, invoke


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """In-process model runs on one torch thread."""


@pytest.fixture(scope="module")
def root(small_synthetic: Path) -> Path:
    """The small synthetic set (tests/conftest.py)."""
    return small_synthetic


class FakeClock:
    """A clock that moves ``tick`` seconds on at every reading."""

    def __init__(self, tick: float) -> None:
        self.now, self.tick = -tick, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def test_training_progress_lines_come_at_a_steady_pace(root: Path):
    ds = load_dataset("synthetic", root, "train", ["rgb"])
    lines: list[str] = []
    config = TrainConfig(steps=6, batch_size=2, crop_size=32, log_every=1)
    train(ProbeMethod(ds.info), ds, config, report=lines.append, report_every=25, clock=FakeClock(10))
    # 10 s per step: a line at 30 s (step 3) and at 60 s (step 6), none in between.
    assert [line.split(",")[0] for line in lines] == ["train: step 3/6 (50%)", "train: step 6/6 (100%)"]
    assert lines[0].startswith("train: step 3/6 (50%), loss ")
    assert lines[0].endswith(", 0.2 samples/s, elapsed 30s, ETA 30s")
    assert lines[1].endswith(", 0.2 samples/s, elapsed 1m00s, ETA 0s")


def test_evaluation_progress_lines_count_batches_and_samples(root: Path):
    ds = load_dataset("synthetic", root, "val", ["rgb"])
    lines: list[str] = []
    counted = CountingDataset(ds, lines.append, passes=3, batch_size=1, every=15, clock=FakeClock(10))
    assert len(counted) == 2 and counted.info is ds.info and counted.refs is ds.refs
    for _ in range(3):
        for i in range(len(counted)):
            assert counted[i]["meta"]["id"] == ds.refs[i].id
    assert lines == [
        "eval: sample 2/6 (33%), batch 2/6 of pass 1/3, 0.1 samples/s, elapsed 20s, ETA 40s",
        "eval: sample 4/6 (67%), batch 4/6 of pass 2/3, 0.1 samples/s, elapsed 40s, ETA 20s",
        "eval: sample 6/6 (100%), batch 6/6 of pass 3/3, 0.1 samples/s, elapsed 1m00s, ETA 0s",
    ]


def test_a_run_writes_progress_lines_to_a_log_and_keeps_yaml_floats(root: Path, work: Path):
    config = work / "c.yaml"
    config.write_text("train: {batch_size: 2, crop_size: 64, base_size: 64, lr: 1e-4}\n")
    db = work / "r.sqlite"
    result = invoke("run", "--data-root", root, "--protocol", "full", "--train-modalities", "rgb", "--steps", "2",
                    "--config", config, "--results", db, "--progress-every", "0", *FAST)
    assert result.exit_code == 0, result.output
    assert "train: step 1/2 (50%)" in result.output and "train: step 2/2 (100%), loss " in result.output
    assert "eval: sample 2/2 (100%), batch 1/1" in result.output
    stored = ResultsStore(db).runs()["config"][0]["train"]
    assert stored["lr"] == 1e-4 and isinstance(stored["lr"], float)
