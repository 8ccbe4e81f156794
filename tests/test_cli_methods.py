"""`mlebench methods | params | bench lora | pretrain` from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from click.testing import CliRunner

from methods import build_method, method_names
from mlebench.cli import main
from mlebench.data.deliver import DELIVER_INFO


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_methods_lists_every_registered_method():
    result = invoke("methods")
    assert result.exit_code == 0
    assert result.output.split() == method_names()
    assert {"mlesam", "mlesam-integrated", "mlesam-weighted-noaux"} <= set(result.output.split())


def test_params_json_matches_the_model():
    result = invoke("params", "--method", "mlesam-noaux", "--preset", "tiny", "--dataset", "deliver",
                    "--modalities", "rgb,lidar", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert {"trainable", "frozen", "total", "parts"} <= set(report)
    model = build_method("mlesam-noaux", DELIVER_INFO, ["rgb", "lidar"], "tiny")
    assert report["trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert set(report["parts"]) == {"lora.rgb", "lora.lidar", "fusion", "decoder"}


def test_params_text_and_bad_options():
    result = invoke("params", "--method", "mlesam", "--preset", "tiny", "--dataset", "deliver")
    assert result.exit_code == 0 and "lora.event" in result.output and "trainable" in result.output
    result = invoke("params", "--method", "segformer")
    assert result.exit_code == 2 and "'segformer' is not one of" in result.output
    result = invoke("params", "--method", "mlesam", "--dataset", "mcubes", "--modalities", "rgb,depth")
    assert result.exit_code == 2 and "unknown modality 'depth' for mcubes" in result.output


def test_bench_lora_prints_both_timings_and_ratio():
    result = invoke("bench", "lora", "--size", "64", "--repeats", "1", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["loop_s"] > 0 and data["grouped_s"] > 0
    assert data["ratio"] == data["loop_s"] / data["grouped_s"]
    assert data["max_abs_diff"] < 1e-5
    result = invoke("bench", "lora", "--size", "64", "--repeats", "1", "--no-backward")
    assert "loop over modalities" in result.output and "ratio loop/grouped" in result.output
    assert invoke("bench", "lora", "--size", "70").exit_code == 2


def test_pretrain_is_reproducible_and_loads_as_a_sam2_checkpoint(tmp_path: Path):
    from mlebench.data.synthetic import generate_synthetic

    root = generate_synthetic(tmp_path / "pre", size=64, n_train=4, n_val=1, n_test=1, seed=9, workers=1)
    from methods.mlesam import pretrain

    outs = []
    for name in ("a.pt", "b.pt"):
        summary = pretrain.pretrain_tiny_sam2(tmp_path / name, steps=3, batch_size=2, data_root=root)
        outs.append(torch.load(tmp_path / name, weights_only=True))
        assert summary["command"].startswith("mlebench pretrain --steps 3")
    a, b = outs[0]["model"], outs[1]["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert all(k.startswith(pretrain.SAM2_PREFIXES) for k in a)
    model = build_method("mlesam", DELIVER_INFO, ["rgb", "depth"], "tiny", sam2_checkpoint=str(tmp_path / "a.pt"))
    assert torch.equal(model.image_encoder.trunk.blocks[0].attn.qkv.weight,
                       a["image_encoder.trunk.blocks.0.attn.qkv.weight"])
    # Pre-training trains the trunk itself: it moved away from the seeded random init.
    fresh = build_method("mlesam", DELIVER_INFO, ["rgb"], "tiny", sam2_checkpoint=None)
    assert not torch.equal(fresh.image_encoder.trunk.blocks[0].attn.qkv.weight,
                           a["image_encoder.trunk.blocks.0.attn.qkv.weight"])
