"""Every registered method, found by listing the registry: a new method is tested here without
editing this file. Its recipe is complete, every modality subset decodes, a few steps on one
batch lower its loss, and its checkpoint round-trips and is refused by another method."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from methods import build_method, default_method, method_names
from methods.base import method_presets, weights_option
from mlebench.cli import main
from mlebench.config import TrainConfig
from mlebench.data import dataset_info
from mlebench.engine.checkpoint import load_checkpoint, save_checkpoint
from mlebench.errors import ConfigError

INFO = dataset_info("synthetic")
PAIR = ("rgb", "depth")
METHODS = method_names()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _build(name: str, **options):
    torch.manual_seed(0)
    return build_method(name, INFO, PAIR, "tiny", **{weights_option(name): None}, **options)


def test_the_registry_has_the_paper_methods():
    assert {"mlesam", "sam-lora", "cwsam", "cmnext"} <= set(METHODS)
    assert default_method() == "mlesam"


@pytest.mark.parametrize("name", METHODS)
def test_recipe_is_complete(name: str):
    method = _build(name)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for preset in ("tiny", "paper"):
        defaults = type(method).train_defaults(preset)
        assert set(defaults) - {"epochs"} <= fields, (name, preset)
        assert "steps" in defaults or "epochs" in defaults
    assert type(method).eval_size("tiny") is None and type(method).eval_size("paper") == 1024
    groups = method.optimizer_groups(1e-3)
    grouped = [p for g in groups for p in g["params"]]
    trainable = [p for p in method.parameters() if p.requires_grad]
    assert len(grouped) == len(trainable) and {id(p) for p in grouped} == {id(p) for p in trainable}
    assert weights_option(name) is not None
    assert method_presets(name) == ("tiny", "paper")  # every paper method offers both


@pytest.mark.parametrize("name", METHODS)
def test_every_subset_decodes_and_training_lowers_the_loss(name: str):
    method = _build(name).eval()
    g = torch.Generator().manual_seed(1)
    batch = {m: torch.randn(2, 3, 64, 64, generator=g) for m in PAIR}
    target = torch.randint(0, 4, (2, 64, 64), generator=g)
    with torch.no_grad():
        for r in (1, 2):
            for subset in itertools.combinations(PAIR, r):
                out = method({m: batch[m] for m in subset}, subset)
                assert out.logits.shape == (2, INFO.num_classes, 64, 64), (name, subset)
                assert torch.isfinite(out.logits).all()
    method.train()
    optimizer = torch.optim.AdamW(method.optimizer_groups(3e-3), lr=3e-3)
    losses = []
    for _ in range(6):
        loss = method.loss(method(batch), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0], (name, losses)


@pytest.mark.parametrize("name", METHODS)
def test_channels_last_upsampling_predicts_what_the_plain_one_does(name: str):
    """``upsample_logits`` (channels-last, for speed) against a plain contiguous bilinear
    upsampling followed by ``max(1).indices``: the same predictions, on trained-like logits of
    the shipped stand-ins and the synthetic val images."""
    from methods.base import contiguous_upsampling
    from mlebench.data import load_dataset
    from mlebench.data.transforms import normalize_modality
    from mlebench.metrics import predict_labels

    torch.manual_seed(0)
    method = build_method(name, INFO, PAIR, "tiny").eval()  # the stand-in weights: peaky logits
    data = load_dataset("synthetic", None, "val", list(PAIR))
    batch = {m: torch.stack([normalize_modality(data[i][m], INFO.modality(m)) for i in range(2)]) for m in PAIR}
    with torch.no_grad():
        fast = method(batch).logits
        with contiguous_upsampling():
            plain = method(batch).logits
    assert fast.is_contiguous(memory_format=torch.channels_last) and plain.is_contiguous()
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
    assert torch.equal(predict_labels(fast), plain.max(1).indices)


@pytest.mark.parametrize("name", METHODS)
def test_checkpoint_round_trips_and_another_method_refuses_it(name: str, tmp_path: Path):
    method = _build(name)
    with torch.no_grad():
        for p in method.parameters():
            if p.requires_grad:
                p.add_(0.01)
    path = save_checkpoint(method, tmp_path / "m.pt")
    fresh = _build(name)
    load_checkpoint(fresh, path)
    assert all(torch.equal(a, b) for a, b in zip(fresh.trainable_state_dict().values(),
                                                 method.trainable_state_dict().values()))
    other = next(m for m in METHODS if m != name)
    with pytest.raises(ConfigError, match=f"is for method '{name}', but this run uses '{other}'"):
        load_checkpoint(_build(other), path)


def test_weights_and_method_options_from_the_cli(tmp_path: Path):
    """--weights goes to the option the method registers; -o sets any option, type-checked."""
    runner = CliRunner()
    result = runner.invoke(main, ["params", "--method", "mlesam", "--preset", "tiny", "--json"])
    assert result.exit_code == 0
    bad = runner.invoke(main, ["run", "--steps", "1", "-o", "top_k=two", "--weights", "none",
                               "--results", str(tmp_path / "r.sqlite")])
    assert bad.exit_code == 1 and "method.top_k = 'two'" in bad.output
    assert not (tmp_path / "r.sqlite").exists()
    bad = runner.invoke(main, ["run", "--steps", "1", "-o", "top_k", "--results", str(tmp_path / "r.sqlite")])
    assert bad.exit_code == 2 and "'top_k' is not KEY=VALUE" in bad.output
