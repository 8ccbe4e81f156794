"""SAM-LoRA against segment_anything's own modules, its LoRA, its averaging and SAM checkpoints."""

from __future__ import annotations

import hashlib
import itertools
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from segment_anything import sam_model_registry
from segment_anything.modeling import ImageEncoderViT

import methods.sam_lora  # noqa: F401  (registers "sam-lora"; methods/__init__.py does not yet)
from mlebench.registry import build_method
from methods.losses import ce_dice_loss, dice_loss, ohem_cross_entropy
from methods.sam_lora import SAMLoRA, class_logits
from mlebench.data.deliver import DELIVER_INFO
from mlebench.engine.checkpoint import load_checkpoint, save_checkpoint
from mlebench.errors import ConfigError

MODALITIES = ("rgb", "depth", "event", "lidar")
K = DELIVER_INFO.num_classes  # 25


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """These tensors are tiny: on shared cores one thread is faster than two fighting."""


def _tiny(modalities=MODALITIES, **overrides) -> SAMLoRA:
    """The tiny preset from its seeded random init (the default would load the SAM ViT stand-in)."""
    overrides.setdefault("sam_checkpoint", None)
    return build_method("sam-lora", DELIVER_INFO, modalities, "tiny", **overrides).eval()


def _vanilla_vit(model: SAMLoRA, img_size: int) -> ImageEncoderViT:
    """segment_anything's ViT built as build_sam does, with ``model``'s config, no LoRA."""
    c = model.config
    return ImageEncoderViT(
        depth=c.depth, embed_dim=c.embed_dim, img_size=img_size, mlp_ratio=c.mlp_ratio,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=c.num_heads, patch_size=c.patch_size,
        qkv_bias=True, use_rel_pos=True, global_attn_indexes=c.global_attn_indexes, window_size=c.window_size,
        out_chans=c.out_chans,
    ).eval()  # fmt: skip


def _randomise_lora_b(model: SAMLoRA, std: float = 0.05) -> None:
    with torch.no_grad():
        for experts in model.lora.experts:
            experts.lora_b.normal_(0, std)


def test_zero_b_is_the_frozen_vit_at_native_and_other_sizes():
    torch.manual_seed(0)
    model = _tiny()
    native = _vanilla_vit(model, model.config.image_size)
    native.load_state_dict(model.image_encoder.state_dict())  # strict: the same architecture
    x = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        ours = model.encode("depth", x)
        want = native(x)
        assert torch.equal(ours, want)
        assert ours.shape == (2, 64, 16, 16)
        # Another size: a ViT built for 128 px, its absolute positional embedding resized
        # bilinearly (SAMed) and the global blocks' relative ones linearly (SAM's get_rel_pos).
        small = _vanilla_vit(model, 128)
        state = model.image_encoder.state_dict()
        state["pos_embed"] = F.interpolate(
            state["pos_embed"].permute(0, 3, 1, 2), size=(8, 8), mode="bilinear", align_corners=False
        ).permute(0, 2, 3, 1)
        for i in model.config.global_attn_indexes:
            for axis in ("h", "w"):
                key = f"blocks.{i}.attn.rel_pos_{axis}"
                state[key] = F.interpolate(state[key].T[None], size=15, mode="linear")[0].T
        small.load_state_dict(state)
        x_small = torch.randn(2, 3, 128, 128)
        torch.testing.assert_close(model.encode("rgb", x_small), small(x_small), atol=1e-5, rtol=0)
        _randomise_lora_b(model)  # the comparison can fail: a non-zero B changes the embedding
        assert not torch.allclose(model.encode("depth", x), want, atol=1e-3)


def test_known_lora_delta_on_q_and_v_only():
    """Block 0's qkv output moves by s B_q A_q x on q, s B_v A_v x on v, nothing on k."""
    torch.manual_seed(0)
    model = _tiny(lora_alpha=16.0)  # rank 8: s = 2
    dim, r, s = model.config.embed_dim, model.config.lora_rank, 2.0
    experts = model.lora.experts[0]
    i = experts.index["depth"]
    a_q, a_v = torch.randn(r, dim), torch.randn(r, dim)
    b_q, b_v = torch.randn(dim, r) * 0.1, torch.randn(dim, r) * 0.1
    with torch.no_grad():
        experts.lora_a[i] = torch.cat([a_q, a_v])
        experts.lora_b[i, 0] = b_q
        experts.lora_b[i, 1] = b_v
    captured = []
    qkv = model.image_encoder.blocks[0].attn.qkv
    handle = qkv.register_forward_hook(lambda mod, inp, out: captured.append((inp[0], out)))  # after LoRA's
    x = torch.randn(1, 3, 256, 256)  # the native size, so that SAM's own forward runs
    with torch.no_grad():
        frozen = model.image_encoder(x)  # no modality active: the plain ViT
        plain_in, plain_out = captured[-1]
        adapted = model.encode("depth", x)
        lora_in, lora_out = captured[-1]
        other = model.encode("rgb", x)  # rgb's B is still zero
    handle.remove()
    assert torch.equal(plain_in, lora_in)  # block 0's input does not depend on LoRA
    zeros = torch.zeros_like(plain_in @ b_q.new_zeros(dim, dim))
    want = torch.cat([s * plain_in @ a_q.T @ b_q.T, zeros, s * plain_in @ a_v.T @ b_v.T], dim=-1)
    torch.testing.assert_close(lora_out - plain_out, want, atol=1e-4, rtol=1e-4)
    assert torch.equal((lora_out - plain_out)[..., dim : 2 * dim], zeros)  # k untouched, exactly
    assert not torch.allclose(adapted, frozen, atol=1e-3)
    assert torch.equal(other, frozen)


def test_decoder_equals_sams_own_prompt_free_call_image_by_image():
    torch.manual_seed(0)
    model = _tiny()
    with torch.no_grad():
        torch.nn.init.normal_(model.mask_decoder.mask_tokens.weight)
        emb = torch.randn(3, 64, 16, 16)
        ours = class_logits(model.prompt_encoder, model.mask_decoder, emb)
        assert ours.shape == (3, K, 64, 64)
        pe = model.prompt_encoder
        sparse, dense = pe(points=None, boxes=None, masks=None)  # SAM's "no prompt" embeddings
        for b in range(3):
            masks, _ = model.mask_decoder.predict_masks(emb[b : b + 1], pe.get_dense_pe(), sparse, dense)
            torch.testing.assert_close(ours[b : b + 1], masks, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(ours[0], ours[1], atol=1e-3)  # images are decoded separately


def test_every_subset_decodes_to_the_mean_of_its_modalities():
    torch.manual_seed(0)
    model = _tiny()
    _randomise_lora_b(model, 0.2)
    batch = {m: torch.randn(2, 3, 64, 96) for m in MODALITIES}
    with torch.no_grad():
        grouped = model.encode_many(batch)
        feats = {m: model.encode(m, batch[m]) for m in MODALITIES}
        for m in MODALITIES:
            torch.testing.assert_close(grouped[m], feats[m], atol=1e-5, rtol=1e-5)
        single = {m: model.decode({m: feats[m]}, (64, 96)) for m in MODALITIES}
        assert not torch.allclose(single["rgb"].logits, single["depth"].logits, atol=1e-3)
        for n in range(1, len(MODALITIES) + 1):
            for subset in itertools.combinations(MODALITIES, n):
                out = model.decode({m: feats[m] for m in reversed(subset)}, (64, 96))
                assert out.logits.shape == (2, K, 64, 96)
                want = torch.stack([single[m].logits for m in subset]).mean(0)
                torch.testing.assert_close(out.logits, want, atol=1e-5, rtol=1e-5)
                emb = torch.stack([feats[m] for m in subset]).mean(0)
                torch.testing.assert_close(out.embedding, emb, atol=1e-6, rtol=1e-6)
        full = model(batch, ["event", "rgb"])
        torch.testing.assert_close(full.logits, torch.stack([single["rgb"].logits, single["event"].logits]).mean(0),
                                   atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="at least one"):
        model.decode({}, (64, 96))


def test_training_steps_lower_the_loss_and_touch_only_trainable_weights():
    torch.manual_seed(0)
    model = _tiny(("rgb", "depth")).train()
    g = torch.Generator().manual_seed(1)
    x = {m: torch.randn(4, 3, 64, 64, generator=g) for m in ("rgb", "depth")}
    target = (x["rgb"][:, 0] > 0).long() * 3 + (x["depth"][:, 1] > 0).long()  # 4 classes, pixelwise
    target[:, :4] = 255  # ignored rows
    frozen_before = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    lora_before = model.lora.experts[0].lora_b.clone()
    opt = torch.optim.AdamW(model.optimizer_groups(3e-3), weight_decay=0.01)
    losses = []
    for _ in range(15):
        loss = model.loss(model(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0], losses
    for n, p in model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, frozen_before[n]), n
    assert not torch.equal(model.lora.experts[0].lora_b, lora_before)
    group = model.optimizer_groups(0.5)
    assert len(group) == 1 and group[0]["lr"] == 0.5
    assert {id(p) for p in group[0]["params"]} == {id(p) for p in model.parameters() if p.requires_grad}


def _mlp(dims: list[int]) -> int:
    return sum(i * o + o for i, o in zip(dims, dims[1:]))


@pytest.fixture(scope="module")
def vit_b():
    torch.manual_seed(0)
    return sam_model_registry["vit_b"]()  # random init: nothing is downloaded


def test_parameter_counts_of_the_paper_preset(vit_b):
    c = 256  # SAM's prompt / decoder width
    hyper = _mlp([c, c, c, c // 8])  # one hypernetwork MLP per class
    upscaling = (c * (c // 4) * 4 + c // 4) + 2 * (c // 4) + ((c // 4) * (c // 8) * 4 + c // 8)
    decoder_trainable = K * c + K * hyper + upscaling
    sam_dec = vit_b.mask_decoder
    # Frozen: SAM ViT-B less its decoder's 4-token parts and the (here trainable) upscaling,
    # plus an IoU head with K outputs.
    sam_class_parts = 4 * c + 4 * hyper + _mlp([c, 256, 256, 4]) + upscaling
    sam_total = sum(p.numel() for p in vit_b.parameters())
    frozen = sam_total - sam_class_parts + _mlp([c, 256, 256, K])
    transformer = sum(p.numel() for p in sam_dec.transformer.parameters())
    # the formula describes SAM's decoder: IoU token + the parts above + the transformer
    assert sum(p.numel() for p in sam_dec.parameters()) == c + sam_class_parts + transformer
    for mods in (("rgb",), MODALITIES):
        model = build_method("sam-lora", DELIVER_INFO, mods, "paper")
        report = model.parameter_report()
        lora = 12 * 2 * 32 * (768 + 768)
        assert report["parts"] == {**{f"lora.{m}": lora for m in mods}, "decoder": decoder_trainable}
        assert report["trainable"] == len(mods) * lora + decoder_trainable
        assert report["frozen"] == frozen
        assert sum(p.numel() for p in model.image_encoder.parameters()) == sum(
            p.numel() for p in vit_b.image_encoder.parameters()
        )
    assert lora == 1_179_648 and decoder_trainable == 3_575_552


def test_load_pretrained_sam_vit_b(vit_b, tmp_path: Path):
    path = tmp_path / "sam_vit_b.pth"
    state = vit_b.state_dict()
    torch.save(state, path)
    model = build_method("sam-lora", DELIVER_INFO, ("rgb", "depth"), "paper", sam_checkpoint=str(path))
    assert model.frozen_source == "sam:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    own = model.state_dict()
    fresh = set(model.class_specific_keys())
    assert "mask_decoder.mask_tokens.weight" in fresh and "mask_decoder.iou_prediction_head.layers.2.bias" in fresh
    loaded = 0
    for key, value in state.items():
        if key in fresh or key.startswith(("mask_decoder.mask_tokens", "mask_decoder.output_hypernetworks_mlps")):
            continue
        assert torch.equal(own[key], value), key
        loaded += 1
    assert loaded == model.sam_load_summary["loaded"] > 200
    assert own["mask_decoder.mask_tokens.weight"].shape == (K, 256)
    # the frozen parts are frozen after loading, LoRA and class parts are not loaded
    assert not model.image_encoder.pos_embed.requires_grad
    assert torch.count_nonzero(model.lora.experts[0].lora_b) == 0



def test_bad_sam_checkpoints_are_refused_by_name(tmp_path: Path):
    """A tiny SAM in segment-anything's key format (the tiny preset's own frozen parts)."""
    torch.manual_seed(0)
    source = _tiny(("rgb",), init_seed=3)
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("lora.")}
    torch.save(state, tmp_path / "good.pth")
    model = _tiny(("rgb",))
    before = model.image_encoder.patch_embed.proj.weight.clone()
    missing = dict(state)
    del missing["image_encoder.blocks.3.attn.qkv.weight"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(ConfigError, match=r"missing keys: image_encoder\.blocks\.3\.attn\.qkv\.weight\)"):
        model.load_pretrained(tmp_path / "missing.pth")
    torch.save({**state, "image_encoder.adapter.weight": torch.zeros(3)}, tmp_path / "extra.pth")
    with pytest.raises(ConfigError, match=r"unexpected keys: image_encoder\.adapter\.weight\)"):
        model.load_pretrained(tmp_path / "extra.pth")
    bad_shape = {**state, "image_encoder.pos_embed": torch.zeros(1, 8, 8, 96)}
    torch.save(bad_shape, tmp_path / "shape.pth")
    with pytest.raises(ConfigError, match=r"shape mismatch: image_encoder\.pos_embed \(1, 8, 8, 96\)"):
        model.load_pretrained(tmp_path / "shape.pth")
    torch.save({"model": torch.zeros(3)}, tmp_path / "junk.pth")
    with pytest.raises(ConfigError, match="no state dict"):
        model.load_pretrained(tmp_path / "junk.pth")
    with pytest.raises(ConfigError, match="does not exist"):
        model.load_pretrained(tmp_path / "nope.pth")
    # nothing was copied by the refused loads
    assert torch.equal(model.image_encoder.patch_embed.proj.weight, before)
    assert model.frozen_source == "seed:0"
    summary = model.load_pretrained(tmp_path / "good.pth")
    assert torch.equal(model.image_encoder.patch_embed.proj.weight, source.image_encoder.patch_embed.proj.weight)
    assert model.frozen_source == "sam:" + summary["sha256"][:16]
    assert not torch.equal(model.mask_decoder.mask_tokens.weight, source.mask_decoder.mask_tokens.weight)  # fresh


def test_checkpoint_round_trip(tmp_path: Path):
    torch.manual_seed(0)
    model = _tiny(("rgb", "lidar"))
    _randomise_lora_b(model)
    with torch.no_grad():
        for p in model.mask_decoder.output_hypernetworks_mlps.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x = {"rgb": torch.randn(1, 3, 64, 64), "lidar": torch.randn(1, 3, 64, 64)}
    with torch.no_grad():
        want = model(x).logits
    path = save_checkpoint(model, tmp_path / "ckpt.pt")
    stored = torch.load(path, weights_only=True)["state_dict"]
    assert not any(k.startswith(("image_encoder.", "prompt_encoder.", "mask_decoder.transformer.")) for k in stored)
    assert "mask_decoder.mask_tokens.weight" in stored and "lora.experts.0.lora_b" in stored
    other = _tiny(("rgb", "lidar"))
    with torch.no_grad():
        assert not torch.allclose(other(x).logits, want, atol=1e-3)
        load_checkpoint(other, path)
        assert torch.equal(other(x).logits, want)
    with pytest.raises(ConfigError, match="modalities"):
        load_checkpoint(_tiny(("rgb", "depth")), path)


def test_options_defaults_and_errors():
    with pytest.raises(ConfigError, match="unknown SAM-LoRA option.*lora_rnak.*known: .*lora_rank"):
        build_method("sam-lora", DELIVER_INFO, ("rgb",), "tiny", lora_rnak=4)
    model = _tiny(("rgb",), lora_rank=4, lora_alpha=4.0)
    assert model.lora.experts[0].rank == 4 and model.config_dict()["lora_rank"] == 4
    assert "sam_checkpoint" not in model.config_dict()
    assert model.size_multiple == 16 and model.frozen_source == "seed:0"
    assert model.versioned_packages == ("segment-anything",)
    with pytest.raises(ConfigError, match="multiple of the patch size"):
        model.encode("rgb", torch.randn(1, 3, 64, 72))
    with pytest.raises(ConfigError, match="not trained"):
        model.encode("depth", torch.randn(1, 3, 64, 64))
    assert SAMLoRA.train_defaults("tiny") == {"steps": 500, "batch_size": 8, "crop_size": 128, "base_size": 256,
                                              "lr": 1e-3}
    assert SAMLoRA.train_defaults("paper") == {"batch_size": 6, "crop_size": 1024, "base_size": 1024, "lr": 1e-4,
                                               "amp": True, "epochs": 100}
    assert SAMLoRA.eval_size("tiny") is None and SAMLoRA.eval_size("paper") == 1024
    # The frozen init is a function of the seed: two builds agree, another seed differs.
    a, b = _tiny(("rgb",)), _tiny(("rgb",))
    assert torch.equal(a.image_encoder.pos_embed, b.image_encoder.pos_embed)
    assert not torch.equal(a.image_encoder.pos_embed, _tiny(("rgb",), init_seed=1).image_encoder.pos_embed)


def _samed_load_from(model: SAMLoRA, grid: tuple[int, int]) -> ImageEncoderViT:
    """A plain segment_anything ViT carrying the model's frozen weights resized as SAMed's
    ``load_from`` does at load time (build_sam.py l. 147-160: ``pos_embed`` bilinearly, the global
    blocks' ``rel_pos`` tables bilinearly over (length, head_dim)), extended to a non-square grid:
    each axis's table to its own ``2 * size - 1``."""
    vit = _vanilla_vit(model, model.config.image_size)
    state = model.image_encoder.state_dict()
    vit.load_state_dict(state)
    pos = F.interpolate(state["pos_embed"].permute(0, 3, 1, 2), grid, mode="bilinear", align_corners=False)
    vit.pos_embed = torch.nn.Parameter(pos.permute(0, 2, 3, 1))
    for i in model.config.global_attn_indexes:
        attn = vit.blocks[i].attn
        for axis, size in zip(("h", "w"), grid):
            table = getattr(attn, f"rel_pos_{axis}")
            resized = F.interpolate(table[None, None], (2 * size - 1, table.shape[1]), mode="bilinear",
                                    align_corners=False)[0, 0]
            setattr(attn, f"rel_pos_{axis}", torch.nn.Parameter(resized))
    return vit.eval()


def test_a_non_square_grid_is_resized_as_samed_does_at_load_time():
    """MUSES' 1824x1024 frames: a 114x64 token grid, neither square nor the 16x16 of image_size."""
    torch.manual_seed(0)
    model = _tiny(("rgb",))
    x = torch.randn(1, 3, 1024, 1824)
    with torch.no_grad():
        ours = model.encode("rgb", x)
        assert ours.shape == (1, 64, 64, 114)
        torch.testing.assert_close(ours, _samed_load_from(model, (64, 114))(x), atol=2e-5, rtol=0)
        # bicubic (the option; this suite's default before) is another embedding
        bicubic = _tiny(("rgb",), pos_embed_resize="bicubic").encode("rgb", x)
        assert not torch.allclose(bicubic, ours, atol=1e-3)
    with pytest.raises(ConfigError, match="unknown pos_embed_resize 'area'; known: bilinear, bicubic"):
        _tiny(("rgb",), pos_embed_resize="area")


def _train_step_grads(model: SAMLoRA, batch: dict, target: torch.Tensor) -> dict[str, torch.Tensor]:
    model.train().zero_grad()
    model.loss(model(batch), target).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_separate_training_gives_each_modality_its_own_loss():
    """``training: separate``: the loss is the mean of each modality's own loss, so the RGB LoRA's
    gradient does not depend on the depth input; ``joint`` (the mean of logits) does."""
    torch.manual_seed(0)
    batch = {m: torch.randn(2, 3, 64, 64) for m in ("rgb", "depth")}
    other = {"rgb": batch["rgb"], "depth": torch.randn(2, 3, 64, 64)}
    target = torch.randint(0, K, (2, 64, 64))
    grads = {}
    for mode in ("separate", "joint"):
        model = _tiny(("rgb", "depth"), training=mode)
        _randomise_lora_b(model)
        a, b = _train_step_grads(model, batch, target), _train_step_grads(model, other, target)
        grads[mode] = [(a[n], b[n]) for n in a if n.startswith("lora.")]
        model.train()
        out = model(batch)
        if mode == "separate":
            singles = [model.decode({m: model.encode(m, batch[m])}, (64, 64)).logits for m in ("rgb", "depth")]
            for mine, single in zip(out.per_modality, singles):
                torch.testing.assert_close(mine, single, atol=1e-5, rtol=0)
            by_hand = sum(ohem_cross_entropy(s, target) for s in singles) / 2
            torch.testing.assert_close(model.loss(out, target), by_hand, atol=1e-6, rtol=0)
        else:
            assert out.per_modality is None
        assert model.lora.modalities.index("rgb") == 0

    def rgb_only(pairs):  # the experts' tensors are stacked over modalities: RGB's is index 0
        return [(ga[0], gb[0]) for ga, gb in pairs]

    assert all(torch.allclose(ga, gb, atol=1e-7) for ga, gb in rgb_only(grads["separate"]))
    assert not all(torch.allclose(ga, gb, atol=1e-7) for ga, gb in rgb_only(grads["joint"]))
    with pytest.raises(ConfigError, match="unknown training 'alone'; known: joint, separate"):
        _tiny(("rgb",), training="alone")


def _samed_dice(logits: torch.Tensor, target: torch.Tensor, ignore: int = 255) -> torch.Tensor:
    """SAMed's DiceLoss (utils.py), class by class, on the valid pixels picked out by indexing."""
    probs = logits.softmax(1).permute(0, 2, 3, 1)[target != ignore]  # (N, K)
    labels = target[target != ignore]
    losses = []
    for k in range(logits.shape[1]):
        score, truth = probs[:, k], (labels == k).float()
        intersect = (score * truth).sum()
        losses.append(1 - (2 * intersect + 1e-5) / ((score * score).sum() + (truth * truth).sum() + 1e-5))
    return sum(losses) / len(losses)


def test_reference_recipe_is_sameds_ce_plus_dice():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 12, 12)
    target = torch.randint(0, 5, (2, 12, 12))
    target[0, :3] = 255
    torch.testing.assert_close(dice_loss(logits, target), _samed_dice(logits, target), atol=1e-6, rtol=0)
    want = 0.2 * F.cross_entropy(logits, target, ignore_index=255) + 0.8 * _samed_dice(logits, target)
    torch.testing.assert_close(ce_dice_loss(logits, target), want, atol=1e-6, rtol=0)
    model = _tiny(("rgb",), recipe="reference")
    batch = {"rgb": torch.randn(1, 3, 64, 64)}
    target = torch.randint(0, K, (1, 64, 64))
    out = model.train()(batch)
    torch.testing.assert_close(model.loss(out, target), ce_dice_loss(out.logits, target), atol=1e-6, rtol=0)
    paper = _tiny(("rgb",))
    torch.testing.assert_close(paper.loss(out, target), ohem_cross_entropy(out.logits, target), atol=1e-6, rtol=0)
    assert model.training_defaults() == {**paper.training_defaults(), "weight_decay": 0.1, "warmup_ratio": 1 / 250}
    big = build_method("sam-lora", DELIVER_INFO, ("rgb",), "paper", sam_checkpoint=None, recipe="reference",
                       depth=1, global_attn_indexes=(0,))
    assert big.training_defaults() == {"batch_size": 24, "crop_size": 1024, "base_size": 1024, "lr": 5e-3, "amp": True,
                                       "epochs": 200, "weight_decay": 0.1, "warmup_steps": 250, "warmup_ratio": 1 / 250}
    with pytest.raises(ConfigError, match="sam-lora: unknown recipe 'samed'; known: paper, reference"):
        _tiny(("rgb",), recipe="samed")
