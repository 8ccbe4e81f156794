"""CWSAM: the frozen ViT, its adapters and prompt generator, the class-wise decoder, SAM weights."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from segment_anything import sam_model_registry

import methods.cwsam  # noqa: F401  (registers "cwsam"; methods/__init__ does not import it yet)
from mlebench.registry import build_method
from methods.cwsam import CWSAM, fft_filter
from methods.cwsam.model import REFERENCE_RECIPE
from methods.cwsam.parts import reference_token_order
from methods.losses import ohem_cross_entropy
from methods.recipes import recipe_defaults
from mlebench.method import MethodOutput
from mlebench.data.deliver import DELIVER_INFO
from mlebench.engine.checkpoint import load_checkpoint, save_checkpoint
from mlebench.errors import ConfigError

MODALITIES = ("rgb", "depth", "event", "lidar")


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """These tensors are tiny: on shared cores one thread is faster than two fighting."""


def _tiny(modalities=MODALITIES, **overrides) -> CWSAM:
    torch.manual_seed(0)
    return build_method("cwsam", DELIVER_INFO, modalities, "tiny", **overrides).eval()


def test_zero_adapters_give_exactly_the_frozen_vit():
    model = _tiny(("rgb", "depth"), zero_init_adapters=True)
    x = torch.randn(2, 3, 256, 256)  # the positional embedding's own size: no resizing
    with torch.no_grad():
        plain = model.image_encoder(x)  # segment_anything's own forward, no hooks active
        assert torch.equal(model.encode("depth", x), plain)
        with torch.no_grad():  # the comparison can fail: a non-zero adapter changes the features
            model.adapters["depth"][2].mlp.fc2.bias.fill_(0.1)
        assert not torch.allclose(model.encode("depth", x), plain, atol=1e-3)
        assert torch.equal(model.encode("rgb", x), plain)  # rgb's adapters are its own
    assert plain.shape == (2, 64, 16, 16)


def test_adapters_on_one_block_follow_their_formula():
    model = _tiny(("rgb",))
    block = model.image_encoder.blocks[1]  # a global-attention block: no window partition
    assert block.window_size == 0
    ad = model.adapters["rgb"][1]
    t = torch.randn(2, 4, 5, 96)
    with torch.no_grad():
        with model.active("rgb"):
            got = block(t)
        attn = block.attn(block.norm1(t))  # hooks off: the frozen attention
        gelu = torch.nn.functional.gelu
        space = attn + F.linear(gelu(F.linear(attn, ad.space.fc1.weight, ad.space.fc1.bias)),
                                ad.space.fc2.weight, ad.space.fc2.bias)  # fmt: skip
        u = t + space
        n = block.norm2(u)
        mlp = F.linear(gelu(F.linear(n, block.mlp.lin1.weight, block.mlp.lin1.bias)),
                       block.mlp.lin2.weight, block.mlp.lin2.bias)  # fmt: skip
        side = F.linear(gelu(F.linear(n, ad.mlp.fc1.weight, ad.mlp.fc1.bias)), ad.mlp.fc2.weight, ad.mlp.fc2.bias)
        want = u + mlp + 0.5 * side
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert ad.space.fc1.weight.shape == (96 // 4, 96) and ad.mlp.fc2.weight.shape == (96, 96 // 4)


def test_fft_filter_bands():
    torch.manual_seed(0)
    flat = torch.full((1, 3, 32, 32), 0.7)
    torch.testing.assert_close(fft_filter(flat, 0.25, "low"), flat)  # DC passes the low band
    assert fft_filter(flat, 0.25, "high").abs().max() < 1e-6  # and not the high band
    x = torch.randn(2, 3, 32, 48)
    spectrum = torch.fft.fftshift(torch.fft.fft2(x, norm="forward"), dim=(-2, -1))
    mask = torch.zeros(32, 48)
    line = int((32 * 48 * 0.25) ** 0.5 // 2)  # 13
    mask[16 - line : 16 + line, 24 - line : 24 + line] = 1
    low = torch.fft.ifft2(torch.fft.ifftshift(spectrum * mask, dim=(-2, -1)), norm="forward").real.abs()
    torch.testing.assert_close(fft_filter(x, 0.25, "low"), low)


def test_paper_parameter_counts_from_layer_shapes():
    with torch.device("meta"):  # shapes only
        one = build_method("cwsam", DELIVER_INFO, ["rgb"], "paper")
        four = build_method("cwsam", DELIVER_INFO, MODALITIES, "paper")
        shared = build_method("cwsam", DELIVER_INFO, MODALITIES, "paper", fusion="shared")
    d, r, depth, k, o = 768, 768 // 4, 12, 25, 256
    adapter = (d * r + r) + (r * d + d)  # fc1 + fc2
    adapters = depth * 2 * adapter  # space + MLP adapter in every block
    p = d // 32
    prompt = (d * p + p) + (3 * p * 16 * 16 + p) + depth * (p * p + p) + (p * d + d)
    attn = 4 * (o * o + o)
    attn_down = 3 * (o * (o // 2) + o // 2) + ((o // 2) * o + o)  # downsample 2
    mlp = (o * 2048 + 2048) + (2048 * o + o)
    transformer = 2 * (attn + 2 * attn_down + mlp + 4 * 2 * o) + attn_down + 2 * o
    upscaling = (o * (o // 4) * 4 + o // 4) + 2 * (o // 4) + ((o // 4) * (o // 8) * 4 + o // 8)
    hyper = 2 * (o * o + o) + (o * (o // 8) + o // 8)
    cls = ((o // 4) * (o // 4) * 4 + o // 4) + 2 * (o // 4) + ((o // 4) * (o // 8 * k) * 49 + o // 8 * k)
    decoder = transformer + o + 4 * o + upscaling + hyper + cls
    assert (adapters, prompt, decoder) == (7_100_928, 63_312, 6_032_480)
    report = one.parameter_report()
    assert report["parts"] == {"adapters.rgb": adapters, "prompt_generator.rgb": prompt, "decoder": decoder,
                               "no_mask_embed": o}  # fmt: skip
    assert report["trainable"] == adapters + prompt + decoder + o
    assert four.parameter_report()["trainable"] == 4 * (adapters + prompt) + decoder + o
    assert shared.parameter_report()["trainable"] == report["trainable"]
    # the reference's never-called Depth_Adapter (another adapter per block) is not counted
    assert not any("depth_adapter" in n.lower() for n, _ in one.named_parameters())
    assert report["trainable"] != adapters + depth * adapter + prompt + decoder + o
    assert report["frozen"] == sum(p.numel() for p in one.image_encoder.parameters()) == 89_670_912


def test_decode_of_every_subset_is_the_mean_of_single_modality_logits():
    model = _tiny()
    torch.manual_seed(1)
    batch = {m: torch.randn(1, 3, 64, 80) for m in MODALITIES}
    with torch.no_grad():
        feats = model.encode_many(batch)
        single = {m: model.decode({m: feats[m]}, (64, 80)).logits for m in MODALITIES}
        assert not torch.allclose(single["rgb"], single["depth"], atol=1e-4)  # per-modality adapters
        for n in range(1, 5):
            for subset in itertools.combinations(MODALITIES, n):
                got = model.decode({m: feats[m] for m in subset}, (64, 80)).logits
                want = torch.stack([single[m] for m in subset]).mean(0)
                torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert single["rgb"].shape == (1, 25, 64, 80)


def test_training_steps_lower_the_loss():
    # plain cross-entropy (recipe: reference) falls step by step here; OHEM's kept set moves
    model = _tiny(("rgb", "depth"), recipe="reference").train()
    torch.manual_seed(2)
    x = {m: torch.randn(2, 3, 64, 64) for m in ("rgb", "depth")}
    target = torch.zeros(2, 64, 64, dtype=torch.long)
    target[:, 32:] = 3
    target[:, :, :20] = 255
    groups = model.optimizer_groups(1e-3)
    assert sum(len(g["params"]) for g in groups) == sum(1 for p in model.parameters() if p.requires_grad)
    opt = torch.optim.AdamW(groups)
    losses = []
    for _ in range(6):
        loss = model.loss(model(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < losses[0] - 0.1, losses
    assert all(p.grad is None for p in model.image_encoder.parameters())


@pytest.fixture(scope="module")
def sam_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    return sam_model_registry["vit_b"]().state_dict()  # random init, no download


def test_load_pretrained_sam_vit_b(tmp_path, sam_state):
    path = tmp_path / "sam_vit_b.pth"
    torch.save(sam_state, path)
    torch.manual_seed(0)
    model = build_method("cwsam", DELIVER_INFO, ["rgb"], "paper")
    assert model.frozen_source == "seed:0"
    fresh = model.mask_decoder.cls_upscaling[3].weight.clone()
    summary = model.load_pretrained(path)
    own = model.state_dict()
    for key, value in sam_state.items():
        if key.startswith("image_encoder."):
            assert torch.equal(own[key], value), key
    for key in ("mask_decoder.transformer.layers.1.mlp.lin1.weight", "mask_decoder.mask_tokens.weight",
                "mask_decoder.output_hypernetworks_mlps.0.layers.2.weight", "prompt_encoder.no_mask_embed.weight",
                "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"):  # fmt: skip
        assert torch.equal(own[key], sam_state[key]), key
    assert torch.equal(model.mask_decoder.cls_upscaling[3].weight, fresh)  # class-wise part: fresh
    assert model.frozen_source == "sam:" + summary["sha256"][:16]
    assert "mask_decoder.iou_prediction_head.layers.0.weight" in summary["ignored"]

    missing = dict(sam_state)
    del missing["image_encoder.blocks.3.attn.qkv.weight"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(ConfigError, match=r"missing keys: image_encoder\.blocks\.3\.attn\.qkv\.weight"):
        model.load_pretrained(tmp_path / "missing.pth")
    extra = {**sam_state, "image_encoder.extra_head.weight": torch.zeros(1)}
    torch.save({"model": extra}, tmp_path / "extra.pth")
    with pytest.raises(ConfigError, match=r"unexpected keys: image_encoder\.extra_head\.weight"):
        model.load_pretrained(tmp_path / "extra.pth")
    with pytest.raises(ConfigError, match=r"unexpected keys: image_encoder\.blocks\.10\."):  # ViT-B into tiny
        _tiny(("rgb",)).load_pretrained(path)


def test_checkpoint_round_trip(tmp_path):
    model = _tiny(("rgb", "depth"))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    path = save_checkpoint(model, tmp_path / "cwsam.pt")
    torch.manual_seed(5)  # a different init of the trainable parts
    other = build_method("cwsam", DELIVER_INFO, ("rgb", "depth"), "tiny").eval()
    load_checkpoint(other, path)
    for key, value in model.state_dict().items():
        assert torch.equal(other.state_dict()[key], value), key
    x = {"rgb": torch.randn(1, 3, 64, 64), "depth": torch.randn(1, 3, 64, 64)}
    with torch.no_grad():
        torch.testing.assert_close(other(x).logits, model(x).logits, atol=0, rtol=0)
    shared = build_method("cwsam", DELIVER_INFO, ("rgb", "depth"), "tiny", fusion="shared")
    with pytest.raises(ConfigError, match="variant"):
        load_checkpoint(shared, path)


def test_interface_and_options():
    assert CWSAM.train_defaults("tiny") == {"steps": 500, "batch_size": 8, "crop_size": 128, "base_size": 256,
                                            "lr": 1e-3}  # fmt: skip
    assert CWSAM.train_defaults("paper")["amp"] is True and CWSAM.train_defaults("paper")["crop_size"] == 1024
    assert (CWSAM.eval_size("tiny"), CWSAM.eval_size("paper")) == (None, 1024)
    assert CWSAM.versioned_packages == ("segment-anything",)
    with pytest.raises(ConfigError, match="known: .*fusion"):
        build_method("cwsam", DELIVER_INFO, ["rgb"], "tiny", fusoin="shared")
    with pytest.raises(ConfigError, match="unknown fusion"):
        build_method("cwsam", DELIVER_INFO, ["rgb"], "tiny", fusion="early")
    model = _tiny(("rgb",))
    assert model.variant == "separate" and model.size_multiple == 16
    assert model.config_dict()["fusion"] == "separate" and "sam_checkpoint" not in model.config_dict()
    with pytest.raises(ConfigError, match="multiple of 16"):
        model.encode("rgb", torch.zeros(1, 3, 40, 64))
    with pytest.raises(ConfigError, match="not trained"):
        model.encode("depth", torch.zeros(1, 3, 64, 64))


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_other_input_sizes_resize_the_positional_embedding(mode):
    """Bilinearly by default, as SAMed (the reference never runs at another size); bicubic as an option."""
    import copy

    model = _tiny(("rgb",), zero_init_adapters=True, **({} if mode == "bilinear" else {"pos_embed_resize": mode}))
    with torch.no_grad():
        model.image_encoder.pos_embed.normal_()  # segment_anything initialises it to zeros
    vit = copy.deepcopy(model.image_encoder)  # 256 px positional embedding (16 x 16 tokens)
    pos = F.interpolate(vit.pos_embed.permute(0, 3, 1, 2), size=(8, 6), mode=mode, align_corners=False)
    vit.pos_embed = torch.nn.Parameter(pos.permute(0, 2, 3, 1))
    x = torch.randn(1, 3, 128, 96)
    with torch.no_grad():
        torch.testing.assert_close(model.encode("rgb", x), vit(x), atol=1e-6, rtol=0)


def test_the_embedding_prompt_keeps_the_references_token_order_by_default():
    """xypu98/CWSAM image_encoder.py l. 305-306: ``x.reshape(N, C, H*W).permute(0, 2, 1)`` on a
    (B, H, W, C) tensor. Element [n, j, c] of that is element c * H*W + j of the flattened
    (H, W, C) memory: built here from flat indices instead of reshapes."""
    b, h, w, c = 2, 3, 4, 5
    patches = torch.randn(b, h, w, c)
    flat = patches.reshape(b, -1)
    j = torch.arange(h * w)[:, None]
    ch = torch.arange(c)[None, :]
    expected = flat[:, ch * h * w + j].reshape(b, h, w, c)
    assert torch.equal(reference_token_order(patches), expected)
    assert not torch.equal(expected, patches)
    image = torch.randn(1, 3, 64, 64)
    tokens = torch.randn(1, 4, 4, 96)
    reference, fixed = _tiny(("rgb",)), _tiny(("rgb",), embedding_reshape="fixed")
    gen_ref, gen_fixed = reference.prompt_generators["rgb"], fixed.prompt_generators["rgb"]
    gen_fixed.load_state_dict(gen_ref.state_dict())
    with torch.no_grad():
        want = gen_fixed(image, reference_token_order(tokens))  # the fix, fed the scrambled tokens
        assert all(torch.equal(a, b) for a, b in zip(gen_ref(image, tokens), want))
        assert not torch.allclose(gen_fixed(image, tokens)[0], want[0])
    with pytest.raises(ConfigError, match="unknown embedding_reshape 'tidy'; known: reference, fixed"):
        _tiny(("rgb",), embedding_reshape="tidy")


def test_recipes_paper_ohem_and_reference_cross_entropy():
    model, reference = _tiny(("rgb",)), _tiny(("rgb",), recipe="reference")
    k = DELIVER_INFO.num_classes
    logits, target = torch.randn(2, k, 16, 16), torch.randint(0, k, (2, 16, 16))
    target[0, 0] = 255
    out = MethodOutput(logits=logits, embedding=torch.zeros(1))
    torch.testing.assert_close(model.loss(out, target), ohem_cross_entropy(logits, target), atol=0, rtol=0)
    torch.testing.assert_close(reference.loss(out, target), F.cross_entropy(logits, target, ignore_index=255),
                               atol=0, rtol=0)
    assert model.training_defaults() == CWSAM.train_defaults("tiny")
    assert reference.training_defaults() == {**CWSAM.train_defaults("tiny"), "schedule": "cosine", "min_lr": 5e-7,
                                             "warmup_fraction": 0.0}
    assert recipe_defaults(CWSAM.train_defaults("paper"), "reference", REFERENCE_RECIPE, "paper") == {
        "batch_size": 1, "crop_size": 1024, "base_size": 1024, "lr": 2e-4, "amp": True, "epochs": 200,
        "schedule": "cosine", "min_lr": 1e-7, "warmup_fraction": 0.0}
