"""`mlebench methods | params | bench lora` from the command line (`pretrain`: tests/test_pretrain.py)."""

from __future__ import annotations

import json

import pytest

from mlebench.registry import build_method, method_names
from mlebench.data.deliver import DELIVER_INFO

from ..helpers import invoke


def test_methods_lists_every_registered_method():
    result = invoke("methods")
    assert result.exit_code == 0
    assert result.output.split() == method_names()
    assert {"mlesam", "mlesam-integrated", "mlesam-weighted-noaux"} <= set(result.output.split())


# Trainable parameters of the tiny preset, from the layer shapes alone.
# LoRA: 2 r (dim_in + dim_out) per block for q and v; blocks (in -> out) 32->32 | 32->64,
# 64->64 | 64->128, 128->128, 128->128 | 128->256.
TINY_LORA = 2 * 8 * sum(a + b for a, b in [(32, 32), (32, 64), (64, 64), (64, 128), (128, 128),
                                           (128, 128), (128, 256)])
# Unified fusion, channel routers: one Linear(C, C) per level, C = 64, 16, 8.
TINY_FUSION = sum(c * c + c for c in (64, 16, 8))
# Mask decoder minus its frozen transformer, IoU token and IoU head: 25 mask tokens, two
# transposed convs 64->16->8 (2x2) with a LayerNorm2d(16), conv_s0 (64->8) and conv_s1 (64->16),
# and 25 hypernetwork MLPs 64 -> 64 -> 64 -> 8.
TINY_DECODER = (
    25 * 64
    + (64 * 16 * 4 + 16) + 2 * 16 + (16 * 8 * 4 + 8)
    + (64 * 8 + 8) + (64 * 16 + 16)
    + 25 * ((64 * 64 + 64) * 2 + 64 * 8 + 8)
)
# Auxiliary head: 1x1 convs 64/16/8 -> 32, fuse 96 -> 32 (no bias) + BN(32), predict 32 -> 25.
TINY_AUX = (65 + 17 + 9) * 32 + 96 * 32 + 2 * 32 + (32 * 25 + 25)


def test_params_json_matches_the_model():
    result = invoke("params", "--method", "mlesam-noaux", "--preset", "tiny", "--dataset", "deliver",
                    "--modalities", "rgb,lidar", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    # Counted by hand from the tiny preset's layer shapes (Hiera 32-dim, stages 1-2-3-1,
    # LoRA rank 8, d_model 64, 25 classes); see TINY_PARTS.
    assert report["parts"] == {"lora.rgb": TINY_LORA, "lora.lidar": TINY_LORA,
                               "fusion": TINY_FUSION, "decoder": TINY_DECODER}
    assert report["trainable"] == 2 * TINY_LORA + TINY_FUSION + TINY_DECODER == 277_360
    model = build_method("mlesam-noaux", DELIVER_INFO, ["rgb", "lidar"], "tiny")
    frozen = sum(p.numel() for m in (model.image_encoder, model.sam_prompt_encoder) for p in m.parameters())
    decoder = model.sam_mask_decoder
    frozen += sum(p.numel() for m in (decoder.transformer, decoder.iou_prediction_head) for p in m.parameters())
    frozen += decoder.iou_token.weight.numel() + model.no_mem_embed.numel()
    assert report["frozen"] == frozen
    assert report["total"] == report["trainable"] + frozen == sum(p.numel() for p in model.parameters())


def test_params_text_and_bad_options():
    result = invoke("params", "--method", "mlesam", "--preset", "tiny", "--dataset", "deliver")
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split()[1:] for line in result.output.splitlines()[1:]}
    millions = lambda n: [f"{n / 1e6:.3f}", "M"]  # noqa: E731
    assert lines == {
        **{f"lora.{m}": millions(TINY_LORA) for m in ("rgb", "depth", "event", "lidar")},
        "fusion": millions(TINY_FUSION),
        "decoder": millions(TINY_DECODER),
        "aux_head": millions(TINY_AUX),
        "aux_gate": millions(1),  # the learned combination's weight (aux_combine: learned)
        "trainable": millions(4 * TINY_LORA + TINY_FUSION + TINY_DECODER + TINY_AUX + 1),
        "frozen": lines["frozen"],
        "total": lines["total"],
    }
    assert lines["trainable"] == ["0.328", "M"]
    result = invoke("params", "--method", "segformer")
    assert result.exit_code == 2 and "'segformer' is not one of" in result.output
    result = invoke("params", "--method", "mlesam", "--dataset", "mcubes", "--modalities", "rgb,depth")
    assert result.exit_code == 2 and "unknown modality 'depth' for mcubes" in result.output


def test_bench_lora_prints_both_timings_and_ratio(monkeypatch: pytest.MonkeyPatch):
    """No clock: the timer is replaced by one that runs the step once and reports 2 ms for the
    grouped pass and 6 ms for the loop (told apart by the mode the model was asked to run in),
    so every printed number is known."""
    from methods.mlesam import bench
    from methods.mlesam.model import MLESAM

    modes: list[bool] = []
    real_encode_many = MLESAM.encode_many

    def recording(self, inputs):
        modes.append(self.config.grouped_lora)
        return real_encode_many(self, inputs)

    def fake_best_time(fn, repeats):
        del modes[:]
        fn()
        assert len(set(modes)) == 1, modes  # one step runs in one mode
        return 0.002 if modes[0] else 0.006

    monkeypatch.setattr(MLESAM, "encode_many", recording)
    monkeypatch.setattr(bench, "best_time", fake_best_time)
    result = invoke("bench", "lora", "--size", "64", "--repeats", "1", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert (data["grouped_s"], data["loop_s"], data["ratio"]) == (0.002, 0.006, 3.0)
    assert data["modalities"] == ["rgb", "depth", "event", "lidar"] and data["size"] == 64
    assert data["max_abs_diff"] < 1e-5
    result = invoke("bench", "lora", "--size", "64", "--repeats", "3", "--no-backward")
    assert result.output.splitlines() == [
        "LoRA encode of 4 modalities, tiny preset, batch 2, 64x64, forward, cpu (best of 3)",
        "  loop over modalities :       6.0 ms",
        "  grouped (one pass)   :       2.0 ms",
        "  ratio loop/grouped   :      3.00x",
        f"  max |grouped - loop| : {float(result.output.split()[-1]):.2e}",
    ]
    result = invoke("bench", "lora", "--size", "70")
    assert result.exit_code == 2 and "70 is not a multiple of 32" in result.output
