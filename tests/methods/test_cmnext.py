"""CMNeXt (methods/cmnext): parameter counts against the reference's layer shapes, the evaluator's
zero-filled missing-modality path, training, MiT weight loading and checkpoints."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

import methods.cmnext  # noqa: F401  (registers "cmnext")
from methods.cmnext import CMNeXt
from methods.cmnext import build_cmnext as _build_cmnext
from methods.cmnext.model import REFERENCE_RECIPE
from methods.recipes import recipe_defaults
from mlebench.data import dataset_info, load_dataset
from mlebench.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

INFO = dataset_info("deliver")
MODS = ["rgb", "depth", "event", "lidar"]


def build_cmnext(*args, **options):
    """CMNeXt from its seeded random init unless a test names weights (the tiny preset would
    load the MiT-B0 stand-in, and these tests compare inits and loads)."""
    options.setdefault("mit_checkpoint", None)
    return _build_cmnext(*args, **options)


# --- parameter counts, from the reference code's layer shapes -----------------------------------
def reference_param_count(dims, depths, embed, classes, extra):
    """Trainable parameters of DELIVER's CMNeXt, layer by layer (reduction 1 everywhere)."""
    conv = lambda cin, cout, k, bias=True: cin * cout * k * k + (cout if bias else 0)  # noqa: E731
    linear = lambda cin, cout, bias=True: cin * cout + (cout if bias else 0)  # noqa: E731
    norm = lambda d: 2 * d  # noqa: E731  LayerNorm / BatchNorm2d / ConvLayerNorm: weight + bias
    ins, ks, srs, ratios = [3, *dims[:3]], [7, 3, 3, 3], [8, 4, 2, 1], [8, 8, 4, 4]
    total = 0
    for i, d in enumerate(dims):
        # RGB (MiT): PatchEmbed(proj, norm); Block(norm1, attn(q, kv, proj[, sr, norm]), norm2,
        # mlp(fc1, dwconv 3x3 depth-wise, fc2)); stage norm
        total += conv(ins[i], d, ks[i]) + norm(d)
        attn = linear(d, d) + linear(d, 2 * d) + linear(d, d) + (conv(d, d, srs[i]) + norm(d) if srs[i] > 1 else 0)
        mlp = linear(d, 4 * d) + (4 * d * 9 + 4 * d) + linear(4 * d, d)
        total += depths[i] * (norm(d) + attn + norm(d) + mlp) + norm(d)
        if extra == 0:
            continue
        # PatchEmbedParallel: one shared conv, a ConvLayerNorm per extra modality
        total += conv(ins[i], d, ks[i]) + extra * norm(d)
        if extra > 1:  # PredictorConv: per modality dw 3x3 conv + 1x1 conv to one channel
            total += extra * ((d * 9 + d) + conv(d, 1, 1))
        r = ratios[i] * d  # MSPABlock: BN, conv0 7x7 dw, conv4 1x1, BN, Mlp(1x1, dw 3x3, 1x1),
        ppx = (norm(d) + (d * 49 + d) + conv(d, d, 1) + norm(d)  # 2 layer scales, Conv1d(1,1,3)
               + conv(d, r, 1) + (r * 9 + r) + conv(r, d, 1) + 2 * d + 3)
        total += depths[i] * ppx + norm(d)
        # FRM: ChannelWeights Linear(4d,4d), Linear(4d,2d); SpatialWeights 1x1 2d->d, d->2
        total += linear(4 * d, 4 * d) + linear(4 * d, 2 * d) + conv(2 * d, d, 1) + conv(d, 2, 1)
        # FFM: CrossPath(channel_proj1/2, kv1/2 without bias, end_proj1/2, norm1/2) +
        # ChannelEmbed(residual 1x1 no bias, 1x1, dw 3x3, 1x1, BN, BN)
        total += 2 * linear(d, 2 * d) + 2 * linear(d, 2 * d, bias=False) + 2 * linear(2 * d, d) + 2 * norm(d)
        total += conv(2 * d, d, 1, bias=False) + conv(2 * d, d, 1) + (d * 9 + d) + conv(d, d, 1) + 2 * norm(d)
    # SegFormerHead: linear_c1..4, linear_fuse (1x1 no bias + BN), linear_pred
    total += sum(linear(d, embed) for d in dims) + conv(4 * embed, embed, 1, bias=False) + norm(embed)
    total += conv(embed, classes, 1)
    return total


B0 = ([32, 64, 160, 256], [2, 2, 2, 2], 256)
B2 = ([64, 128, 320, 512], [3, 4, 6, 3], 512)


@pytest.mark.parametrize(
    "variant, spec, mods, expected",
    [
        ("b2", B2, ["rgb"], 25_785_049),  # the calibration value
        ("b0", B0, ["rgb"], 3_720_569),
        ("b0", B0, MODS, 10_310_405),
        ("b2", B2, MODS, 58_732_125),  # the DELIVER paper's 58.73M for CMNeXt-B2 RGB-D-E-L
    ],
)
def test_parameter_counts_equal_the_reference(variant, spec, mods, expected):
    assert reference_param_count(*spec, 25, len(mods) - 1) == expected
    with torch.device("meta"):
        model = build_cmnext(INFO, mods, "paper", variant=variant)
    report = model.parameter_report()
    assert report["trainable"] == expected and report["frozen"] == 0
    assert sum(report["parts"].values()) == expected  # the groups partition the model


def test_state_dict_uses_the_reference_names():
    with torch.device("meta"):
        sd = build_cmnext(INFO, MODS, "tiny").state_dict()
    expected = {
        "backbone.patch_embed1.proj.weight": (32, 3, 7, 7),
        "backbone.block1.0.attn.sr.weight": (32, 32, 8, 8),
        "backbone.block4.1.mlp.dwconv.dwconv.weight": (1024, 1, 3, 3),
        "backbone.extra_downsample_layers.0.proj.module.weight": (32, 3, 7, 7),
        "backbone.extra_downsample_layers.3.norm.ln_2.weight": (256,),
        "backbone.extra_score_predictor.1.score_nets.2.0.weight": (64, 1, 3, 3),
        "backbone.extra_block2.1.mlp.fc1.weight": (512, 64, 1, 1),
        "backbone.extra_block3.0.c_nets.0.weight": (1, 1, 3),
        "backbone.extra_block1.0.norm1.running_var": (32,),
        "backbone.extra_norm4.weight": (256,),
        "backbone.FRMs.2.channel_weights.mlp.0.weight": (640, 640),
        "backbone.FFMs.3.cross.cross_attn.kv1.weight": (512, 256),
        "backbone.FFMs.0.channel_emb.channel_embed.4.running_mean": (32,),
        "decode_head.linear_c4.proj.weight": (256, 256),
        "decode_head.linear_fuse.bn.weight": (256,),
        "decode_head.linear_pred.weight": (25, 256, 1, 1),
    }
    assert {k: tuple(sd[k].shape) for k in expected} == expected
    assert "backbone.FFMs.0.cross.cross_attn.kv1.bias" not in sd


# --- forward through the evaluator --------------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic_val(tmp_path_factory):
    from mlebench.data.synthetic import generate_synthetic

    root = generate_synthetic(tmp_path_factory.mktemp("synth") / "set", size=64, n_train=2, n_val=2,
                              n_test=1, workers=1)
    return load_dataset("synthetic", root, "val", MODS)


def test_every_subset_through_the_evaluator_equals_a_zero_filled_forward(synthetic_val):
    from mlebench.data.transforms import normalize_modality
    from mlebench.engine.evaluate import evaluate_cases
    from mlebench.metrics import per_sample_counts
    from mlebench.protocols.base import EvalCase

    model = build_cmnext(synthetic_val.info, MODS, "tiny", init_seed=3)
    assert not model.separable_encoder and not model.supports_missing_modalities
    subsets = [s for r in range(1, 5) for s in itertools.combinations(MODS, r)]
    cases = [EvalCase(tuple(s)) for s in subsets]
    results = evaluate_cases(model, synthetic_val, cases, batch_size=2)
    assert [r.case for r in results] == cases and all(r.samples == 2 for r in results)

    batch = {k: torch.stack([synthetic_val[i][k] for i in range(2)]) for k in [*MODS, "label"]}
    h, w = batch["label"].shape[-2:]
    inputs = {m: normalize_modality(batch[m], synthetic_val.info.modality(m)) for m in MODS}
    predictions = {}
    with torch.no_grad():
        for subset, result in zip(subsets, results):
            zeroed = {m: inputs[m] if m in subset else torch.zeros_like(inputs[m]) for m in MODS}
            out = model(zeroed, MODS)
            assert out.logits.shape == (2, 25, h, w) and torch.isfinite(out.logits).all()
            pred = out.logits.argmax(1)
            counts = per_sample_counts(pred, batch["label"], 25).numpy()
            assert (result.counts == counts).all(), subset
            predictions[subset] = pred
            # forward with only the subset: decode zero-fills the rest identically
            assert torch.equal(model({m: inputs[m] for m in subset}, subset).logits, out.logits)
    # the modalities matter: not every subset predicts the same
    assert len({p.numpy().tobytes() for p in predictions.values()}) > 1


# --- training ----------------------------------------------------------------------------------
def test_training_steps_lower_the_loss():
    torch.manual_seed(0)
    model = build_cmnext(INFO, ["rgb", "depth"], "tiny")
    x = {m: torch.randn(2, 3, 64, 64) for m in model.modalities}
    # a learnable layout: the class is the 16x16 block's row index, plus an ignored band
    target = (torch.arange(64) // 16).repeat_interleave(64).reshape(64, 64).expand(2, 64, 64).clone()
    target[:, :, :4] = 255
    groups = model.optimizer_groups(1e-3)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert groups[1]["weight_decay"] == 0.0 and all(p.dim() == 1 for p in groups[1]["params"])
    assert all(g["lr"] == 1e-3 for g in groups)  # one rate for backbone and head, as the reference
    opt = torch.optim.AdamW(groups, lr=1e-3, weight_decay=0.01)

    def eval_loss() -> float:
        model.eval()
        with torch.no_grad():
            # plain cross-entropy, independent of the method's own loss
            return torch.nn.functional.cross_entropy(model(x).logits, target, ignore_index=255).item()

    before = eval_loss()
    model.train()
    for _ in range(8):
        loss = model.loss(model(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    grads = [p.grad for p in model.backbone.extra_block1.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)  # the extra branch is trained
    after = eval_loss()
    assert after < 0.7 * before, (before, after)


def test_train_and_eval_defaults():
    """The paper's common recipe by default; ``recipe: reference`` is DELIVER's own: batch 2 per
    GPU on 4 GPUs, lr 6e-5, 200 epochs with 10 warm-up epochs."""
    assert CMNeXt.train_defaults("tiny") == {"steps": 500, "batch_size": 8, "crop_size": 128,
                                             "base_size": 256, "lr": 1e-3}
    assert CMNeXt.train_defaults("paper") == {"batch_size": 6, "crop_size": 1024, "base_size": 1024,
                                              "lr": 1e-4, "amp": True, "epochs": 100}
    assert recipe_defaults(CMNeXt.train_defaults("paper"), "reference", REFERENCE_RECIPE, "paper") == {
        "batch_size": 8, "crop_size": 1024, "base_size": 1024, "lr": 6e-5, "amp": True, "epochs": 200,
        "warmup_fraction": 0.05}
    tiny = build_cmnext(INFO, ["rgb", "depth"], "tiny", recipe="reference")
    assert tiny.training_defaults() == {**CMNeXt.train_defaults("tiny"), "warmup_fraction": 0.05}
    with pytest.raises(ConfigError, match="cmnext: unknown recipe 'deliver'; known: paper, reference"):
        build_cmnext(INFO, ["rgb"], "tiny", recipe="deliver")
    assert CMNeXt.eval_size("tiny") is None and CMNeXt.eval_size("paper") == 1024
    assert CMNeXt.versioned_packages == () and CMNeXt.size_multiple == 32


# --- pretrained MiT weights ----------------------------------------------------------------------
def _mit_file(path: Path, model: CMNeXt, drop: str | None = None, add: str | None = None) -> Path:
    """A SegFormer-format mit_b0.pth made from ``model``'s RGB stream: the backbone's keys without
    the ``backbone.`` prefix (MiT's own names) plus the ImageNet classifier ``head.*``."""
    state = {k[len("backbone."):]: v.clone() for k, v in model.state_dict().items()
             if k.startswith(("backbone.patch_embed", "backbone.block", "backbone.norm"))}
    assert "block1.0.attn.q.weight" in state and "norm1.weight" in state and "patch_embed1.proj.weight" in state
    state["head.weight"], state["head.bias"] = torch.randn(1000, 256), torch.zeros(1000)
    if drop:
        del state[drop]
    if add:
        state[add] = torch.zeros(3)
    torch.save(state, path)
    return path


def test_load_pretrained_mit_weights(tmp_path):
    source = build_cmnext(INFO, ["rgb"], "tiny", init_seed=1)
    path = _mit_file(tmp_path / "mit_b0.pth", source)
    model = build_cmnext(INFO, ["rgb", "lidar"], "tiny", init_seed=2)
    extra_before = {k: v.clone() for k, v in model.backbone.extra_block1.state_dict().items()}
    summary = model.load_pretrained(path)
    assert summary["ignored"] == ["head.bias", "head.weight"]
    assert model.frozen_source == "mit:" + summary["sha256"][:16]
    src, dst = source.state_dict(), model.state_dict()
    rgb_keys = [k for k in src if k.startswith(("backbone.patch_embed", "backbone.block", "backbone.norm"))]
    assert len(rgb_keys) == summary["loaded"]
    assert all(torch.equal(src[k], dst[k]) for k in rgb_keys)
    # as the reference, the extra branch keeps its initialisation
    assert all(torch.equal(v, model.backbone.extra_block1.state_dict()[k]) for k, v in extra_before.items())
    # the builder option does the same
    built = build_cmnext(INFO, ["rgb"], "tiny", mit_checkpoint=str(path))
    assert built.frozen_source == model.frozen_source
    assert torch.equal(built.state_dict()["backbone.block2.1.attn.kv.weight"], src["backbone.block2.1.attn.kv.weight"])
    assert "mit_checkpoint" not in built.config_dict()


def test_load_pretrained_refuses_with_named_keys(tmp_path):
    source = build_cmnext(INFO, ["rgb"], "tiny")
    model = build_cmnext(INFO, ["rgb"], "tiny", init_seed=5)
    before = model.state_dict()["backbone.norm2.weight"].clone()
    with pytest.raises(ConfigError, match=r"missing: block3\.1\.attn\.kv\.bias"):
        model.load_pretrained(_mit_file(tmp_path / "a.pth", source, drop="block3.1.attn.kv.bias"))
    with pytest.raises(ConfigError, match=r"unexpected: block9\.0\.gamma"):
        model.load_pretrained(_mit_file(tmp_path / "b.pth", source, add="block9.0.gamma"))
    with torch.no_grad():  # a B2-sized first patch embedding
        source.backbone.patch_embed1.proj.weight = torch.nn.Parameter(torch.zeros(64, 3, 7, 7))
    with pytest.raises(ConfigError, match=r"mismatched: patch_embed1\.proj\.weight \(64, 3, 7, 7\) \(expected \(32, 3, 7, 7\)\)"):
        model.load_pretrained(_mit_file(tmp_path / "c.pth", source))
    assert torch.equal(model.state_dict()["backbone.norm2.weight"], before)  # nothing copied
    assert model.frozen_source == "seed:5"


# --- checkpoints and configuration -------------------------------------------------------------
def test_checkpoint_round_trip(tmp_path):
    from mlebench.engine.checkpoint import load_checkpoint, save_checkpoint

    model = build_cmnext(INFO, ["rgb", "depth", "event"], "tiny")
    model.method_name = "cmnext"
    with torch.no_grad():  # trained-looking weights and BN statistics
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
        model.decode_head.linear_fuse.bn.running_mean.fill_(0.5)
    path = save_checkpoint(model, tmp_path / "cmnext.pt")
    fresh = build_cmnext(INFO, ["rgb", "depth", "event"], "tiny")
    fresh.method_name = "cmnext"
    load_checkpoint(fresh, path)
    a, b = model.state_dict(), fresh.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = {m: torch.randn(1, 3, 64, 64) for m in model.modalities}
    with torch.no_grad():
        assert torch.equal(model.eval()(x).logits, fresh.eval()(x).logits)


def test_builder_errors():
    from mlebench.registry import build_method

    with pytest.raises(ConfigError, match="RGB camera"):
        build_cmnext(INFO, ["depth", "lidar"], "tiny")
    with pytest.raises(ConfigError, match=r"unknown CMNeXt option\(s\) depth_first; known: .*mit_checkpoint.*variant"):
        build_method("cmnext", INFO, ["rgb"], "tiny", depth_first=True)
    with pytest.raises(ConfigError, match="unknown CMNeXt variant 'b7'"):
        build_cmnext(INFO, ["rgb"], "tiny", variant="b7")
    model = build_method("cmnext", INFO, ["depth", "rgb"], "tiny", variant="B0")
    assert model.method_name == "cmnext" and model.variant == "b0"
    assert model.rgb_modality == "rgb" and model.extra_modalities == ("depth",)
    with pytest.raises(ConfigError):
        model.encode("rgb", torch.zeros(1, 1, 32, 32))


def test_the_reference_reshape_between_stages_is_kept_and_the_fix_is_an_option():
    """With two or more extra modalities the reference reinterprets NCHW maps as NHWC between
    stages; ``extra_reshape: fixed`` adds the maps as they are. One extra modality: no reshape."""
    x = [torch.randn(1, 3, 64, 64) for _ in range(3)]
    for mods, differs in ((["rgb", "depth", "event"], True), (["rgb", "depth"], False)):
        torch.manual_seed(0)
        reference = build_cmnext(INFO, mods, "tiny").eval()
        fixed = build_cmnext(INFO, mods, "tiny", extra_reshape="fixed").eval()
        fixed.load_state_dict(reference.state_dict())
        with torch.no_grad():
            a = reference.backbone(x[: len(mods)])
            b = fixed.backbone(x[: len(mods)])
        assert torch.equal(a[0], b[0])  # stage 1 runs before the first reshape
        assert (not torch.allclose(a[-1], b[-1])) == differs
    with pytest.raises(ConfigError, match="unknown extra_reshape 'nhwc'; known: reference, fixed"):
        build_cmnext(INFO, ["rgb"], "tiny", extra_reshape="nhwc")