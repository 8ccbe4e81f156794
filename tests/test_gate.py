"""`mlebench check`: the CI gate passes on main, fails on a doctored baseline and on a broken
method, and its tolerance is the documented rule."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats as scipy_stats

from mlebench.registry import method_names
from mlebench import gate
from mlebench.cli import main
from mlebench.errors import ConfigError
from mlebench.gate import DEFAULT_BASELINE, CaseMeasure, GateSetup, allowed_drop, compare_with_baseline, read_baseline

from .helpers import invoke

FULL = ("mlesam", "full", "rgb,depth,event,lidar|all|none", "miou")


def test_allowed_drop_is_the_one_sided_prediction_bound():
    # n = 4 seeds, sd 0.8: t(0.95, 3) * 0.8 * sqrt(1 + 1/4)
    expected = scipy_stats.t.ppf(0.95, 3) * 0.8 * math.sqrt(1.25)
    assert allowed_drop((20.0, 0.8, 4), 0.1) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(2.353363 * 0.8 * 1.118034, rel=1e-6)
    assert allowed_drop((20.0, 0.01, 4), 0.3) == 0.3  # the thread-count difference when larger
    assert allowed_drop((20.0, 0.0, 4), 0.0) == gate.FLOOR_POINTS


def _baseline(values: dict, sd: float = 1.0, n: int = 4) -> dict:
    return {"format": 1, "setup": {}, "cases": [
        {"method": k[0], "protocol": k[1], "case": k[2], "metric": k[3], "mean": v, "sd": sd,
         "allowed_drop": allowed_drop((v, sd, n), 0.0)} for k, v in values.items()]}


def test_compare_marks_falls_improvements_and_missing_methods():
    other = ("mlesam", "missing-modality", "rgb|all|none", "miou")
    base = _baseline({FULL: 20.0, other: 10.0})
    bound = base["cases"][0]["allowed_drop"]
    now = {FULL: CaseMeasure(20.0 - bound - 0.01, 0, 0), other: CaseMeasure(10.0 + bound + 0.01, 0, 0)}
    result = compare_with_baseline(now, base, ["mlesam"])
    assert list(result.table.status) == ["fell", "improved"] and not result.passed
    now[FULL] = CaseMeasure(20.0 - bound + 0.01, 0, 0)
    result = compare_with_baseline(now, base, ["mlesam"])
    assert result.passed and list(result.table.status) == ["ok", "improved"]
    text = gate.format_gate(result)
    assert "improved: 1 case(s)" in text and "passed: 2 cases compared, 1 within tolerance, 1 improved, 0 fell" in text
    # a case that disappeared is a fall; a registered method without a baseline fails the gate
    result = compare_with_baseline({other: now[other]}, base, ["mlesam", "newmethod"])
    assert list(result.table.status) == ["fell", "improved"] and result.missing_methods == ["newmethod"]
    assert "method newmethod has no baseline; add it with `mlebench check --update`" in gate.format_gate(result)


def test_update_records_seeds_spread_and_commit(monkeypatch, tmp_path: Path):
    values = {0: 20.0, 1: 21.0, 2: 19.0}

    def fake_measure(methods, seed, setup, threads=None, echo=None):
        shift = 0.25 if threads == 1 else 0.0  # the one-thread run moves a little
        return {FULL: CaseMeasure(values[seed] + shift, values[seed] - 1, values[seed] + 1)}

    monkeypatch.setattr(gate, "measure", fake_measure)
    path = tmp_path / "b.json"
    result = invoke("check", "--update", "--baseline", str(path), "--methods", "mlesam", "--seeds", "0,1,2")
    assert result.exit_code == 0, result.output
    data = read_baseline(path)
    (case,) = data["cases"]
    assert case["seeds"] == {"0": 20.0, "1": 21.0, "2": 19.0} and case["mean"] == 20.0 and case["sd"] == 1.0
    assert case["thread_delta"] == 0.25 and case["seed0_ci"] == [19.0, 21.0]
    assert case["allowed_drop"] == allowed_drop((20.0, 1.0, 3), 0.25)
    assert data["commit"] and data["seeds"] == [0, 1, 2] and "t(0.95, n-1)" in data["rule"]
    bad = invoke("check", "--update", "--baseline", str(path), "--methods", "mlesam", "--seeds", "1,2")
    assert bad.exit_code == 1 and "--seeds must include 0" in bad.output


def test_committed_baseline_covers_every_registered_method():
    data = read_baseline(DEFAULT_BASELINE)
    assert {c["method"] for c in data["cases"]} == set(method_names())
    assert GateSetup(**{k: tuple(v) if isinstance(v, list) else v for k, v in data["setup"].items()}) == GateSetup()
    for case in data["cases"]:
        n = len(case["seeds"])
        assert case["allowed_drop"] == pytest.approx(allowed_drop((case["mean"], case["sd"], n), case["thread_delta"]))


def test_doctored_baseline_fails_with_a_table(tmp_path: Path):
    """The real measurement of one method against a baseline that claims 10 points more."""
    data = read_baseline(DEFAULT_BASELINE)
    for case in data["cases"]:
        if (case["method"], case["protocol"], case["case"], case["metric"]) == FULL:
            case["mean"] += 10.0  # every seed 10 points higher: the same spread, so the same tolerance
            case["seeds"] = {seed: value + 10.0 for seed, value in case["seeds"].items()}
    doctored = tmp_path / "doctored.json"
    doctored.write_text(json.dumps(data))
    result = CliRunner().invoke(main, ["check", "--methods", "mlesam", "--baseline", str(doctored)])
    assert result.exit_code == 1, result.output
    assert "FELL: 1 case(s) below the baseline by more than the allowed drop" in result.output
    line = next(ln for ln in result.output.splitlines() if "full rgb-depth-event-lidar" in ln)
    assert line.split()[0] == "mlesam" and "-1" in line  # about ten points down


def test_a_broken_method_fails_the_gate(monkeypatch):
    """MLE-SAM with its prediction scrambled (the class axis rolled) falls on every case."""
    from methods.mlesam.model import MLESAM

    original = MLESAM.decode

    def broken(self, features, image_size):
        out = original(self, features, image_size)
        out.logits = out.logits.roll(1, dims=1)
        return out

    monkeypatch.setattr(MLESAM, "decode", broken)
    result = CliRunner().invoke(main, ["check", "--methods", "mlesam"])
    assert result.exit_code == 1, result.output
    assert "FELL:" in result.output and "full rgb-depth-event-lidar" in result.output


def test_measurement_is_deterministic():
    setup = GateSetup(steps=5)
    first = gate.measure(["mlesam-noaux"], 0, setup)
    second = gate.measure(["mlesam-noaux"], 0, setup)
    assert first == second and len(first) == 20


def test_a_nan_in_the_new_run_is_a_fall_not_a_pass():
    base = _baseline({FULL: 20.0})
    result = compare_with_baseline({FULL: CaseMeasure(math.nan, math.nan, math.nan)}, base, ["mlesam"])
    assert list(result.table.status) == ["fell"] and not result.passed


def _seeded_case(**changes) -> dict:
    seeds = {"0": 20.0, "1": 21.0, "2": 19.0, "3": 20.5}
    values = list(seeds.values())
    mean = sum(values) / 4
    sd = float(np.std(values, ddof=1))
    case = {"method": "mlesam", "protocol": "full", "case": "rgb|all|none", "metric": "miou", "seeds": seeds,
            "mean": mean, "sd": sd, "thread_delta": 0.1, "allowed_drop": allowed_drop((mean, sd, 4), 0.1)}
    return {**case, **changes}


@pytest.mark.parametrize("changes,message", [
    ({}, None),
    ({"mean": 20.5}, "mean 20.5 is not the mean of its seeds (20.125)"),
    ({"allowed_drop": 0.01}, "allowed_drop 0.01 does not follow the rule"),
    ({"mean": math.nan}, "mean is nan, not a finite number"),
    ({"allowed_drop": math.inf}, "allowed_drop is inf, not a finite number"),
    ({"seeds": {"0": 20.0, "1": math.nan}}, "its seeds hold a value that is not a finite number"),
], ids=["sound", "mean", "tolerance", "nan-mean", "inf-tolerance", "nan-seed"])
def test_a_baseline_whose_numbers_are_not_its_seeds_is_refused(tmp_path: Path, changes: dict, message):
    """A NaN switches a case off (every comparison with NaN is false); a hand-edited mean or
    tolerance moves the gate silently: the baseline is refused, naming the case."""
    path = tmp_path / "b.json"
    path.write_text(json.dumps({"format": 1, "setup": {}, "cases": [_seeded_case(**changes)]}))
    if message is None:
        assert read_baseline(path)["cases"][0]["mean"] == 20.125
        return
    with pytest.raises(ConfigError, match=re.escape(f"mlesam full rgb|all|none miou: {message}")):
        read_baseline(path)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # every method trains: only a hang reaches this, not a loaded machine
def test_check_passes_on_main():
    """The gate itself, as CI runs it: every registered method against the committed baseline."""
    result = CliRunner().invoke(main, ["check"])
    assert result.exit_code == 0, result.output
    assert "passed:" in result.output and "0 fell" in result.output
