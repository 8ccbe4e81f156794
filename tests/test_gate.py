"""`mlebench check`: the decision rule and its family-wise rate, the baseline's format and every
malformed baseline refused, per-method provenance, version warnings, and the gate on real runs."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import statistics
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats as scipy_stats

from mlebench import gate
from mlebench.cli import main
from mlebench.errors import ConfigError
from mlebench.gate import baseline as baseline_module
from mlebench.gate import rule
from mlebench.gate.baseline import Baseline, BaselineCase, MethodRecord, read_baseline, write_baseline
from mlebench.gate.measure import CaseMeasure, GateSetup
from mlebench.registry import method_names

from .helpers import invoke

FULL_CASE = ("full", "rgb,depth,event,lidar|all|none", "miou")
AVG_CASE = ("missing-modality", "*|all|none", "miou_avg")
RGB_CASE = ("missing-modality", "rgb|all|none", "miou")


def _record(seeds=(1, 2, 3, 4), **changes) -> MethodRecord:
    fields = dict(commit="c0ffee", created_at="2026-12-06T00:00:00+00:00",
                  versions={"torch": "2.14.1", "numpy": "2.4.6", "sam2": "1.1.0"}, setup=GateSetup(),
                  seeds=tuple(seeds), thread_seed=seeds[0], other_threads=1)
    return MethodRecord(**{**fields, **changes})


def _baseline(values: dict[tuple[str, str, str, str], list[float]], other_threads: float | None = None,
              path: Path = Path("b.json"), **record) -> Baseline:
    methods = sorted({k[0] for k in values})
    n = len(next(iter(values.values())))
    seeds = tuple(range(1, n + 1))
    cases = [BaselineCase(*key, seeds=dict(zip(seeds, vals)), other_threads=other_threads)
             for key, vals in values.items()]
    return Baseline(path, {m: _record(seeds, **record) for m in methods}, cases)


SPREAD = [20.0, 21.0, 19.0, 20.5]  # mean 20.125


# --- the rule ---------------------------------------------------------------------------------
def test_the_bound_is_the_one_sided_prediction_bound_of_one_new_run():
    # n = 4, sd of SPREAD: t(1 - alpha, 3) * sd * sqrt(1 + 1/4), written out by hand
    sd = math.sqrt(sum((v - 20.125) ** 2 for v in SPREAD) / 3)
    for alpha in (0.05, 0.05 / 18):
        expected = scipy_stats.t.isf(alpha, 3) * sd * math.sqrt(1.25)
        assert rule.prediction_bound(SPREAD, alpha) == pytest.approx(expected, rel=1e-12)
    assert scipy_stats.t.isf(0.05, 3) == pytest.approx(2.353363, rel=1e-6)
    assert rule.allowed_drop([20.0, 20.01], 0.05, 0.3) == 0.3  # the thread difference when larger
    assert rule.allowed_drop([20.0, 20.0], 0.05, 0.0) == rule.FLOOR_POINTS
    with pytest.raises(ValueError, match="at least 2 values"):
        rule.prediction_bound([20.0], 0.05)
    # caught 95% of the time: a new run ~ N(mean - drop, sd) lands below mean - allowed
    assert rule.detectable_drop(2.0, 1.0) == pytest.approx(2.0 + 1.6448536, rel=1e-7)
    drop = rule.detectable_drop(2.0, 0.5)
    assert scipy_stats.norm.cdf((drop - 2.0) / 0.5) == pytest.approx(0.95, rel=1e-9)


def test_each_gated_figure_is_tested_at_the_family_alpha_over_their_number():
    keys = {(m, *c): SPREAD for m in ("a", "b", "c") for c in (FULL_CASE, AVG_CASE, RGB_CASE)}
    now = {k: CaseMeasure(20.125, 0, 0) for k in keys}
    result = gate.compare_with_baseline(now, _baseline(keys), ["a", "b", "c"], ["a", "b", "c"])
    gated = result.table[result.table.gated]
    assert len(gated) == 6 and set(gated.alpha) == {0.05 / 6}
    assert set(result.table[~result.table.gated].alpha) == {rule.CASE_ALPHA}
    # checking one method: the family is its two figures
    one = gate.compare_with_baseline(now, _baseline(keys), ["a"], ["a", "b", "c"])
    assert set(one.gated.alpha) == {0.05 / 2} and result.passed and one.passed


def test_the_family_wise_false_alarm_rate_holds_in_a_simulation():
    """Normal seed-to-seed noise, 9 methods x 2 correlated figures, 8 baseline seeds and one new
    seed: the whole gate passes in 95.3% of 20,000 repetitions (Monte Carlo error 0.15%; Bonferroni
    is conservative); with the uncorrected per-figure 95% bound it would pass in 45%."""
    rng = np.random.default_rng(7)
    reps, methods, n = 20000, 9, 8
    cov = np.array([[1.0, 0.6], [0.6, 1.0]])
    draws = rng.multivariate_normal([0, 0], cov, size=(reps, methods, n + 1))  # (R, M, seeds, figure)
    base, new = draws[:, :, :n], draws[:, :, n]
    mean, sd = base.mean(axis=2), base.std(axis=2, ddof=1)

    def pass_rate(alpha: float) -> float:
        bound = scipy_stats.t.isf(alpha, n - 1) * sd * math.sqrt(1 + 1 / n)
        return float(np.mean(np.all(new >= mean - bound, axis=(1, 2))))

    corrected = pass_rate(rule.FAMILY_ALPHA / (methods * len(rule.GATED)))
    assert 0.947 <= corrected <= 0.97, corrected
    assert pass_rate(0.05) < 0.6


def test_compare_marks_fell_watch_gone_improved():
    keys = {("m", *FULL_CASE): SPREAD, ("m", *AVG_CASE): SPREAD, ("m", *RGB_CASE): SPREAD}
    base = _baseline(keys)
    bound = rule.allowed_drop(SPREAD, 0.05 / 2, 0.0)
    watch = rule.allowed_drop(SPREAD, 0.05, 0.0)
    now = {("m", *FULL_CASE): CaseMeasure(20.125 - bound - 0.01, 0, 0),
           ("m", *AVG_CASE): CaseMeasure(20.125 + bound + 0.01, 0, 0),
           ("m", *RGB_CASE): CaseMeasure(20.125 - watch - 0.01, 0, 0)}
    result = gate.compare_with_baseline(now, base, ["m"], ["m"])
    assert list(result.table.status) == ["fell", "improved", "watch"] and not result.passed
    now[("m", *FULL_CASE)] = CaseMeasure(20.125 - bound + 0.01, 0, 0)
    result = gate.compare_with_baseline(now, base, ["m"], ["m"])
    assert result.passed and list(result.table.status) == ["ok", "improved", "watch"]  # watch never fails
    text = gate.format_gate(result)
    assert "watch: 1 of 1 other cases below their own uncorrected 95% bound" in text
    assert "passed: 2 gated figures, 1 within tolerance, 1 improved, 0 fell; 3 cases compared, 0 gone" in text
    del now[("m", *RGB_CASE)]  # a case the run no longer produces fails, gated or not
    result = gate.compare_with_baseline(now, base, ["m"], ["m"])
    assert list(result.table.status) == ["ok", "improved", "gone"] and not result.passed
    assert "FELL: 1 case(s) of the baseline are gone from the run" in gate.format_gate(result)
    now[("m", *FULL_CASE)] = CaseMeasure(math.nan, math.nan, math.nan)  # a NaN is gone too, never a pass
    assert gate.compare_with_baseline(now, base, ["m"], ["m"]).table.status.iloc[0] == "gone"


def test_methods_without_a_baseline_or_without_registration_fail_naming_them():
    base = _baseline({("m", *FULL_CASE): SPREAD, ("old", *FULL_CASE): SPREAD})
    now = {("m", *FULL_CASE): CaseMeasure(20.0, 0, 0)}
    result = gate.compare_with_baseline(now, base, ["m", "new"], ["m", "new"])
    assert not result.passed and result.missing_methods == ["new"] and result.retired_methods == ["old"]
    text = gate.format_gate(result)
    assert "FELL: method new has no baseline; add it with `mlebench check --update --methods new`" in text
    assert "FELL: the baseline has method old, which is not registered" in text
    retired_only = gate.compare_with_baseline(now, base, ["m"], ["m"])  # m itself is fine
    assert retired_only.retired_methods == ["old"] and not retired_only.passed
    assert gate.compare_with_baseline(now, base, ["m"], ["m", "old"]).passed  # --methods m: old is registered


def test_a_thread_difference_larger_than_the_bound_widens_the_figure():
    tight = [20.0, 20.001, 20.002, 20.0]
    base = _baseline({("m", *FULL_CASE): tight}, other_threads=20.7)
    row = gate.compare_with_baseline({("m", *FULL_CASE): CaseMeasure(19.5, 0, 0)}, base, ["m"], ["m"]).table.iloc[0]
    assert row.allowed_drop == pytest.approx(0.7) and row.status == "ok"


def test_other_package_versions_are_a_warning_beside_the_verdict():
    base = _baseline({("m", *FULL_CASE): SPREAD, ("k", *FULL_CASE): SPREAD})
    now = {(m, *FULL_CASE): CaseMeasure(20.0, 0, 0) for m in "mk"}
    running = {"torch": "2.15.0", "numpy": "2.4.6", "sam2": "1.1.0"}
    result = gate.compare_with_baseline(now, base, ["m", "k"], ["m", "k"], versions=running)
    assert result.passed and result.warnings == [
        "warning: torch 2.15.0 runs, the baseline of k, m was measured with torch 2.14.1; numbers may move by "
        "about a seed's spread"]
    assert result.warnings[0] in gate.format_gate(result).splitlines()
    same = gate.compare_with_baseline(now, base, ["m"], ["m", "k"], versions={**running, "torch": "2.14.1"})
    assert same.warnings == []


# --- measuring and writing a baseline ---------------------------------------------------------
class FakeMeasure:
    """Seed-dependent values for the full figure and an rgb case; records every call."""

    def __init__(self, nan_seeds: tuple[int, ...] = ()):
        self.calls: list[tuple[tuple[str, ...], int, int]] = []
        self.nan_seeds = nan_seeds

    def __call__(self, methods, seed, setup, threads=None, echo=None):
        self.calls.append((tuple(methods), seed, threads or setup.threads))
        shift = 0.25 if (threads or setup.threads) != setup.threads else 0.0
        out = {}
        for m in methods:
            out[(m, *FULL_CASE)] = CaseMeasure(20.0 + seed / 10 + shift, 19.0, 21.0)
            rgb = math.nan if seed in self.nan_seeds else 10.0 + seed / 10
            out[(m, *RGB_CASE)] = CaseMeasure(rgb, 9.0, 11.0)
        return out


@pytest.fixture
def fake_measure(monkeypatch: pytest.MonkeyPatch) -> FakeMeasure:
    fake = FakeMeasure()
    monkeypatch.setattr(baseline_module, "measure", fake)
    monkeypatch.setattr(gate, "measure", fake)
    return fake


def test_update_records_seeds_threads_and_provenance_per_method(fake_measure: FakeMeasure, tmp_path: Path):
    path = tmp_path / "b.json"
    result = invoke("check", "--update", "--baseline", path, "--methods", "mlesam,cmnext", "--seeds", "1,2,3")
    assert result.exit_code == 0, result.output
    # seeds at the gate's 2 threads, then the first seed again at 1 thread: the gate's own count vs another
    assert fake_measure.calls == [(("mlesam", "cmnext"), 1, 2), (("mlesam", "cmnext"), 2, 2),
                                  (("mlesam", "cmnext"), 3, 2), (("mlesam", "cmnext"), 1, 1)]
    data = json.loads(path.read_text())
    assert data["format"] == 2 and set(data["methods"]) == {"mlesam", "cmnext"}
    record = data["methods"]["mlesam"]
    assert record["seeds"] == [1, 2, 3] and record["thread_check"] == {"seed": 1, "threads": 1}
    assert record["commit"] and set(record["versions"]) >= {"torch", "numpy", "sam2"}
    case = next(c for c in data["cases"] if (c["method"], c["protocol"]) == ("mlesam", "full"))
    assert case["seeds"] == {"1": 20.1, "2": 20.2, "3": 20.3} and case["other_threads"] == pytest.approx(20.35)
    read = read_baseline(path)
    assert rule.thread_delta(read.cases_of("mlesam")[0], 1) == pytest.approx(0.25)


def test_update_with_a_single_thread_gate_measures_against_two(fake_measure: FakeMeasure,
                                                               monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setattr(baseline_module, "GateSetup", lambda: GateSetup(threads=1))
    assert invoke("check", "--update", "--baseline", tmp_path / "b.json", "--methods", "mlesam",
                  "--seeds", "1,2").exit_code == 0
    assert fake_measure.calls[-1] == (("mlesam",), 1, 2)


def test_update_of_one_method_keeps_the_others_provenance(fake_measure: FakeMeasure, tmp_path: Path):
    path = tmp_path / "b.json"
    write_baseline(path, _baseline({("cmnext", *FULL_CASE): SPREAD}, path=path, commit="old1",
                                   versions={"torch": "2.0"}, setup=GateSetup(steps=30)))
    assert invoke("check", "--update", "--baseline", path, "--methods", "mlesam", "--seeds", "1,2").exit_code == 0
    data = read_baseline(path)
    assert set(data.methods) == {"cmnext", "mlesam"}
    kept = data.methods["cmnext"]
    assert (kept.commit, kept.versions, kept.setup.steps) == ("old1", {"torch": "2.0"}, 30)
    assert [c.values for c in data.cases_of("cmnext")] == [SPREAD]
    assert data.methods["mlesam"].commit != "old1" and data.methods["mlesam"].setup == GateSetup()


def test_n_counts_the_seeds_that_have_a_value(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    fake = FakeMeasure(nan_seeds=(2,))
    monkeypatch.setattr(baseline_module, "measure", fake)
    path = tmp_path / "b.json"
    assert invoke("check", "--update", "--baseline", path, "--methods", "mlesam", "--seeds", "1,2,3").exit_code == 0
    rgb = next(c for c in read_baseline(path).cases if c.protocol == "missing-modality")
    assert rgb.seeds == {1: 10.1, 2: None, 3: 10.3} and rgb.values == [10.1, 10.3]
    now = {("mlesam", *RGB_CASE): CaseMeasure(10.2, 0, 0), ("mlesam", *FULL_CASE): CaseMeasure(20.2, 0, 0)}
    row = gate.compare_with_baseline(now, read_baseline(path), ["mlesam"], ["mlesam"]).table.iloc[1]
    assert row.n == 2 and row.baseline == pytest.approx(10.2) and row.sd == pytest.approx(statistics.stdev([10.1, 10.3]))


def test_update_refuses_a_case_with_fewer_than_two_valued_seeds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setattr(baseline_module, "measure", FakeMeasure(nan_seeds=(1, 2)))
    path = tmp_path / "b.json"
    write_baseline(path, _baseline({("cmnext", *FULL_CASE): SPREAD}, path=path))
    before = path.read_bytes()
    result = invoke("check", "--update", "--baseline", path, "--methods", "mlesam", "--seeds", "1,2,3")
    assert result.exit_code == 1 and path.read_bytes() == before
    assert ("--update: 1 case(s) have a value for fewer than 2 seeds, so no spread can be measured: "
            "mlesam missing-modality rgb|all|none miou (1 of 3 seeds); nothing was written") in result.output
    one = invoke("check", "--update", "--baseline", path, "--methods", "mlesam", "--seeds", "1")
    assert one.exit_code == 1 and "a baseline needs at least 2 training seeds" in one.output


def test_the_checked_seed_must_be_new_to_the_baseline(fake_measure: FakeMeasure, tmp_path: Path):
    path = tmp_path / "b.json"
    write_baseline(path, _baseline({("mlesam", *FULL_CASE): SPREAD}, path=path))
    result = invoke("check", "--baseline", path, "--methods", "mlesam", "--seed", "3")
    assert result.exit_code == 1 and fake_measure.calls == []
    assert "--seed 3: the baseline of mlesam was measured with seeds [1, 2, 3, 4]" in result.output
    ok = invoke("check", "--baseline", path, "--methods", "mlesam", "--seed", "11")
    assert fake_measure.calls == [(("mlesam",), 11, 2)] and "seed 11" in ok.output


def test_drop_removes_a_method_that_is_no_longer_registered(fake_measure: FakeMeasure, tmp_path: Path):
    path = tmp_path / "b.json"
    write_baseline(path, _baseline({("mlesam", *FULL_CASE): SPREAD, ("retired", *FULL_CASE): SPREAD}, path=path))
    failed = invoke("check", "--baseline", path, "--methods", "mlesam")
    assert failed.exit_code == 1 and "the baseline has method retired, which is not registered" in failed.output
    assert invoke("check", "--baseline", path, "--drop", "retired").exit_code == 0
    assert set(read_baseline(path).methods) == {"mlesam"}
    unknown = invoke("check", "--baseline", path, "--drop", "nosuch")
    assert unknown.exit_code == 1 and "--drop: the baseline" in unknown.output and "has no method nosuch" in unknown.output


# --- malformed baselines -------------------------------------------------------------------
def _good_json() -> dict:
    base = _baseline({("mlesam", *FULL_CASE): SPREAD, ("mlesam", *RGB_CASE): SPREAD}, other_threads=20.2)
    return baseline_module.to_json(base)


def _break(data: dict, how: str) -> str:
    case = data["cases"][0]
    if how == "nan-seed":
        case["seeds"]["2"] = math.nan
    elif how == "inf-threads":
        case["other_threads"] = math.inf
    elif how == "text-seed":
        case["seeds"]["2"] = "20.1"
    elif how == "one-seed":
        case["seeds"] = {"1": 20.0, "2": None, "3": None, "4": None}
    elif how == "stray-seed":
        case["seeds"]["9"] = 20.0
    elif how == "twice":
        data["cases"].append(dict(case))
    elif how == "no-record":
        del data["methods"]["mlesam"]
    elif how == "format-1":
        data["format"] = 1
    elif how == "setup-key":
        data["methods"]["mlesam"]["setup"]["epochs"] = 3
    elif how == "few-seeds":
        data["methods"]["mlesam"]["seeds"] = [1]
    return json.dumps(data)  # Python writes NaN and Infinity, as a careless tool would


MALFORMED = {
    "nan-seed": "mlesam full rgb,depth,event,lidar|all|none miou: seed 2 is nan, not a finite number",
    "inf-threads": "mlesam full rgb,depth,event,lidar|all|none miou: other_threads is inf, not a finite number",
    "text-seed": "seed 2 is '20.1', not a finite number",
    "one-seed": "has a value for 1 seed(s); at least 2 are needed to measure a spread",
    "stray-seed": "seed(s) 9 are not among the method's seeds [1, 2, 3, 4]",
    "twice": "mlesam full rgb,depth,event,lidar|all|none miou appears twice",
    "no-record": "method mlesam has no record under 'methods'",
    "format-1": "is not an mlebench CI baseline of format 2 (format 1)",
    "setup-key": "method mlesam: setup has unknown key(s) epochs",
    "few-seeds": "method mlesam: seeds [1] are not 2 or more distinct integers",
}


@pytest.mark.parametrize("how", list(MALFORMED))
def test_a_malformed_baseline_is_refused_with_one_line(how: str, tmp_path: Path):
    path = tmp_path / "b.json"
    path.write_text(_break(_good_json(), how))
    with pytest.raises(ConfigError, match=re.escape(MALFORMED[how])) as caught:
        read_baseline(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)
    result = invoke("check", "--baseline", path, "--methods", "mlesam")
    assert result.exit_code == 1 and MALFORMED[how] in result.output and "Traceback" not in result.output


def test_a_sound_baseline_reads_back_as_written(tmp_path: Path):
    path = tmp_path / "b.json"
    path.write_text(_break(_good_json(), "none"))
    data = read_baseline(path)
    assert data.cases[0].values == SPREAD and data.methods["mlesam"].setup == GateSetup()


# --- the committed baseline and real runs -----------------------------------------------------
def test_committed_baseline_covers_every_registered_method_with_new_check_seed():
    data = read_baseline(gate.DEFAULT_BASELINE)
    assert set(data.methods) == set(method_names())
    for name, record in data.methods.items():
        assert record.setup == GateSetup() and len(record.seeds) >= 4, name
        assert gate.DEFAULT_CHECK_SEED not in record.seeds, name
        gated = [c for c in data.cases_of(name) if rule.is_gated(c)]
        assert len(gated) == len(rule.GATED), name


def test_measurement_is_deterministic_and_the_full_case_is_the_all_modality_subset():
    setup = GateSetup(steps=5)
    first = gate.measure(["mlesam-noaux"], 0, setup)
    second = gate.measure(["mlesam-noaux"], 0, setup)
    assert first == second and len(first) == 20
    # the full protocol run on the checkpoint gives, bit for bit, the value measure() reads off
    # the missing-modality protocol's all-modality subset
    (full_key,) = [k for k in first if k[1] == "full"]
    evaluated = gate.measure(["mlesam-noaux"], 0, setup, derive_full=False)
    assert evaluated[full_key] == first[full_key] and evaluated == first


def test_a_doctored_baseline_fails_with_a_table(tmp_path: Path):
    """The real measurement of one method against a baseline whose seeds are 10 points higher."""
    data = read_baseline(gate.DEFAULT_BASELINE)
    cases = []
    for case in data.cases:
        if (case.method, case.protocol, case.metric) == ("sam-lora", "full", "miou"):
            # every seed and the thread re-run 10 points higher: the same spread, the same tolerance
            case = dataclasses.replace(case, seeds={s: v + 10.0 for s, v in case.seeds.items()},
                                       other_threads=case.other_threads + 10.0)
        cases.append(case)
    data = dataclasses.replace(data, cases=cases)
    doctored = tmp_path / "doctored.json"
    write_baseline(doctored, data)
    result = CliRunner().invoke(main, ["check", "--methods", "sam-lora", "--baseline", str(doctored)])
    assert result.exit_code == 1, result.output
    assert "FELL: 1 gated figure(s) below the baseline by more than the allowed drop" in result.output
    line = next(ln for ln in result.output.splitlines() if "full rgb-depth-event-lidar" in ln)
    assert line.split()[0] == "sam-lora" and line.split()[-1] == "fell" and float(line.split()[8]) < -9  # ten points


@pytest.mark.slow
@pytest.mark.timeout(1800)  # every method trains: only a hang reaches this, not a loaded machine
def test_check_passes_on_main():
    """The gate itself, as CI runs it: every registered method, seed 0 (new to the baseline)."""
    result = CliRunner().invoke(main, ["check"])
    assert result.exit_code == 0, result.output
    assert "passed:" in result.output and " 0 fell" in result.output and "0 gone" in result.output
