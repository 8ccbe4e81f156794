"""`mlebench run / train / eval / results` end to end, resume, divergence, bad input, torchrun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
import torch

from mlebench.registry import build_method
from mlebench.data import dataset_info, load_dataset
from mlebench.data.synthetic import generate_synthetic
from mlebench.engine.checkpoint import read_checkpoint, save_checkpoint
from mlebench.engine.train import NonFiniteLoss, TrainConfig, train
from mlebench.results import ResultsStore
from mlebench.results.schema import SCHEMA_VERSION

from ..helpers import invoke

VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """In-process runs on one torch thread (subprocesses get OMP_NUM_THREADS=1 from _env)."""


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("run") / "s", size=64, n_train=8, n_val=4, n_test=1,
                              seed=2, workers=1)


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def test_run_train_eval_results(root: Path, tmp_path: Path, store_target):
    """run, eval, results list/export, report, compare, reap and migrate, on an SQLite file and
    on a PostgreSQL database (``--results URL``): the same commands, the same numbers."""
    db, ckpt = store_target, tmp_path / "m.pt"
    result = invoke("run", "--data-root", str(root), "--steps", "3", "--results", str(db),
                    "--save-checkpoint", str(ckpt), "--weights", "none")
    assert result.exit_code == 0, result.output
    for line in ("rgb-depth-event-lidar", "depth-lidar", "miou_avg", "miou_e_p0.2", "stored in",
                 "for 3 steps on cpu", "15 cases on synthetic/val (4 samples)"):
        assert line in result.output
    runs = ResultsStore(db).runs()
    assert list(runs["status"]) == ["finished"] and runs["train_modalities"][0] == "rgb,depth,event,lidar"
    config = runs["config"][0]
    assert config["missing_modality"] == "drop" and config["train"]["steps"] == 3 and config["checkpoint"] is None
    assert read_checkpoint(ckpt)["extra"]["step"] == 3
    # eval of the saved checkpoint reproduces the numbers exactly.
    result = invoke("eval", "--data-root", str(root), "--checkpoint", str(ckpt), "--results", str(db),
                    "--protocol", "missing-modality", "--weights", "none", "--heartbeat-interval", "0.05")
    assert result.exit_code == 0, result.output
    beats = ResultsStore(db).runs().iloc[0]  # the job beat while it evaluated (every 0.05 s)
    lived = datetime.fromisoformat(beats["ended_at"]) - datetime.fromisoformat(beats["started_at"])
    since_beat = datetime.fromisoformat(beats["ended_at"]) - datetime.fromisoformat(beats["heartbeat_at"])
    assert lived.total_seconds() > 0.5 and since_beat.total_seconds() < 0.5 * lived.total_seconds()
    out = invoke("results", "export", "--results", str(db), "--format", "json")
    rows = pd.DataFrame(json.loads(out.output))
    # The export carries at least these columns, in this order (the run's own fields may grow).
    needed = ["run_id", "method", "variant", "dataset", "train_modalities", "protocol", "test_modalities",
              "condition", "corruption", "metric", "class", "value"]
    assert [c for c in rows.columns if c in needed] == needed and rows.columns[0] == "run_id"
    # Per run: 15 cases x (miou, pixel_accuracy, mean_f1, samples and 25 per-class IoUs) + 4 summaries.
    assert rows.groupby("run_id").size().tolist() == [15 * (4 + 25) + 4] * 2
    assert (rows[rows.metric == "samples"].value == 4).all()
    # eval of the saved checkpoint reproduces every stored number of the run exactly.
    key = ["test_modalities", "condition", "corruption", "metric", "class"]
    first, second = (g.set_index(key).value for _, g in rows.groupby("run_id", sort=False))
    assert first.index.equals(second.index)
    assert first.isna().equals(second.isna()) and (first.dropna() == second.dropna()).all()
    miou = rows[rows.metric == "miou"].pivot_table(index="test_modalities", columns="run_id", values="value")
    assert miou.shape == (15, 2)
    assert (miou.iloc[:, 0] == miou.iloc[:, 1]).all()
    assert ((miou >= 0) & (miou <= 1)).all().all()
    summary = rows[rows.test_modalities == "*"]
    assert set(summary.metric) == {"miou_avg", "miou_e_p0.2", "miou_e_p0.1", "miou_e_p0.05"}
    for run_id, avg in summary[summary.metric == "miou_avg"].set_index("run_id").value.items():
        assert avg == pytest.approx(miou[run_id].mean(), abs=1e-12)
    eval_config = ResultsStore(db).runs()["config"][0]  # newest first
    assert eval_config["checkpoint"] == str(ckpt) and eval_config["train"] is None
    listing = invoke("results", "list", "--results", str(db))
    assert listing.output.count("finished") == 2
    assert all(run_id in listing.output for run_id in rows.run_id.unique())
    csv = tmp_path / "r.csv"
    assert invoke("results", "export", "--results", str(db), "--format", "csv", "-o", str(csv)).exit_code == 0
    from_csv = pd.read_csv(csv, keep_default_na=False, na_values=[""])
    assert len(from_csv) == len(rows)
    assert list(from_csv.run_id) == list(rows.run_id) and list(from_csv.metric) == list(rows.metric)
    assert from_csv.value.isna().equals(rows.value.isna())
    assert (from_csv.value.dropna() == rows.value.dropna()).all()
    first_id, second_id = rows.run_id.unique()
    compared = invoke("compare", first_id, second_id, "--results", str(db), "--resamples", "100", "--json")
    assert compared.exit_code == 0, compared.output
    assert all(case["difference"] == 0 for case in json.loads(compared.output)["cases"])
    report = invoke("report", "--results", str(db), "--format", "markdown", "--table", "missing-modality")
    assert report.exit_code == 0, report.output
    row = next(line for line in report.output.splitlines() if line.startswith("| mlesam / R-D-E-L"))
    cells = [c.strip() for c in row.split("|")[2:17]]  # the 15 test subsets
    assert cells == [f"{100 * v:.2f}" for v in miou[first_id].reindex(
        ["rgb", "depth", "event", "lidar", "rgb,depth", "rgb,event", "rgb,lidar", "depth,event", "depth,lidar",
         "event,lidar", "rgb,depth,event", "rgb,depth,lidar", "rgb,event,lidar", "depth,event,lidar",
         "rgb,depth,event,lidar"])]
    for args, said in [(["results", "reap"], "marked 0 stale run(s) failed"),
                       (["results", "migrate"], f"is already at schema version {SCHEMA_VERSION}")]:
        done = invoke(*args, "--results", str(db))
        assert done.exit_code == 0 and said in done.output, done.output


def test_protocols_and_methods_listing():
    result = invoke("protocols")
    assert result.exit_code == 0
    assert [line.split()[0] for line in result.output.splitlines()] == ["conditions", "full", "missing-modality",
                                                                       "noise", "tsne"]


def test_bad_input_is_clear_and_writes_nothing(root: Path, tmp_path: Path):
    db = tmp_path / "r.sqlite"
    for args, code, message in [
        (["--method", "segformer"], 2, "'segformer' is not one of"),
        (["--protocol", "robust"], 2, "'robust' is not one of"),
        (["--dataset", "kitti"], 2, "'kitti' is not one of"),
        (["--train-modalities", "rgb,thermal"], 2, "unknown modality 'thermal' for synthetic"),
        (["--steps", "2", "--epochs", "1"], 2, "give --steps or --epochs, not both"),
    ]:
        result = invoke("run", "--data-root", str(root), "--results", str(db), *args)
        assert result.exit_code == code, (args, result.output)
        assert message in result.output
    # A checkpoint of another modality set: clear error, no run written.
    method = build_method("mlesam", dataset_info("synthetic"), ["rgb", "depth"], "tiny", sam2_checkpoint=None)
    other = save_checkpoint(method, tmp_path / "rd.pt")
    result = invoke("eval", "--data-root", str(root), "--checkpoint", str(other), "--results", str(db),
                    "--weights", "none")
    assert result.exit_code == 1
    assert "is for modalities ['rgb', 'depth'], but this run uses ['rgb', 'depth', 'event', 'lidar']" in result.output
    result = invoke("eval", "--data-root", str(root), "--checkpoint", str(other), "--results", str(db),
                    "--train-modalities", "rgb,depth", "--method", "mlesam-noaux", "--weights", "none")
    assert result.exit_code == 1 and "is for method 'mlesam'" in result.output
    assert not db.exists()
    # A results file that is not ours is refused and left alone.
    foreign = tmp_path / "notes.sqlite"
    foreign.write_text("my notes")
    result = invoke("run", "--data-root", str(root), "--results", str(foreign), "--steps", "1",
                    "--weights", "none", "--protocol", "full")
    assert result.exit_code == 1 and f"--results {foreign} is a text file; writing the results store there would " \
        "destroy it" in result.output
    assert foreign.read_text() == "my notes"
    config = tmp_path / "bad.yaml"
    config.write_text("optimizer: {lr: 1}\n")
    result = invoke("run", "--data-root", str(root), "--config", str(config))
    assert result.exit_code == 1 and "unknown section(s) optimizer" in result.output
    result = invoke("run", "--data-root", str(tmp_path / "absent"), "--results", str(db))
    assert result.exit_code == 1 and "does not exist" in result.output
    assert not db.exists()


def test_config_file_overrides(root: Path, tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_text("method: {top_k: 1, sam2_checkpoint: null}\ntrain: {lr: 0.0005, batch_size: 2}\n")
    db = tmp_path / "r.sqlite"
    result = invoke("run", "--data-root", str(root), "--config", str(config), "--steps", "1", "--results", str(db),
                    "--protocol", "full", "--save-checkpoint", str(tmp_path / "m.pt"))
    assert result.exit_code == 0, result.output
    stored = ResultsStore(db).runs()["config"][0]
    assert stored["method"]["top_k"] == 1 and stored["train"]["lr"] == 0.0005 and stored["train"]["batch_size"] == 2
    assert stored["train"]["steps"] == 1 and stored["frozen_source"] == "seed:0"
    written = read_checkpoint(tmp_path / "m.pt")
    assert written["config"]["top_k"] == 1 and written["extra"]["step"] == 1


def _train_args(root: Path, ckpt: Path, steps: int, config: Path) -> list[str]:
    return ["train", "--data-root", str(root), "--steps", str(steps), "--checkpoint-every", "2",
            "--save-checkpoint", str(ckpt), "--weights", "none", "--config", str(config)]


# `mlebench train` whose process kills itself (SIGKILL: no clean-up, no atexit) right after the
# checkpoint of step KILL_AT is on disk: a crash at a known point instead of a timing race.
KILL_AFTER_CHECKPOINT = """
import os, signal, sys

import mlebench.engine.train as train_module
from mlebench.cli import main

KILL_AT = int(os.environ["MLEBENCH_TEST_KILL_AT"])
real_save = train_module.save_or_rescue


def save_then_die(method, path, extra=None):
    out = real_save(method, path, extra=extra)
    if (extra or {}).get("step") == KILL_AT:
        os.kill(os.getpid(), signal.SIGKILL)
    return out


train_module.save_or_rescue = save_then_die
main(sys.argv[1:], prog_name="mlebench")
"""


def test_killed_run_resumes_to_the_same_weights(root: Path, tmp_path: Path):
    steps, kill_at = 10, 6
    # Batches of 2 from 8 samples: 4 steps per epoch, so step 6 is in the middle of epoch 1 and
    # the resumed run has to skip ahead inside an epoch's permutation.
    config = tmp_path / "c.yaml"
    config.write_text("train: {batch_size: 2, crop_size: 64, base_size: 64}\n")
    straight = tmp_path / "straight.pt"
    subprocess.run([str(VENV_BIN / "mlebench"), *_train_args(root, straight, steps, config)], check=True,
                   env=_env(), capture_output=True)
    script = tmp_path / "train_then_die.py"
    script.write_text(KILL_AFTER_CHECKPOINT)
    ckpt = tmp_path / "resumed.pt"
    killed = subprocess.run([sys.executable, str(script), *_train_args(root, ckpt, steps, config)],
                            env={**_env(), "MLEBENCH_TEST_KILL_AT": str(kill_at)}, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    left = read_checkpoint(ckpt)
    assert left["extra"]["step"] == kill_at
    assert not any(torch.equal(v, read_checkpoint(straight)["state_dict"][k]) for k, v in left["state_dict"].items()
                   if k.startswith("lora.") and v.is_floating_point())  # really a mid-way state
    result = subprocess.run([str(VENV_BIN / "mlebench"), *_train_args(root, ckpt, steps, config), "--resume"],
                            env=_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    a, b = read_checkpoint(straight), read_checkpoint(ckpt)
    assert a["extra"]["step"] == b["extra"]["step"] == steps
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    # The optimizer and schedule state too: the resumed run is the straight run.
    assert a["extra"]["scheduler"] == b["extra"]["scheduler"]
    states_a, states_b = a["extra"]["optimizer"]["state"], b["extra"]["optimizer"]["state"]
    assert states_a.keys() == states_b.keys()
    for index, state in states_a.items():
        for name, tensor in state.items():
            assert torch.equal(tensor, states_b[index][name]), (index, name)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(root: Path, tmp_path: Path, monkeypatch):
    ds = load_dataset("synthetic", root, "train", ["rgb", "depth"])
    method = build_method("mlesam", ds.info, ["rgb", "depth"], "tiny", sam2_checkpoint=None)
    calls = {"n": 0}
    original = method.loss

    def loss(output, target):
        calls["n"] += 1
        value = original(output, target)
        return value * float("nan") if calls["n"] > 4 else value

    monkeypatch.setattr(method, "loss", loss)
    ckpt = tmp_path / "m.pt"
    config = TrainConfig(steps=10, batch_size=2, crop_size=64, log_every=3, checkpoint_every=2)
    with pytest.raises(NonFiniteLoss, match=f"loss became nan at step 6; the last good checkpoint is kept at {ckpt}"):
        train(method, ds, config, checkpoint=ckpt)
    kept = read_checkpoint(ckpt)
    assert kept["extra"]["step"] == 4
    assert all(torch.isfinite(v).all() for v in kept["state_dict"].values() if v.is_floating_point())


@pytest.mark.slow
def test_torchrun_two_processes_match_one(root: Path, tmp_path: Path):
    method = build_method("mlesam", dataset_info("synthetic"), ["rgb", "depth", "event", "lidar"], "tiny",
                          sam2_checkpoint=None)
    with torch.no_grad():
        for p in method.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    ckpt = save_checkpoint(method, tmp_path / "m.pt")
    common = ["eval", "--data-root", str(root), "--checkpoint", str(ckpt), "--protocol", "missing-modality",
              "--weights", "none", "--batch-size", "1"]
    one, two = tmp_path / "one.sqlite", tmp_path / "two.sqlite"
    subprocess.run([str(VENV_BIN / "mlebench"), *common, "--results", str(one)], check=True, env=_env(),
                   capture_output=True)
    result = subprocess.run(
        [str(VENV_BIN / "torchrun"), "--nproc-per-node", "2", "--master-port", "29517", "-m", "mlebench", *common,
         "--results", str(two)], env=_env(), capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = ResultsStore(one).results(), ResultsStore(two).results()
    assert len(ResultsStore(two).runs()) == 1  # rank 0 writes, once
    assert ResultsStore(two).runs()["config"][0]["world_size"] == 2
    key = ["test_modalities", "metric", "class"]
    merged = a.merge(b, on=key, suffixes=("_1", "_2"))
    assert len(merged) == len(a) == len(b)
    assert merged.value_1.isna().equals(merged.value_2.isna())  # NaN where NaN, nowhere else
    both = merged.dropna(subset=["value_1"])
    assert ((both.value_1 - both.value_2).abs() < 1e-9).all()
    assert (merged[merged.metric == "samples"].value_1 == 4).all()
    # The per-sample counts are gathered from both ranks back into data-set order.
    counts_one = ResultsStore(one).case_counts(ResultsStore(one).runs()["id"][0])
    counts_two = ResultsStore(two).case_counts(ResultsStore(two).runs()["id"][0])
    assert len(counts_one) == len(counts_two) == 15
    for c1, c2 in zip(counts_one, counts_two):
        assert c1.key == c2.key and c1.sample_ids == c2.sample_ids and len(c1.sample_ids) == 4
        assert (c1.counts == c2.counts).all()
    # DDP training runs too.
    result = subprocess.run(
        [str(VENV_BIN / "torchrun"), "--nproc-per-node", "2", "--master-port", "29518", "-m", "mlebench", "train",
         "--data-root", str(root), "--steps", "2", "--save-checkpoint", str(tmp_path / "ddp.pt"),
         "--weights", "none"], env=_env(), capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_checkpoint(tmp_path / "ddp.pt")["extra"]["step"] == 2


@pytest.mark.slow
def test_torchrun_epochs_are_passes_over_the_data(root: Path, tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_text("train: {batch_size: 2, crop_size: 64, base_size: 64}\n")
    ckpt = tmp_path / "ddp.pt"
    result = subprocess.run(
        [str(VENV_BIN / "torchrun"), "--nproc-per-node", "2", "--master-port", "29519", "-m", "mlebench", "train",
         "--data-root", str(root), "--epochs", "1", "--config", str(config), "--save-checkpoint", str(ckpt),
         "--weights", "none"], env=_env(), capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    # One epoch of 8 training samples, 2 ranks x batches of 2: 2 steps, each taking 4 samples.
    assert read_checkpoint(ckpt)["extra"]["step"] == 8 // (2 * 2)


@pytest.mark.slow
def test_the_embedded_default_end_to_end(tmp_path: Path, monkeypatch):
    """`mlebench run` with no options but fewer steps: synthetic set generated on first use,
    tiny preset on the shipped pre-trained SAM2, four modalities, missing-modality protocol."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLEBENCH_CACHE_DIR", str(tmp_path / "cache"))
    result = invoke("run", "--steps", "3")
    assert result.exit_code == 0, result.output
    assert "training mlesam (tiny) on synthetic rgb-depth-event-lidar for 3 steps on cpu" in result.output
    assert "15 cases on synthetic/val (100 samples)" in result.output
    runs = ResultsStore(tmp_path / "results.sqlite").runs()
    assert list(runs["status"]) == ["finished"]
    assert runs["config"][0]["frozen_source"].startswith("sam2:")
    assert runs["config"][0]["train"]["steps"] == 3 and runs["config"][0]["eval_split"] == "val"
    rows = ResultsStore(tmp_path / "results.sqlite").results()
    assert len(rows[rows.metric == "miou"]) == 15
    assert (rows[rows.metric == "samples"].value == 100).all()
    assert (tmp_path / "runs" / f"{runs['id'][0]}.pt").is_file()
