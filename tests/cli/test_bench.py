"""`mlebench bench feature-cache | decode | loader | throughput` and `mlebench pretrain` from the
command line: the JSON reports' counts and invariants (no timing claims), and a deterministic
SAM2 checkpoint from `pretrain` that MLE-SAM loads."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from mlebench.cli import main
from mlebench.data import dataset_info
from mlebench.registry import build_method

from .reference import MODS, cli

pytestmark = pytest.mark.usefixtures("_module_env")


def test_bench_feature_cache_json(root: Path):
    result = cli("bench", "feature-cache", "--samples", "3", "--batch-size", "2", "--data-root", root, "--json")
    report = json.loads(result.output)
    assert report["method"] == "mlesam" and report["protocol"] == "missing-modality" and report["preset"] == "tiny"
    assert report["cases"] == 15 and report["samples"] == 3 and report["batch_size"] == 2
    assert report["device"] == "cpu" and report["eval_size"] is None  # the tiny preset evaluates as stored
    assert report["miou_max_abs_diff"] == 0
    full, cached, uncached = (report["runs"][k] for k in ("full", "cached", "uncached"))
    assert (full["cases"], cached["cases"], uncached["cases"]) == (1, 15, 15)
    # Encoder passes per sample: four modalities once each; without the cache, every subset's
    # own (4 subsets of 1, 6 of 2, 4 of 3, 1 of 4 modalities: 32).
    assert (full["encoder_passes_per_sample"], cached["encoder_passes_per_sample"],
            uncached["encoder_passes_per_sample"]) == (4, 4, 32)
    for run in (full, cached, uncached):
        assert run["seconds"] > 0 and run["encode_s"] > 0 and run["decode_s"] > 0
        assert run["encode_s"] + run["decode_s"] + run["other_s"] == pytest.approx(run["seconds"])
        assert run["per_sample_s"] == run["seconds"] / 3
    assert report["ratio"] == uncached["seconds"] / cached["seconds"]  # formatting only, no timing claim
    assert report["cached_vs_full_per_sample"] == cached["per_sample_s"] / full["per_sample_s"]
    text = cli("bench", "feature-cache", "--samples", "2", "--batch-size", "2", "--data-root", root,
               "--eval-size", "96", "--protocol", "full").output
    assert "at 96 px short side" in text and "full protocol (1 case)" in text


def test_bench_decode_loader_and_throughput(root: Path):
    r = json.loads(cli("bench", "decode", "--samples", "2", "--batch-size", "2", "--repeats", "1", "--json").output)
    assert r["predictions_identical"] is True and r["image_size"] == [256, 256]
    assert r["speedup"] == r["decode_plain_s"] / r["decode_s"]
    r = json.loads(cli("bench", "loader", "--samples", "4", "--batch-size", "2", "--workers", "0,1", "--json").output)
    assert set(r["loader"]) == {"0", "1"} and all(v["train_samples_per_s"] > 0 for v in r["loader"].values())
    assert r["model_train_samples_per_s"] > 0 and r["model_eval_samples_per_s"] > 0
    result = CliRunner().invoke(main, ["bench", "loader", "--workers", "0,x"])
    assert result.exit_code == 2 and "'0,x' is not a comma-separated list of integers" in result.output
    if not torch.cuda.is_available():
        assert cli("bench", "throughput").output.strip() == (
            "bench throughput skipped: no CUDA device (torch.cuda.is_available() is False)")
    r = json.loads(cli("bench", "throughput", "--device", "cpu", "--preset", "tiny", "--steps", "1",
                       "--batch-size", "1", "--json").output)
    assert r["crop_size"] == 128 and r["eval_size"] == 128 and r["train_amp"] is False
    for key in ("train", "eval_fp32", "eval_bf16"):
        assert r[key]["images_per_s"] > 0 and r[key]["peak_gib"] is None  # no CUDA memory on CPU


def test_pretrain_writes_a_deterministic_loadable_sam2_checkpoint(tmp_path: Path):
    outs = [tmp_path / "a" / "x.pt", tmp_path / "b" / "x.pt"]
    for out in outs:
        result = cli("pretrain", "--steps", "2", "--n-images", "4", "--batch-size", "2", "--out", out)
        assert f"wrote {out}" in result.output
    blobs = [torch.load(out, map_location="cpu", weights_only=True) for out in outs]
    assert blobs[0]["model"].keys() == blobs[1]["model"].keys()
    for key, tensor in blobs[0]["model"].items():
        assert torch.equal(tensor, blobs[1]["model"][key]), key
    assert blobs[0]["mlebench_pretrain"]["final_loss"] == blobs[1]["mlebench_pretrain"]["final_loss"]
    assert blobs[0]["mlebench_pretrain"]["command"] == (
        "mlebench pretrain --method mlesam --steps 2 --batch-size 2 --lr 0.001 --seed 0 --n-images 4 --threads 2")
    method = build_method("mlesam", dataset_info("synthetic"), list(MODS), "tiny", sam2_checkpoint=str(outs[0]))
    sha = hashlib.sha256(outs[0].read_bytes()).hexdigest()
    assert method.frozen_source == f"sam2:{sha[:16]}"
    # Every SAM2 weight but the class-specific decoder parts (fresh for this data set's classes)
    # comes from the file.
    own, fresh = method.state_dict(), set(method.sam2_load_summary["fresh"])
    assert set(blobs[0]["model"]) <= set(own)
    loaded = [k for k in blobs[0]["model"] if k not in fresh]
    assert len(loaded) == method.sam2_load_summary["loaded"]
    assert sum(k.startswith("image_encoder.trunk.") for k in loaded) > 50
    for key in loaded:
        assert torch.equal(own[key], blobs[0]["model"][key]), key
