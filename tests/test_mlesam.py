"""MLE-SAM against the plain sam2 encoder, its LoRA/fusion/loss pieces and SAM2 checkpoints."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from sam2.modeling.backbones.hieradet import Hiera
from sam2.modeling.backbones.image_encoder import FpnNeck, ImageEncoder
from sam2.modeling.position_encoding import PositionEmbeddingSine

from methods import build_method
from methods.losses import ohem_cross_entropy
from methods.mlesam.fusion import LevelRouter, MultiModalFusion
from methods.mlesam.model import HIERA_BASE_PLUS, HIERA_TINY, HieraSpec, make_config
from mlebench.data.deliver import DELIVER_INFO
from mlebench.errors import ConfigError

MODALITIES = ("rgb", "depth", "event", "lidar")


def _tiny(**overrides):
    torch.manual_seed(0)
    return build_method("mlesam", DELIVER_INFO, MODALITIES, "tiny", **overrides).eval()


def _randomise_lora_b(model) -> None:
    with torch.no_grad():
        for experts in model.lora.experts:
            experts.lora_b.normal_(0, 0.05)


def _vanilla_encoder(spec: HieraSpec, d_model: int) -> ImageEncoder:
    trunk = Hiera(
        embed_dim=spec.embed_dim, num_heads=spec.num_heads, stages=spec.stages,
        window_spec=spec.window_spec, global_att_blocks=spec.global_att_blocks,
        window_pos_embed_bkg_spatial_size=spec.window_pos_embed_bkg_spatial_size,
    )  # fmt: skip
    neck = FpnNeck(
        position_encoding=PositionEmbeddingSine(num_pos_feats=d_model, normalize=True, temperature=10000),
        d_model=d_model, backbone_channel_list=spec.channel_list, fpn_top_down_levels=[2, 3],
        fpn_interp_model="nearest",
    )  # fmt: skip
    return ImageEncoder(trunk=trunk, neck=neck, scalp=1).eval()


def test_lora_with_zero_b_is_the_vanilla_sam2_encoder():
    model = _tiny()
    vanilla = _vanilla_encoder(HIERA_TINY, model.config.d_model)
    vanilla.load_state_dict(model.image_encoder.state_dict())  # strict: same architecture
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        ours = model.encode("depth", x)
        fpn = vanilla(x)["backbone_fpn"]
        dec = model.sam_mask_decoder
        expected = (fpn[2] + model.no_mem_embed.reshape(1, -1, 1, 1), dec.conv_s1(fpn[1]), dec.conv_s0(fpn[0]))
        for got, want in zip(ours, expected):
            torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
        _randomise_lora_b(model)  # the comparison can fail: a non-zero B changes the features
        assert not torch.allclose(model.encode("depth", x).sfm, expected[0], atol=1e-3)
    assert [f.shape[-1] for f in ours] == [128 // 16, 128 // 8, 128 // 4]
    assert [f.shape[1] for f in ours] == [64, 16, 8]


def test_lora_update_sized_from_qkv_at_q_pool_blocks():
    model = _tiny()
    for block, experts in zip(model.image_encoder.trunk.blocks, model.lora.experts):
        assert experts.dim_out == block.attn.qkv.out_features // 3 == block.dim_out
        assert experts.lora_a.shape[-1] == block.dim
    assert any(b.dim != b.dim_out for b in model.image_encoder.trunk.blocks)


def test_grouped_lora_equals_the_loop():
    model = _tiny()
    _randomise_lora_b(model)
    g = torch.Generator().manual_seed(1)
    inputs = {m: torch.randn(2, 3, 64, 64, generator=g) for m in ("lidar", "rgb", "event")}
    with torch.no_grad():
        grouped = model.encode_many(inputs)
        for m, x in inputs.items():
            for got, want in zip(grouped[m], model.encode(m, x)):
                torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_router_keeps_top_k_and_gets_gradients():
    torch.manual_seed(0)
    router = LevelRouter(channels=8, top_k=2, router="channel")
    stacked = torch.randn(3, 4, 8, 5, 5, requires_grad=True)  # (B, M, C, H, W)
    weights = router.weights(stacked)
    assert weights.shape == (3, 4, 8)
    assert torch.equal((weights > 0).sum(dim=1), torch.full((3, 8), 2))
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(3, 8))
    # The kept ones are the two largest softmax scores.
    probs = torch.softmax(router.linear(stacked.mean(dim=(-2, -1))), dim=1)
    assert torch.equal(weights > 0, probs >= probs.topk(2, dim=1).values[:, -1:])
    router(stacked).square().sum().backward()
    assert router.linear.weight.grad is not None and router.linear.weight.grad.abs().sum() > 0
    scalar = LevelRouter(channels=8, top_k=1, router="scalar")
    w = scalar.weights(stacked.detach())
    assert w.shape == (3, 4, 1) and torch.equal((w > 0).sum(dim=1), torch.ones(3, 1, dtype=torch.long))


def test_fusion_modes_match_their_definitions():
    torch.manual_seed(0)
    maps = [torch.randn(2, 8, 4, 4) for _ in range(3)]
    integrated = MultiModalFusion([8], "integrated", top_k=2, router="channel")
    torch.testing.assert_close(integrated([maps])[0], torch.stack(maps).mean(0))
    unified = MultiModalFusion([8], "unified", top_k=2, router="channel")
    weighted = unified.routers[0](torch.stack(maps, dim=1))
    torch.testing.assert_close(unified([maps])[0], torch.stack(maps).mean(0) + weighted)
    # One modality present: the fusion is that modality (mean) plus itself (weight 1).
    torch.testing.assert_close(unified([maps[:1]])[0], 2 * maps[0])


def _reference_ohem(logits, labels, thresh=0.7, ignore=255):
    # The DELIVER/CMNeXt OhemCrossEntropy, re-stated.
    n_min = labels[labels != ignore].numel() // 16
    loss = F.cross_entropy(logits, labels, ignore_index=ignore, reduction="none").view(-1)
    hard = loss[loss > -math.log(thresh)]
    if hard.numel() < n_min:
        hard, _ = loss.topk(n_min)
    return hard.mean()


@pytest.mark.parametrize("scale", [0.1, 3.0, 30.0])
def test_ohem_matches_the_reference(scale):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 16, 16, generator=g) * scale
    labels = torch.randint(0, 5, (2, 16, 16), generator=g)
    labels[:, :3] = 255
    # Make some pixels easy so that both branches (hard count above/below n_min) occur.
    easy = labels.clone()
    easy[easy == 255] = 0
    logits = logits + 8.0 * F.one_hot(easy, 5).permute(0, 3, 1, 2) * (scale > 1)
    torch.testing.assert_close(ohem_cross_entropy(logits, labels), _reference_ohem(logits, labels))


def test_losses_and_backward_reach_lora_and_router():
    model = _tiny()
    model.train()
    x = {m: torch.randn(2, 3, 64, 64) for m in MODALITIES}
    target = torch.randint(0, 25, (2, 64, 64))
    out = model(x)
    loss = model.loss(out, target)
    expected = ohem_cross_entropy(out.main_logits, target) + 0.4 * ohem_cross_entropy(out.aux_logits, target)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(out.logits, 0.5 * out.main_logits + 0.5 * out.aux_logits)
    loss.backward()
    assert model.lora.experts[0].lora_b.grad.abs().sum() > 0  # B gets gradient first (A x != 0)
    assert model.fusion.routers[0].linear.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.image_encoder.parameters())


def test_bf16_autocast_forward():
    model = _tiny()
    x = {m: torch.randn(1, 3, 64, 64) for m in MODALITIES}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        loss = model.loss(out, torch.randint(0, 25, (1, 64, 64)))
    assert torch.isfinite(loss)


def test_config_errors():
    with pytest.raises(ConfigError, match="unknown MLE-SAM option\\(s\\) ranks"):
        make_config("tiny", ranks=4)
    with pytest.raises(ConfigError, match="global-attention blocks \\[1\\] are stage-start q-pool blocks"):
        make_config("tiny", trunk=HieraSpec(32, 1, (1, 2, 3, 1), (8, 4, 8, 4), (1,), (7, 7)))
    with pytest.raises(ConfigError, match="unknown fusion 'max'"):
        make_config("tiny", fusion="max")
    model = _tiny()
    with pytest.raises(ConfigError, match="must be a multiple of 32"):
        model.encode("rgb", torch.randn(1, 3, 72, 64))


def _lora_count(spec: HieraSpec, rank: int) -> int:
    """2 r (dim + dim_out) per block for q and v, from the Hiera spec alone."""
    total, dim = 0, spec.embed_dim
    for stage, blocks in enumerate(spec.stages):
        dim_out = spec.embed_dim * 2**stage
        for _ in range(blocks):
            total += 2 * rank * (dim + dim_out)
            dim = dim_out
    return total


def test_parameter_report_for_the_paper_preset():
    model = build_method("mlesam", DELIVER_INFO, ["rgb"], "paper")
    report = model.parameter_report()
    assert report["parts"]["lora.rgb"] == _lora_count(HIERA_BASE_PLUS, 32) == 1_326_080
    # Tab. IV: 5.2M trainable for one modality.
    assert abs(report["trainable"] - 5.2e6) / 5.2e6 < 0.05, report["trainable"]
    four = build_method("mlesam", DELIVER_INFO, MODALITIES, "paper").parameter_report()
    assert four["trainable"] - report["trainable"] == 3 * 1_326_080
    # Frozen: the Hiera-B+ trunk, FPN neck, prompt encoder and decoder transformer.
    assert 70e6 < report["frozen"] < 75e6


def test_sam2_checkpoint_from_the_sam2_package_loads(tmp_path: Path):
    from sam2.build_sam import build_sam2

    sam2_model = build_sam2("configs/sam2.1/sam2.1_hiera_b+.yaml", ckpt_path=None, device="cpu", mode="eval")
    path = tmp_path / "sam2.1_hiera_base_plus.pt"
    torch.save({"model": sam2_model.state_dict()}, path)
    model = build_method("mlesam", DELIVER_INFO, ["rgb", "depth"], "paper", sam2_checkpoint=str(path))
    summary = model.sam2_load_summary
    assert summary["loaded"] > 300 and any(k.startswith("memory_attention.") for k in summary["ignored"])
    assert model.frozen_source == f"sam2:{summary['sha256'][:16]}"
    for key, value in sam2_model.image_encoder.state_dict().items():
        assert torch.equal(model.image_encoder.state_dict()[key], value), key
    torch.testing.assert_close(
        model.sam_mask_decoder.transformer.layers[0].mlp.layers[0].weight,
        sam2_model.sam_mask_decoder.transformer.layers[0].mlp.layers[0].weight,
    )
    # Loading the weights into the tiny preset is an error that lists the mismatch.
    with pytest.raises(ConfigError, match="does not fit this MLE-SAM encoder .*unexpected keys: image_encoder"):
        build_method("mlesam", DELIVER_INFO, ["rgb"], "tiny", sam2_checkpoint=str(path))


def test_bad_sam2_checkpoints(tmp_path: Path):
    with pytest.raises(ConfigError, match="SAM2 checkpoint .*nope.pt does not exist"):
        build_method("mlesam", DELIVER_INFO, ["rgb"], "tiny", sam2_checkpoint=str(tmp_path / "nope.pt"))
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=f"cannot read SAM2 checkpoint {broken}"):
        build_method("mlesam", DELIVER_INFO, ["rgb"], "tiny", sam2_checkpoint=str(broken))
    partial = tmp_path / "partial.pt"
    state = _tiny().state_dict()
    torch.save({"model": {k: v for k, v in state.items() if "blocks.3." not in k}}, partial)
    with pytest.raises(ConfigError, match="missing keys: image_encoder.trunk.blocks.3.attn.proj.bias"):
        build_method("mlesam", DELIVER_INFO, ["rgb"], "tiny", sam2_checkpoint=str(partial))
