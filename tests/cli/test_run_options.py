"""The run options end to end: --epochs set the steps, --no-feature-cache stores the same numbers
through the plain forward, --split test evaluates the test split, an option the protocol does
not take is a clean error, and data-loading workers change nothing while a bf16 evaluation is
recorded as such."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from mlebench.cli import main
from mlebench.engine.checkpoint import read_checkpoint
from mlebench.results import ResultsStore

from .reference import (
    BATCH,
    MODS,
    N_TEST,
    N_TRAIN,
    N_VAL,
    SEED,
    ProtocolRuns,
    as_dict,
    check_case,
    cli,
    fresh_method,
    run_rows,
    same_values,
    split_samples,
    value,
)

pytestmark = pytest.mark.usefixtures("_module_env")


def test_epochs_set_the_steps(runs: ProtocolRuns):
    r = runs("full")  # --epochs 2 with 4 training samples in batches of 2
    assert r["run_config"]["train"]["steps"] == 2 * (N_TRAIN // 2) == 4
    assert r["run_config"]["train"]["batch_size"] == 2


def test_no_feature_cache_stores_the_same_numbers(runs: ProtocolRuns, tmp_path: Path, monkeypatch):
    r = runs("missing-modality")
    db = tmp_path / "naive.sqlite"
    import mlebench.engine.evaluate as evaluate

    forwards = []  # the uncached path: one plain forward per case and batch
    real = evaluate._case_forward
    monkeypatch.setattr(evaluate, "_case_forward", lambda *a: forwards.append(1) or real(*a))
    cli("eval", "--protocol", "missing-modality", "--data-root", runs.root, "--seed", SEED, "--weights",
        "none", "--batch-size", BATCH, "--results", db, "--checkpoint", r["ckpt"], "--no-feature-cache")
    assert len(forwards) == 15 * math.ceil(N_VAL / BATCH)
    store = ResultsStore(db)
    assert store.runs().config[0]["feature_cache"] is False
    same_values(as_dict(store.results()), as_dict(r["eval_rows"]))


def test_split_test_evaluates_the_test_split(runs: ProtocolRuns, root: Path, tmp_path: Path):
    r = runs("full")
    db = tmp_path / "test.sqlite"
    result = cli("eval", "--protocol", "full", "--data-root", root, "--seed", SEED, "--weights", "none",
                 "--batch-size", BATCH, "--results", db, "--checkpoint", r["ckpt"], "--split", "test")
    assert f"on synthetic/test ({N_TEST} samples)" in result.output
    store = ResultsStore(db)
    assert store.runs().config[0]["eval_split"] == "test"
    rows = store.results()
    assert value(rows, "samples", MODS) == N_TEST
    test_samples = split_samples("synthetic", root, "test")
    check_case(rows, fresh_method("synthetic", r["ckpt"]), test_samples, MODS)
    assert value(rows, "miou", MODS) != value(r["eval_rows"], "miou", MODS)


def test_an_option_the_protocol_does_not_take_is_a_clean_error(root: Path, tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_text("protocol: {sweep: false}\n")
    result = CliRunner().invoke(main, ["run", "--protocol", "full", "--data-root", str(root), "--config",
                                       str(config), "--results", str(tmp_path / "r.sqlite"), "--steps", "1",
                                       "--weights", "none"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert "Error:" in result.output and "sweep" in result.output


def test_data_loading_workers_change_nothing_and_bf16_eval_is_recorded(runs: ProtocolRuns, root: Path,
                                                                          tmp_path: Path):
    r = runs("missing-modality")
    db, ckpt = tmp_path / "w.sqlite", tmp_path / "w.pt"
    common = ["--protocol", "missing-modality", "--data-root", root, "--config", r["config"], "--seed", SEED,
              "--weights", "none", "--batch-size", BATCH, "--results", db]
    cli("run", *common, "--steps", "2", "--save-checkpoint", ckpt, "--num-workers", "2")
    a, b = read_checkpoint(r["ckpt"])["state_dict"], read_checkpoint(ckpt)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # 2 workers train the same weights
    run_id = ResultsStore(db).runs().id[0]
    same_values(as_dict(r["run_rows"]), as_dict(run_rows(db, run_id)))  # ... and score the same
    config = ResultsStore(db).runs().config[0]
    assert config["train"]["num_workers"] == 2 and config["eval_num_workers"] == 2 and config["eval_amp"] is False
    assert r["run_config"]["eval_num_workers"] == 0 and r["run_config"]["train"]["num_workers"] == 0  # CPU default
    cli("eval", *common, "--checkpoint", r["ckpt"], "--amp")
    runs_now = ResultsStore(db).runs()
    assert runs_now.config[0]["eval_amp"] is True
    fp32 = as_dict(r["eval_rows"])
    bf16 = as_dict(run_rows(db, runs_now.id[0]))
    assert fp32.keys() == bf16.keys()
    mious = [(fp32[k], bf16[k]) for k in fp32 if k[4] == "miou"]
    assert all(math.isfinite(b) for _, b in mious)
    assert max(abs(a - b) for a, b in mious) < 5.0  # bf16 logits: close to fp32, not bit-equal
    result = CliRunner().invoke(main, ["eval", *map(str, common), "--checkpoint", str(r["ckpt"]), "--num-workers", "-1"])
    assert result.exit_code == 2 and "--num-workers" in result.output


def test_a_reference_recipe_from_the_command_line(root: Path, tmp_path: Path):
    """``-o recipe=reference`` trains CWSAM by its reference's schedule and loss; the run records
    both; a bad recipe or a bad augmentation option is one line naming it, and nothing is stored."""
    db = tmp_path / "r.sqlite"
    common = ["--data-root", str(root), "--results", str(db), "--steps", "2", "--weights", "none",
              "--protocol", "full", "--method", "cwsam"]
    config = tmp_path / "c.yaml"
    config.write_text("train: {batch_size: 2, crop_size: 32, crop_offsets: exact}\n")
    result = CliRunner().invoke(main, ["run", *common, "-o", "recipe=reference", "--config", str(config)])
    assert result.exit_code == 0, result.output
    stored = ResultsStore(db).runs().config[0]
    assert stored["method"]["recipe"] == "reference"
    assert (stored["train"]["schedule"], stored["train"]["min_lr"], stored["train"]["warmup_fraction"]) == (
        "cosine", 5e-7, 0.0)
    assert stored["train"]["crop_offsets"] == "exact"
    for option, config_text, needle in (
        (["-o", "recipe=deliver"], "train: {}\n", "cwsam: unknown recipe 'deliver'; known: paper, reference"),
        ([], "train: {crop_offsets: loose}\n", "crop_offsets"),
        ([], "train: {schedule: step}\n", "schedule"),
    ):
        config.write_text(config_text)
        bad = CliRunner().invoke(main, ["run", *common, *option, "--config", str(config)])
        assert bad.exit_code == 1 and isinstance(bad.exception, SystemExit), bad.output
        lines = [line for line in bad.output.splitlines() if line.startswith("Error:")]
        assert len(lines) == 1 and needle in lines[0], bad.output
    assert len(ResultsStore(db).runs()) == 1  # the refused runs stored nothing
