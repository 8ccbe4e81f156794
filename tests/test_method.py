"""The method interface, exercised over every registered method (a new method is tested here
without editing this file)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from mlebench.registry import build_method, method_names
from mlebench.data.deliver import DELIVER_INFO
from mlebench.engine.checkpoint import load_checkpoint, save_checkpoint
from mlebench.errors import ConfigError

MODALITIES = ("rgb", "depth", "event", "lidar")
SIZE = 64


def _inputs(batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(batch, 3, SIZE, SIZE, generator=g) for m in MODALITIES}


@pytest.fixture(scope="module", params=method_names())
def method(request):
    torch.manual_seed(0)
    return build_method(request.param, DELIVER_INFO, MODALITIES, "tiny").eval()


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown method 'segformer'; known: .*mlesam"):
        build_method("segformer", DELIVER_INFO, MODALITIES)
    with pytest.raises(ConfigError, match="method 'mlesam' has no preset 'huge'; known: tiny, paper"):
        build_method("mlesam", DELIVER_INFO, MODALITIES, "huge")
    with pytest.raises(ConfigError, match="unknown modality 'thermal'"):
        build_method("mlesam", DELIVER_INFO, ["rgb", "thermal"])


def test_every_subset_decodes(method):
    x = _inputs()
    logits = {}
    with torch.no_grad():
        feats = {m: method.encode(m, x[m]) for m in MODALITIES} if method.separable_encoder else None
        for r in range(1, len(MODALITIES) + 1):
            for subset in itertools.combinations(MODALITIES, r):
                if feats is not None:
                    out = method.decode({m: feats[m] for m in subset}, (SIZE, SIZE))
                else:
                    out = method(x, subset)
                assert out.logits.shape == (2, DELIVER_INFO.num_classes, SIZE, SIZE), subset
                assert torch.isfinite(out.logits).all(), subset
                assert out.embedding.ndim == 4 and out.embedding.shape[0] == 2
                logits[subset] = out.logits
        # Every subset's prediction depends on exactly its modalities: all 15 differ, and the
        # order the features are given in does not matter.
        assert len(logits) == 15
        for a, b in itertools.combinations(logits, 2):
            assert not torch.equal(logits[a], logits[b]), (a, b)
        subset = ("lidar", "rgb", "event")
        again = (method.decode({m: feats[m] for m in subset}, (SIZE, SIZE)) if feats is not None
                 else method(x, subset)).logits
        torch.testing.assert_close(again, logits[("rgb", "event", "lidar")], atol=1e-6, rtol=0)
    # The batch's samples are independent: one sample alone gets the same prediction.
    with torch.no_grad():
        alone = method({m: v[1:] for m, v in x.items()}, ["rgb", "depth"]).logits
    torch.testing.assert_close(alone, logits[("rgb", "depth")][1:], atol=1e-4, rtol=1e-4)


def test_forward_equals_encode_then_decode(method):
    x = _inputs()
    with torch.no_grad():
        via_forward = method(x, ["rgb", "lidar"]).logits
        feats = {m: method.encode(m, x[m]) for m in ("rgb", "lidar")}
        via_parts = method.decode(feats, (SIZE, SIZE)).logits
    torch.testing.assert_close(via_forward, via_parts, atol=1e-5, rtol=1e-5)


def test_untrained_modality_is_an_error(method):
    small = build_method(method.method_name, DELIVER_INFO, ["rgb", "depth"], "tiny")
    with pytest.raises(ConfigError, match=r"modalities \['lidar'\] were not trained; trained: rgb, depth"):
        small(_inputs(), ["rgb", "lidar"])


def test_parameter_report_adds_up(method):
    report = method.parameter_report()
    assert report["trainable"] == sum(report["parts"].values())
    assert report["total"] == report["trainable"] + report["frozen"]
    assert report["trainable"] > 0


def test_checkpoint_round_trip_and_mismatch(method, tmp_path: Path):
    method = build_method(method.method_name, DELIVER_INFO, MODALITIES, "tiny").eval()
    with torch.no_grad():  # stand-in for training: move every trainable weight
        for p in method.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    path = save_checkpoint(method, tmp_path / "ckpt.pt", extra={"step": 7})
    twin = build_method(method.method_name, DELIVER_INFO, MODALITIES, "tiny").eval()
    x = _inputs()
    with torch.no_grad():
        before = twin(x).logits
        assert load_checkpoint(twin, path) == {"step": 7}
        torch.testing.assert_close(twin(x).logits, method(x).logits)
        assert not torch.allclose(before, twin(x).logits)
    other_modalities = build_method(method.method_name, DELIVER_INFO, ["rgb", "depth"], "tiny")
    with pytest.raises(ConfigError, match="is for modalities .*'rgb', 'depth', 'event', 'lidar'"):
        load_checkpoint(other_modalities, path)
    info20 = DELIVER_INFO.__class__(**{**DELIVER_INFO.__dict__, "classes": DELIVER_INFO.classes[:20],
                                        "palette": DELIVER_INFO.palette[:20]})
    with pytest.raises(ConfigError, match="was trained on 25 classes, this run has 20"):
        load_checkpoint(build_method(method.method_name, info20, MODALITIES, "tiny"), path)
