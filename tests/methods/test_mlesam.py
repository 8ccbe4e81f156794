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

from mlebench.registry import build_method
from methods.losses import ohem_cross_entropy
from methods.mlesam.fusion import LevelRouter, MultiModalFusion
from methods.lora import ModalityLoRA
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


class _Block(torch.nn.Module):
    def __init__(self, dim: int, dim_out: int) -> None:
        super().__init__()
        self.attn = torch.nn.Module()
        self.attn.qkv = torch.nn.Linear(dim, 3 * dim_out)


def test_lora_delta_with_known_a_and_b():
    """q += s B_q A_q x and v += s B_v A_v x, k untouched, each modality's slice its own expert."""
    torch.manual_seed(0)
    trunk = torch.nn.Module()
    trunk.blocks = torch.nn.ModuleList([_Block(5, 4)])
    lora = ModalityLoRA(trunk, ["rgb", "depth", "lidar"], rank=2, alpha=6.0)  # s = alpha / r = 3
    experts = lora.experts[0]
    assert experts.scaling == 3.0
    g = torch.Generator().manual_seed(1)
    a = {m: (torch.randn(2, 5, generator=g), torch.randn(2, 5, generator=g)) for m in experts.modalities}
    b = {m: (torch.randn(4, 2, generator=g), torch.randn(4, 2, generator=g)) for m in experts.modalities}
    with torch.no_grad():
        for i, m in enumerate(experts.modalities):
            experts.lora_a[i] = torch.cat(a[m])  # rows: A_q then A_v
            experts.lora_b[i, 0], experts.lora_b[i, 1] = b[m]
    qkv = trunk.blocks[0].attn.qkv
    x = torch.randn(4, 3, 5, generator=g)  # batch: 2 lidar samples, then 2 rgb samples
    with torch.no_grad():
        frozen = qkv(x)  # no active modalities: the plain Linear
        torch.testing.assert_close(frozen, x @ qkv.weight.T + qkv.bias)
        with lora.active(["lidar", "rgb"]):
            out = qkv(x)
    for rows, m in ((slice(0, 2), "lidar"), (slice(2, 4), "rgb")):
        (a_q, a_v), (b_q, b_v) = a[m], b[m]
        xs, base = x[rows], frozen[rows]
        torch.testing.assert_close(out[rows, :, :4], base[..., :4] + 3.0 * xs @ a_q.T @ b_q.T)
        torch.testing.assert_close(out[rows, :, 4:8], base[..., 4:8])
        torch.testing.assert_close(out[rows, :, 8:], base[..., 8:] + 3.0 * xs @ a_v.T @ b_v.T)
    with pytest.raises(KeyError, match="event"):
        with lora.active(["event"]):
            pass


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
    # The routed part, written out per sample and channel: softmax over modalities of the
    # router's score of each modality's spatial mean, keep the top 2, renormalise, weight.
    linear = unified.routers[0].linear
    weighted = torch.zeros(2, 8, 4, 4)
    for b in range(2):
        scores = torch.stack([linear(m[b].mean(dim=(-2, -1))) for m in maps])  # (M, C)
        probs = torch.softmax(scores, dim=0)
        for c in range(8):
            top = sorted(range(3), key=lambda i: -probs[i, c].item())[:2]
            total = sum(probs[i, c] for i in top)
            weighted[b, c] = sum(probs[i, c] / total * maps[i][b, c] for i in top)
    with torch.no_grad():
        torch.testing.assert_close(unified([maps])[0], torch.stack(maps).mean(0) + weighted)
        weighted_only = MultiModalFusion([8], "weighted", top_k=2, router="channel")
        weighted_only.routers[0].load_state_dict(unified.routers[0].state_dict())
        torch.testing.assert_close(weighted_only([maps])[0], weighted)
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


def test_ohem_keeps_every_pixel_when_all_are_hard():
    # Uniform-ish logits over 5 classes: every loss is about log 5 > -log 0.7, so OHEM keeps all
    # valid pixels and equals the plain cross-entropy (ignored pixels excluded).
    g = torch.Generator().manual_seed(3)
    logits = 0.01 * torch.randn(2, 5, 4, 6, generator=g)
    labels = torch.randint(0, 5, (2, 4, 6), generator=g)
    labels[0, 0, :3] = 255
    torch.testing.assert_close(ohem_cross_entropy(logits, labels), F.cross_entropy(logits, labels, ignore_index=255))


def test_ohem_keeps_the_n_min_largest_losses_by_hand():
    # Two classes, target 0, logits (0, z): each pixel's loss is softplus(z) = log(1 + e^z).
    # 48 pixels, the last 16 ignored (with the largest losses of all): n_min counts valid ones.
    z = [4.0, -1.0, -3.0, -5.0] + [-8.0] * 28 + [9.0] * 16
    labels = torch.tensor([0] * 32 + [255] * 16).reshape(1, 3, 16)
    logits = torch.stack([torch.zeros(48), torch.tensor(z)]).reshape(1, 2, 3, 16)
    losses = [math.log1p(math.exp(v)) for v in z[:32]]
    # Only z = 4 is hard (> -log 0.7 = 0.357; softplus(-1) = 0.313); n_min = 32 // 16 = 2 wins:
    # the mean of the two largest valid losses.
    assert sum(v > -math.log(0.7) for v in losses) == 1
    expected = (math.log1p(math.exp(4.0)) + math.log1p(math.exp(-1.0))) / 2
    assert ohem_cross_entropy(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    # As many hard pixels as n_min (z = 4 and -1 are above -log 0.75 = 0.288): the same two.
    expected = (math.log1p(math.exp(4.0)) + math.log1p(math.exp(-1.0))) / 2
    assert ohem_cross_entropy(logits, labels, thresh=0.75).item() == pytest.approx(expected, rel=1e-6)
    # More hard pixels than n_min: all are kept; thresh 0.96 keeps z = 4, -1, -3 (softplus(-3) = 0.0486 > -log 0.96 = 0.0408).
    expected = sum(math.log1p(math.exp(v)) for v in (4.0, -1.0, -3.0)) / 3
    assert ohem_cross_entropy(logits, labels, thresh=0.96).item() == pytest.approx(expected, rel=1e-6)
    # n_min = 32 // 4 = 8 largest when fewer are hard.
    expected = sum(sorted(losses, reverse=True)[:8]) / 8
    assert ohem_cross_entropy(logits, labels, min_kept_divisor=4).item() == pytest.approx(expected, rel=1e-6)


def test_losses_and_backward_reach_lora_and_router():
    model = _tiny(aux_combine="mean")  # Eq. 14 alone (learned adds a term: test_aux_combinations_...)
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


def test_aux_combinations_main_and_learned():
    """``main``: the prediction is the main pathway's logits, the aux head only adds its loss;
    ``learned``: w = sigmoid(gate), and only the gate learns from the combined prediction's loss."""
    x = {m: torch.randn(2, 3, 64, 64) for m in MODALITIES}
    target = torch.randint(0, 25, (2, 64, 64))
    mean = _tiny(aux_combine="mean")
    main = _tiny(aux_combine="main")
    main.load_state_dict(mean.state_dict())  # the same weights: only the combination differs
    with torch.no_grad():
        torch.testing.assert_close(main.train()(x).logits, main(x).main_logits, atol=0, rtol=0)
        torch.testing.assert_close(main.eval()(x).logits, (2 * mean.eval()(x).logits - _aux_only(mean, x)))
    learned = _tiny(aux_combine="learned", aux_output_weight=0.25)
    assert torch.sigmoid(learned.aux_gate).item() == pytest.approx(0.25)
    learned.train()
    out = learned(x)
    torch.testing.assert_close(out.logits, 0.75 * out.main_logits + 0.25 * out.aux_logits, atol=1e-5, rtol=0)
    eq14 = ohem_cross_entropy(out.main_logits, target) + 0.4 * ohem_cross_entropy(out.aux_logits, target)
    combined = ohem_cross_entropy(0.75 * out.main_logits + 0.25 * out.aux_logits, target)
    loss = learned.loss(out, target)
    torch.testing.assert_close(loss, eq14 + combined, atol=1e-5, rtol=0)
    loss.backward()
    assert learned.aux_gate.grad is not None and learned.aux_gate.grad.abs() > 0
    # the pathways' own gradients are Eq. 14's alone: the combined term reaches only the gate
    reference = _tiny(aux_combine="learned", aux_output_weight=0.25).train()
    reference.zero_grad()
    out = reference(x)
    (ohem_cross_entropy(out.main_logits, target) + 0.4 * ohem_cross_entropy(out.aux_logits, target)).backward()
    torch.testing.assert_close(learned.aux_head.predict.weight.grad, reference.aux_head.predict.weight.grad)
    assert learned.parameter_report()["parts"]["aux_gate"] == 1
    groups = learned.optimizer_groups(1e-3)  # the gate at 100 x lr, no weight decay; the rest at lr
    assert [(len(g["params"]), g["lr"], g.get("weight_decay")) for g in groups][1] == (1, pytest.approx(0.1), 0.0)
    assert groups[1]["params"][0] is learned.aux_gate and all(p is not learned.aux_gate for p in groups[0]["params"])
    assert sum(len(g["params"]) for g in groups) == sum(1 for p in learned.parameters() if p.requires_grad)
    with pytest.raises(ConfigError, match="unknown aux_combine 'max'; known: mean, main, learned"):
        make_config("tiny", aux_combine="max")
    with pytest.raises(ConfigError, match="aux_combine learned starts at aux_output_weight 1.0"):
        make_config("tiny", aux_combine="learned", aux_output_weight=1.0)


def _aux_only(model, x):
    """The auxiliary pathway's logits at the input size (eval mode), via aux_output_weight 1."""
    aux = _tiny(aux_combine="mean", aux_output_weight=1.0)
    aux.load_state_dict(model.state_dict())
    return aux.eval()(x).logits


def test_bf16_autocast_forward():
    model = _tiny()
    x = {m: torch.randn(1, 3, 64, 64) for m in MODALITIES}
    target = torch.randint(0, 25, (1, 64, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = model.loss(model(x), target)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
            loss = model.loss(out, target)
    assert out.logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    # bf16 keeps about 3 significant digits: the loss agrees with float32 to 1%.
    assert loss.item() == pytest.approx(reference.item(), rel=0.01)


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


PAPER_FROZEN = 72_542_821


def test_parameter_report_for_the_paper_preset():
    model = build_method("mlesam", DELIVER_INFO, ["rgb"], "paper")
    report = model.parameter_report()
    assert report["parts"]["lora.rgb"] == _lora_count(HIERA_BASE_PLUS, 32) == 1_326_080
    # From the layer shapes (d = 256, 25 classes): channel routers Linear(C, C), C = 256, 64, 32;
    # decoder minus frozen transformer / IoU token / IoU head: 25 mask tokens, transposed convs
    # 256->64->32 with LayerNorm2d(64), conv_s0 256->32, conv_s1 256->64, 25 MLPs 256->256->256->32;
    # auxiliary head: 1x1 convs 256/64/32 -> 32, fuse 96->32 + BN, predict 32->25.
    fusion = sum(c * c + c for c in (256, 64, 32))
    decoder = (25 * 256 + (256 * 64 * 4 + 64) + 2 * 64 + (64 * 32 * 4 + 32) + (256 * 32 + 32)
               + (256 * 64 + 64) + 25 * (2 * (256 * 256 + 256) + 256 * 32 + 32))
    aux = (257 + 65 + 33) * 32 + 96 * 32 + 2 * 32 + 32 * 25 + 25
    assert (fusion, decoder, aux) == (71_008, 3_600_224, 15_321)
    assert report["parts"] == {"lora.rgb": 1_326_080, "fusion": fusion, "decoder": decoder, "aux_head": aux,
                               "aux_gate": 1}  # the learned combination's weight
    # Tab. IV: 5.2M trainable for one modality (ours: 5.01M).
    assert report["trainable"] == 1_326_080 + fusion + decoder + aux + 1 == 5_012_634
    four = build_method("mlesam", DELIVER_INFO, MODALITIES, "paper").parameter_report()
    assert four["trainable"] - report["trainable"] == 3 * 1_326_080
    assert four["frozen"] == report["frozen"]
    # Frozen: the Hiera-B+ trunk, FPN neck, prompt encoder, decoder transformer, IoU token and
    # head, no_mem_embed; counted from sam2's own model in the checkpoint test below.
    assert report["frozen"] == PAPER_FROZEN


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
    # Frozen parameters, from sam2's own model: everything it shares with ours, plus our IoU head
    # whose last layer predicts 25 scores instead of sam2's 4.
    n = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    dec = sam2_model.sam_mask_decoder
    frozen = (n(sam2_model.image_encoder) + n(sam2_model.sam_prompt_encoder) + n(dec.transformer)
              + dec.iou_token.weight.numel() + sam2_model.no_mem_embed.numel()
              + sum(n(layer) for layer in dec.iou_prediction_head.layers[:-1]) + 256 * 25 + 25)
    assert model.parameter_report()["frozen"] == frozen == PAPER_FROZEN
    with pytest.raises(ConfigError, match="does not fit this MLE-SAM encoder .*unexpected keys: image_encoder"):
        build_method("mlesam", DELIVER_INFO, ["rgb"], "tiny", sam2_checkpoint=str(path))


def test_bad_sam2_checkpoints(tmp_path: Path):
    with pytest.raises(ConfigError, match="SAM2 checkpoint .*nope.pt does not exist"):
        build_method("mlesam", DELIVER_INFO, ["rgb"], "tiny", sam2_checkpoint=str(tmp_path / "nope.pt"))
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=f"SAM2 checkpoint {broken} is a text file, not a SAM2 checkpoint"):
        build_method("mlesam", DELIVER_INFO, ["rgb"], "tiny", sam2_checkpoint=str(broken))
    partial = tmp_path / "partial.pt"
    state = _tiny().state_dict()
    torch.save({"model": {k: v for k, v in state.items() if "blocks.3." not in k}}, partial)
    with pytest.raises(ConfigError, match="missing keys: image_encoder.trunk.blocks.3.attn.proj.bias"):
        build_method("mlesam", DELIVER_INFO, ["rgb"], "tiny", sam2_checkpoint=str(partial))


# --- SAM2's no-prompt path ------------------------------------------------------------------------
def test_no_prompt_tokens_equal_what_sam2_builds_for_an_empty_prompt():
    """SAM2Base._forward_sam_heads without points: one (0, 0) point labelled -1, padded by the
    prompt encoder with a second one (boxes=None). Our tokens must equal that call's sparse output."""
    from methods.mlesam.decoder import no_prompt_tokens

    model = _tiny()
    encoder = model.sam_prompt_encoder
    with torch.no_grad():
        encoder.not_a_point_embed.weight.normal_()  # a non-trivial vector
    batch = 3
    coords = torch.zeros(batch, 1, 2)
    labels = -torch.ones(batch, 1, dtype=torch.int32)
    sparse, dense = encoder(points=(coords, labels), boxes=None, masks=None)
    ours = no_prompt_tokens(encoder, batch, "sam2")
    assert sparse.shape == ours.shape == (batch, 2, encoder.embed_dim)
    torch.testing.assert_close(ours, sparse, rtol=0, atol=0)
    assert no_prompt_tokens(encoder, batch, "empty").shape == (batch, 0, encoder.embed_dim)
    # the dense no-mask embedding is what the decoder gets too
    torch.testing.assert_close(dense[:, :, 0, 0], encoder.no_mask_embed.weight.expand(batch, -1))


def test_no_prompt_mode_reaches_the_decoder_and_is_validated():
    x = {m: torch.randn(1, 3, 64, 64) for m in MODALITIES}
    sam2_path, empty = _tiny(), _tiny(no_prompt="empty")
    assert sam2_path.config.no_prompt == "sam2"  # the default follows SAM2
    with torch.no_grad():
        a, b = sam2_path(x).logits, empty(x).logits
        sam2_path.sam_prompt_encoder.not_a_point_embed.weight.add_(1.0)
        c = sam2_path(x).logits
    assert not torch.equal(a, b)  # the tokens take part in the two-way transformer
    assert not torch.equal(a, c)  # ... and it is not_a_point_embed that they carry
    with pytest.raises(ConfigError, match="unknown no_prompt 'none'; known: sam2, empty"):
        _tiny(no_prompt="none")
