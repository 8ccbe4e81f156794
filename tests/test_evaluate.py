"""The evaluator: cached equals uncached, conditions select samples, noise is shared."""

from __future__ import annotations

import math

import numpy as np

import pytest
import torch

from methods import build_method
from mlebench.corruptions import Corruption
from mlebench.data import dataset_info, load_dataset
from mlebench.data.synthetic import generate_synthetic
from mlebench.data.transforms import Normalize
from mlebench.engine.evaluate import evaluate_cases
from mlebench.errors import ConfigError
from mlebench.metrics import ConfusionMatrix
from mlebench.protocols import EvalCase, get_protocol

RDEL = ("rgb", "depth", "event", "lidar")


@pytest.fixture(scope="module")
def val_set(tmp_path_factory: pytest.TempPathFactory):
    root = generate_synthetic(tmp_path_factory.mktemp("ev") / "s", size=64, n_train=1, n_val=6, n_test=1,
                              seed=4, workers=1)
    return load_dataset("synthetic", root, "val", RDEL)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_method("mlesam", dataset_info("synthetic"), RDEL, "tiny", sam2_checkpoint=None)
    with torch.no_grad():  # a non-trivial model: random LoRA B and heads
        for p in m.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    return m.eval()


def _cases(val_set):
    info = val_set.info
    cases = get_protocol("missing-modality").cases(RDEL, info)
    cases += [EvalCase(RDEL, corruption=Corruption("gaussian", 50.0, m)) for m in ("rgb", "lidar")]
    cases += [EvalCase(RDEL, corruption=Corruption("missing_pixels", 0.5, "depth"))]
    cases += [EvalCase(RDEL, condition) for condition in ("night", "overexposure", "motionblur")]
    return cases


def test_cached_equals_uncached(model, val_set):
    cases = _cases(val_set)
    cached = evaluate_cases(model, val_set, cases, batch_size=3, feature_cache=True)
    uncached = evaluate_cases(model, val_set, cases, batch_size=3, feature_cache=False)
    for a, b in zip(cached, uncached):
        assert a.case == b.case
        assert a.samples == b.samples
        assert a.iou == pytest.approx(b.iou, nan_ok=True, abs=0, rel=0)
        assert a.miou == b.miou or (math.isnan(a.miou) and math.isnan(b.miou))
    # The corruptions changed the predictions (so the comparison is not vacuous).
    by_case = {r.case: r for r in cached}
    noisy = EvalCase(RDEL, corruption=Corruption("missing_pixels", 0.5, "depth"))
    assert by_case[noisy].iou != by_case[EvalCase(RDEL)].iou


def test_matches_a_per_sample_reference(model, val_set):
    case = EvalCase(("rgb", "lidar"))
    result = evaluate_cases(model, val_set, [case], batch_size=4)[0]
    reference = ConfusionMatrix(model.num_classes)
    norm = Normalize(val_set.info, RDEL)
    with torch.no_grad():
        for i in range(len(val_set)):
            s = norm(val_set[i])
            out = model.decode({m: model.encode(m, s[m][None]) for m in case.test_modalities}, (64, 64))
            reference.update(out.logits.argmax(1)[0], s["label"])
    assert result.miou == pytest.approx(reference.miou("present"))
    assert result.samples == len(val_set)


def test_conditions_count_only_their_samples(model, val_set):
    cases = get_protocol("conditions").cases(RDEL, val_set.info)
    results = {r.case.condition: r for r in evaluate_cases(model, val_set, cases, batch_size=4)}
    for condition, r in results.items():
        expected = len(val_set) if condition == "all" else sum(condition in ref.meta.values() for ref in val_set.refs)
        assert r.samples == expected, condition
    assert results["all"].samples == sum(results[w].samples for w in ("cloud", "fog", "night", "rain", "sun"))


def test_noise_is_identical_across_runs_and_methods(val_set, monkeypatch):
    seen: dict[str, list[torch.Tensor]] = {}
    case = EvalCase(("rgb", "depth"), corruption=Corruption("uniform", 100.0, "rgb"))
    info = val_set.info
    for name in ("mlesam", "mlesam-noaux", "mlesam"):
        torch.manual_seed(1)
        method = build_method(name, info, ["rgb", "depth"], "tiny", sam2_checkpoint=None)
        inputs: list[torch.Tensor] = []
        original = method.encode

        def spy(modality, x, _orig=original, _inputs=inputs):
            if modality == "rgb":
                _inputs.append(x.clone())
            return _orig(modality, x)

        monkeypatch.setattr(method, "encode", spy)
        evaluate_cases(method, val_set, [case], batch_size=5, base_seed=7)
        seen.setdefault(name, []).append(torch.cat(inputs))
    first = seen["mlesam"][0]
    assert torch.equal(first, seen["mlesam"][1]) and torch.equal(first, seen["mlesam-noaux"][0])
    clean = Normalize(info, ["rgb"])({"rgb": torch.stack([val_set[i]["rgb"] for i in range(len(val_set))])})["rgb"]
    assert not torch.allclose(first, clean)
    # Another base seed gives other noise.
    method = build_method("mlesam", info, ["rgb", "depth"], "tiny", sam2_checkpoint=None)
    other: list[torch.Tensor] = []
    original = method.encode
    monkeypatch.setattr(method, "encode", lambda m, x: (other.append(x.clone()) if m == "rgb" else None) or original(m, x))
    evaluate_cases(method, val_set, [case], batch_size=5, base_seed=8)
    assert not torch.equal(torch.cat(other), first)


def test_untrained_test_modality_is_an_error(val_set):
    method = build_method("mlesam", val_set.info, ["rgb", "depth"], "tiny", sam2_checkpoint=None)
    with pytest.raises(ConfigError, match=r"modalities \['lidar'\] were not trained"):
        evaluate_cases(method, val_set, [EvalCase(("rgb", "lidar"))])


def test_zero_fill_for_methods_that_cannot_drop_a_modality(model, val_set, monkeypatch):
    calls: list[tuple[str, ...]] = []
    original = model.decode
    monkeypatch.setattr(type(model), "supports_missing_modalities", False, raising=False)
    monkeypatch.setattr(model, "decode", lambda feats, size: (calls.append(tuple(feats)), original(feats, size))[1])
    evaluate_cases(model, val_set, [EvalCase(("depth",))], batch_size=10)
    assert [set(c) for c in calls] == [set(RDEL)]  # the missing modalities reach it as zero inputs


def test_pixel_sample_does_not_depend_on_batching(model, val_set):
    case = EvalCase(("depth", "lidar"))
    a = evaluate_cases(model, val_set, [case], batch_size=2, collect_pixels=7)[0].pixels
    b = evaluate_cases(model, val_set, [case], batch_size=5, collect_pixels=7)[0].pixels
    assert a.keys() == b.keys() and len(a) >= 3
    for cls in a:
        assert a[cls][1] == b[cls][1]  # pixels seen
        assert a[cls][0].shape == (min(7, a[cls][1]), model.config.d_model)
        assert np.allclose(a[cls][0], b[cls][0], atol=1e-4)  # same pixels; values up to GEMM rounding


def test_odd_sizes_are_padded_and_resized(model, val_set):
    """A 1042-like size (not a multiple of 32) evaluates: padded to 32, logits cropped back."""
    from torch.utils.data import Dataset

    class Odd(Dataset):
        info = val_set.info

        def __len__(self):
            return 2

        def __getitem__(self, i):
            s = dict(val_set[i])
            for key in (*RDEL, "label"):
                s[key] = s[key][..., :50, :61]
            return s

    case = EvalCase(RDEL)
    padded = evaluate_cases(model, Odd(), [case], batch_size=2)[0]
    assert padded.samples == 2 and 0 <= padded.miou <= 1
    resized = evaluate_cases(model, Odd(), [case], batch_size=2, eval_size=64)[0]
    assert resized.samples == 2 and resized.iou != padded.iou
