"""Checks every registered method must pass, for any method the registry holds — the built-in
ones in mlebench's own tests, a plugin's in the plugin's tests::

    import pytest
    from mlebench import conformance

    @pytest.mark.parametrize("check", conformance.CHECKS)
    def test_my_method(check):
        check("my-method")

Each check builds the method on two modalities of the synthetic data set's description (no data
is read, no weights are downloaded: a weights option is set to None) and raises
:class:`AssertionError` saying what is wrong:

- :func:`check_recipe`: every preset the method registers has training defaults the trainer
  takes (``steps`` or ``epochs`` among them) and an evaluation size; the optimizer's parameter
  groups hold every trainable parameter exactly once;
- :func:`check_decodes_every_subset`: every non-empty subset of the training modalities decodes
  to finite logits of the input's size, and ``encode`` + ``decode`` equals ``forward``;
- :func:`check_training_lowers_the_loss`: a few optimizer steps on one batch lower the loss;
- :func:`check_checkpoint_round_trip`: the trainable weights survive a checkpoint, and a
  method of another name refuses the file.
"""

from __future__ import annotations

import dataclasses
import itertools
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from mlebench.config import TrainConfig
from mlebench.data import dataset_info
from mlebench.engine.checkpoint import load_checkpoint, save_checkpoint
from mlebench.errors import ConfigError
from mlebench.method import SegmentationMethod
from mlebench.registry import build_method, method_entry, method_names

INFO = dataset_info("synthetic")
MODALITIES = ("rgb", "depth")
SIZE = 64


def build_for_checks(name: str, preset: str | None = None, seed: int = 0, **options: Any) -> SegmentationMethod:
    """``name`` on rgb and depth of the synthetic set, seeded, without loading any weights file."""
    entry = method_entry(name)
    if entry.weights_option is not None:
        options.setdefault(entry.weights_option, None)
    torch.manual_seed(seed)
    return build_method(name, INFO, MODALITIES, preset, **options)


def _batch(method: SegmentationMethod, seed: int = 1) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    size = -(-SIZE // method.size_multiple) * method.size_multiple
    batch = {m: torch.randn(2, INFO.modality(m).channels, size, size, generator=g) for m in MODALITIES}
    return batch, torch.randint(0, 4, (2, size, size), generator=g)


def check_recipe(name: str) -> None:
    entry = method_entry(name)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    method = build_for_checks(name)
    for preset in entry.presets:
        defaults = type(method).train_defaults(preset)
        unknown = set(defaults) - {"epochs"} - fields
        assert not unknown, f"{name}: train_defaults({preset!r}) has options the trainer does not take: {unknown}"
        assert "steps" in defaults or "epochs" in defaults, f"{name}: train_defaults({preset!r}) sets no length"
        size = type(method).eval_size(preset)
        assert size is None or (isinstance(size, int) and size > 0), f"{name}: eval_size({preset!r}) is {size!r}"
    grouped = [p for g in method.optimizer_groups(1e-3) for p in g["params"]]
    trainable = [p for p in method.parameters() if p.requires_grad]
    assert trainable, f"{name}: no trainable parameter"
    assert len(grouped) == len({id(p) for p in grouped}) and {id(p) for p in grouped} == {id(p) for p in trainable}, \
        f"{name}: optimizer_groups must hold every trainable parameter exactly once"


def check_decodes_every_subset(name: str) -> None:
    method = build_for_checks(name).eval()
    batch, _ = _batch(method)
    size = tuple(batch[MODALITIES[0]].shape[-2:])
    with torch.no_grad():
        for r in range(1, len(MODALITIES) + 1):
            for subset in itertools.combinations(MODALITIES, r):
                out = method({m: batch[m] for m in subset}, subset)
                assert tuple(out.logits.shape) == (2, INFO.num_classes, *size), \
                    f"{name} on {subset}: logits {tuple(out.logits.shape)}, expected {(2, INFO.num_classes, *size)}"
                assert torch.isfinite(out.logits).all(), f"{name} on {subset}: non-finite logits"
                if method.separable_encoder:
                    again = method.decode({m: method.encode(m, batch[m]) for m in subset}, size)
                    torch.testing.assert_close(again.logits, out.logits, msg=f"{name}: encode+decode != forward")


def check_training_lowers_the_loss(name: str, steps: int = 6, lr: float = 3e-3) -> None:
    method = build_for_checks(name).train()
    batch, target = _batch(method)
    optimizer = torch.optim.AdamW(method.optimizer_groups(lr), lr=lr)
    losses = []
    for _ in range(steps):
        loss = method.loss(method(batch), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0], f"{name}: {steps} steps on one batch did not lower the loss: {losses}"


def check_checkpoint_round_trip(name: str) -> None:
    method = build_for_checks(name)
    with torch.no_grad():
        for p in method.parameters():
            if p.requires_grad:
                p.add_(0.01)
    with tempfile.TemporaryDirectory(prefix="mlebench-conformance-") as tmp:
        path = save_checkpoint(method, Path(tmp) / "m.pt")
        fresh = build_for_checks(name)
        load_checkpoint(fresh, path)
        for key, value in method.trainable_state_dict().items():
            assert torch.equal(fresh.trainable_state_dict()[key], value), f"{name}: {key} changed in a checkpoint"
        other = next((m for m in method_names() if m != name), None)
        if other is not None:
            try:
                load_checkpoint(build_for_checks(other), path)
            except ConfigError as exc:
                assert f"is for method '{name}'" in str(exc), f"{name}: refused for another reason: {exc}"
            else:
                raise AssertionError(f"{name}: method {other} loaded its checkpoint")


CHECKS: list[Callable[[str], None]] = [check_recipe, check_decodes_every_subset, check_training_lowers_the_loss,
                                       check_checkpoint_round_trip]


def check_method(name: str) -> None:
    """Every check on method ``name``."""
    for check in CHECKS:
        check(name)
