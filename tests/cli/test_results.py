"""`mlebench run --seeds` and `mlebench results list`: one run per seed as a group, the mean and
standard deviation over the seeds, and the listing's protocol, seed, split and interval columns."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest

from mlebench.data import load_dataset
from mlebench.results import ResultsStore

from ..helpers import invoke


@pytest.fixture(scope="module")
def root(counts_synthetic: Path) -> Path:
    """The data set the ``evaluated`` store was evaluated on (tests/conftest.py)."""
    return counts_synthetic


def test_seeds_train_one_run_per_seed_as_a_group(root: Path, tmp_path: Path):
    db = tmp_path / "r.sqlite"
    result = invoke("run", "--data-root", str(root), "--steps", "2", "--seeds", "0,1", "--protocol", "full",
                    "--results", str(db), "--weights", "none", "--save-checkpoint", str(tmp_path / "m.pt"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m-s0.pt").is_file() and (tmp_path / "m-s1.pt").is_file()
    runs = ResultsStore(db).runs()
    assert sorted(runs["seed"]) == [0, 1] and runs["group_id"].nunique() == 1
    frame = pd.read_csv(io.StringIO(invoke("results", "export", "--results", str(db)).output))
    miou = frame[frame.metric == "miou"]
    assert len(miou) == 2 and miou["value"].nunique() == 2  # the seeds differ
    assert (miou["seeds_n"] == 2).all()
    assert miou["seeds_mean"].iloc[0] == pytest.approx(miou["value"].mean(), abs=1e-15)
    assert miou["seeds_std"].iloc[0] == pytest.approx(miou["value"].std(ddof=1), abs=1e-15)
    listing = invoke("results", "list", "--results", str(db)).output
    mean, std = 100 * miou["value"].mean(), 100 * miou["value"].std(ddof=1)
    assert f"miou {mean:.2f} ± {std:.2f} (mean ± std)" in listing
    assert f"{mean:7.2f} ± {std:5.2f}" in result.output  # the group summary printed after the runs
    bad = invoke("run", "--data-root", str(root), "--seeds", "0,1", "--seed", "3", "--results", str(db))
    assert bad.exit_code == 2 and "give --seed or --seeds, not both" in bad.output
    bad = invoke("run", "--data-root", str(root), "--seeds", "0,x", "--results", str(db))
    assert bad.exit_code == 2 and "'0,x' is not a comma-separated list of integers" in bad.output


def test_results_list_shows_protocol_seed_split_and_interval(evaluated):
    db, ids = evaluated
    listing = invoke("results", "list", "--results", str(db)).output
    header = listing.splitlines()[0].split()
    for column in ("protocol", "preset", "seed", "split", "convention", "mIoU"):
        assert column in header
    frame = ResultsStore(db).results(run_ids=[ids[2]])
    full = frame[(frame.metric == "miou") & (frame.condition == "all")].iloc[0]
    line = next(ln for ln in listing.splitlines() if ln.startswith(ids[2]))
    assert "conditions" in line and "val" in line and "present" in line
    assert f"{100 * full.value:.2f} [{100 * full.ci_low:.2f}, {100 * full.ci_high:.2f}]" in line


def test_every_run_records_what_it_evaluated(evaluated, counts_synthetic):
    db, ids = evaluated
    runs = ResultsStore(db).runs().set_index("id")
    expected = load_dataset("synthetic", counts_synthetic, "val").identity()
    assert runs.loc[ids[0], "config"]["data"] == expected and expected["samples"] == 6
