"""Options that would do nothing, or something else than asked, are refused in one line instead
of being passed over: --steps/--epochs/--checkpoint-every with --checkpoint, a --seeds list with
an empty entry, report --runs naming no run or an unknown one, report --reference of a method
the store has no run of, compare of a run with itself; and a group with one finished seed shows
its value, not "± nan"."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlebench.report.console import format_run_list, format_seed_summary
from mlebench.results import CaseCounts, CaseKey, ResultRow, ResultsStore

from ..helpers import FAST, invoke


def _error(result) -> str:
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert result.exit_code != 0 and len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


@pytest.mark.parametrize("extra,flag", [(["--steps", "5"], "--steps"), (["--epochs", "2"], "--epochs"),
                                        (["--checkpoint-every", "3"], "--checkpoint-every")])
def test_training_options_with_a_checkpoint_are_refused(small_synthetic: Path, work: Path, extra, flag):
    checkpoint = work / "m.pt"
    checkpoint.write_bytes(b"not read: the options are refused first")
    result = invoke("run", "--data-root", small_synthetic, "--checkpoint", checkpoint, *extra,
                    "--results", work / "r.sqlite", *FAST)
    assert _error(result) == (f"Error: {flag} has no effect with --checkpoint (the checkpoint is evaluated, "
                              "nothing is trained); drop one")
    assert not (work / "r.sqlite").exists() and not (work / "runs").exists()


@pytest.mark.parametrize("seeds,words", [("0,,1", "'0,,1' has an empty entry"), ("0,1,", "'0,1,' has an empty entry"),
                                         ("0,0", "give distinct integer seeds"), ("a,b", "not a comma-separated list")])
def test_malformed_seeds_are_refused(small_synthetic: Path, work: Path, seeds: str, words: str):
    result = invoke("run", "--data-root", small_synthetic, "--seeds", seeds, "--steps", "1", *FAST)
    assert result.exit_code == 2 and words in _error(result)


def test_report_refuses_an_empty_or_unknown_run_selection_and_an_absent_reference(evaluated, work: Path):
    db, ids = evaluated
    assert "',' names no run" in _error(invoke("report", "--results", db, "--runs", ","))
    assert "no run nope in" in _error(invoke("report", "--results", db, "--runs", f"{ids[0]},nope"))
    line = _error(invoke("report", "--results", db, "--reference", "nosuch"))
    assert "'nosuch': no run of that method in" in line and "methods there: mlesam" in line
    assert invoke("report", "--results", db, "--reference", "none").exit_code == 0
    assert invoke("report", "--results", db, "--runs", ids[0]).exit_code == 0
    # the default reference (the registry's default method) is not required to be in the store
    assert invoke("report", "--results", db, "--reference", "mlesam").exit_code == 0


def test_compare_of_a_run_with_itself_says_so(evaluated):
    db, ids = evaluated
    line = _error(invoke("compare", ids[0], ids[0], "--results", db))
    assert line == f"Error: RUN_A and RUN_B are the same run ({ids[0]}); compare two different runs"


def test_a_group_with_one_finished_seed_shows_no_nan(tmp_path: Path):
    store = ResultsStore(tmp_path / "r.sqlite")
    run = store.start_run(method="mlesam", variant="v", dataset="synthetic", train_modalities=["rgb"], preset="tiny",
                          config={}, seed=0, protocol="full", split="val", miou_convention="present", group_id="g" * 32)
    store.finish_run(run, [ResultRow("full", ("rgb",), "all", "none", "miou", 0.25, ci_low=0.2, ci_high=0.3)],
                     counts=[CaseCounts(CaseKey("full", ("rgb",), "all", "none"), ("a",), np.ones((1, 3, 2), int))])
    failed = store.start_run(method="mlesam", variant="v", dataset="synthetic", train_modalities=["rgb"],
                             preset="tiny", config={}, seed=1, protocol="full", split="val", group_id="g" * 32)
    store.fail_run(failed, "stopped")
    text = format_seed_summary(store, "g" * 32) + "\n" + format_run_list(store)
    assert "nan" not in text
    assert "25.00 (1 seed)" in format_seed_summary(store, "g" * 32)
    assert "miou 25.00 (one finished seed)" in format_run_list(store)
