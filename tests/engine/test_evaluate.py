"""The evaluator: cached equals uncached, conditions select samples, noise is shared."""

from __future__ import annotations

import math

import numpy as np

import pytest
import torch

from mlebench.registry import build_method
from mlebench.corruptions import Corruption, apply_corruption, corruption_seed
from mlebench.data import dataset_info, load_dataset
from mlebench.data.synthetic import generate_synthetic
from mlebench.data.transforms import Normalize
from mlebench.engine.evaluate import evaluate_cases
from mlebench.errors import ConfigError
from mlebench.metrics import ConfusionMatrix
from mlebench.protocols import ALL, EvalCase, get_protocol

from ..helpers import deliver_path
from torch.nn import functional as F
from torch.utils.data import Dataset

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


def test_pixel_sample_does_not_depend_on_batching(model, val_set):
    case = EvalCase(("depth", "lidar"))
    a = evaluate_cases(model, val_set, [case], batch_size=2, collect_pixels=7)[0].pixels
    b = evaluate_cases(model, val_set, [case], batch_size=5, collect_pixels=7)[0].pixels
    assert a.keys() == b.keys() and len(a) >= 3
    for cls in a:
        assert a[cls][1] == b[cls][1]  # pixels seen
        assert a[cls][0].shape == (min(7, a[cls][1]), model.config.d_model)
        assert np.allclose(a[cls][0], b[cls][0], atol=1e-4)  # same pixels; values up to GEMM rounding




# --- an independent reference: one sample at a time, every step written out -------------------


def _reference(model, dataset, case: EvalCase, base_seed: int = 0, convention: str | None = None,
               eval_size: int | None = None) -> tuple[float, list[float], int]:
    """(mIoU, per-class IoU, samples) of ``case``, computed sample by sample without the evaluator:
    the condition picks whole samples from their meta, the corruption is drawn from the sample's
    own id, missing modalities are zero-filled when the method cannot drop them."""
    info = dataset.info
    cm = ConfusionMatrix(model.num_classes, info.ignore_index)
    norm = Normalize(info, model.modalities)
    n = 0
    with torch.no_grad():
        for i in range(len(dataset)):
            sample = dataset[i]
            meta = sample["meta"]
            if case.condition != ALL and case.condition not in (meta.get("weather"), meta.get("sensor_failure")):
                continue
            raw = {m: sample[m].float() for m in model.modalities}
            label = sample["label"]
            if eval_size is not None:
                h, w = label.shape
                size = (round(h * eval_size / min(h, w)), round(w * eval_size / min(h, w)))
                raw = {m: F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]
                       for m, x in raw.items()}
                label = F.interpolate(label[None, None].float(), size=size, mode="nearest")[0, 0].long()
            c = case.corruption
            if c is not None:
                raw[c.modality] = apply_corruption(raw[c.modality], c, corruption_seed(base_seed, meta["id"], c))
            x = norm({**raw})
            h, w = label.shape
            ph, pw = (-h) % 32, (-w) % 32
            feats = {}
            for m in model.modalities:
                if m in case.test_modalities:
                    inp = F.pad(x[m][None], (0, pw, 0, ph))
                elif not model.supports_missing_modalities:
                    inp = torch.zeros((1, 3, h + ph, w + pw))
                else:
                    continue
                feats[m] = model.encode(m, inp)
            logits = model.decode(feats, (h + ph, w + pw)).logits[0, :, :h, :w]
            cm.update(logits.argmax(0), label)
            n += 1
    convention = convention or info.miou_convention
    return cm.miou(convention), cm.iou().tolist(), n


def _same(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b))


def test_each_condition_scores_only_its_own_samples(model, val_set):
    """Per-condition mIoU equals a reference over exactly that condition's samples (and the
    conditions really differ, so scoring every sample for every condition would be caught)."""
    cases = get_protocol("conditions").cases(RDEL, val_set.info)
    results = evaluate_cases(model, val_set, cases, batch_size=4)
    seen = set()
    for r in results:
        miou, iou, n = _reference(model, val_set, r.case)
        if n == 0:
            assert r.samples == 0, r.case
            continue
        assert r.samples == n, r.case
        assert _same(r.iou, iou), r.case
        assert r.miou == pytest.approx(miou, abs=1e-12), r.case
        seen.add(round(r.miou, 12))
    assert len(seen) >= 4  # the conditions give different numbers


def test_noise_is_drawn_per_sample_id_not_per_batch_position(model, val_set):
    """Noise cases equal the per-sample reference, for any batch size and sample order."""
    cases = [EvalCase(RDEL, corruption=Corruption("gaussian", 50.0, "rgb")),
             EvalCase(RDEL, corruption=Corruption("salt_pepper", 0.2, "depth"))]
    by_batch = {b: evaluate_cases(model, val_set, cases, batch_size=b, base_seed=3) for b in (1, 4, 6)}

    class Reversed(Dataset):
        info = val_set.info

        def __len__(self):
            return len(val_set)

        def __getitem__(self, i):
            return val_set[len(val_set) - 1 - i]

    reordered = evaluate_cases(model, Reversed(), cases, batch_size=4, base_seed=3)
    for k, case in enumerate(cases):
        miou, iou, _ = _reference(model, val_set, case, base_seed=3)
        for results in (*by_batch.values(), reordered):
            assert _same(results[k].iou, iou), case
        assert by_batch[1][k].miou == pytest.approx(miou, abs=1e-12)
    other_seed = evaluate_cases(model, val_set, cases[:1], batch_size=4, base_seed=4)[0]
    assert not _same(other_seed.iou, by_batch[4][0].iou)


def test_feature_cache_equals_naive_path_for_the_whole_noise_protocol(val_set):
    """Every case of the noise protocol with its severity sweep: cached == uncached == reference
    (a cache keyed by less than the full corruption name reuses one severity for another)."""
    torch.manual_seed(2)
    pair = ("rgb", "depth")
    m = build_method("mlesam", val_set.info, pair, "tiny", sam2_checkpoint=None)
    with torch.no_grad():
        for p in m.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    m.eval()
    cases = get_protocol("noise").cases(pair, val_set.info)
    assert len(cases) == 31  # clean + 2 x 15 corruptions (paper levels inside the sweeps)
    cached = evaluate_cases(m, val_set, cases, batch_size=6, base_seed=1)
    uncached = evaluate_cases(m, val_set, cases, batch_size=6, base_seed=1, feature_cache=False)
    for a, b in zip(cached, uncached):
        assert a.case == b.case and _same(a.iou, b.iou), a.case.label
    # The severities of one kind give different numbers, so a cache mix-up cannot hide.
    sweep = [r.miou for r in cached if r.case.corruption and r.case.corruption.kind == "gaussian"
             and r.case.corruption.modality == "rgb"]
    assert len(sweep) == 5 and len(set(sweep)) >= 3
    for r in cached[::6]:  # a spread of cases against the independent reference
        assert _same(r.iou, _reference(m, val_set, r.case, base_seed=1)[1]), r.case.label


@pytest.fixture(scope="module")
def zero_fill_model():
    torch.manual_seed(3)
    m = build_method("mlesam", dataset_info("synthetic"), RDEL, "tiny", sam2_checkpoint=None,
                     missing_modality="zero")
    with torch.no_grad():
        for p in m.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    return m.eval()


@pytest.mark.parametrize("feature_cache", [True, False])
def test_zero_fill_feeds_zeros_for_the_missing_modalities(zero_fill_model, val_set, feature_cache):
    """A method that cannot drop a modality (MLE-SAM with missing_modality=zero) gets all-zero
    inputs for the missing ones: equal to the reference, and not to feeding the real data."""
    assert not zero_fill_model.supports_missing_modalities
    cases = [EvalCase(("depth",)), EvalCase(("rgb", "lidar")),
             EvalCase(("rgb", "event"), corruption=Corruption("uniform", 100.0, "event"))]
    results = evaluate_cases(zero_fill_model, val_set, cases, batch_size=4, feature_cache=feature_cache)
    full = evaluate_cases(zero_fill_model, val_set, [EvalCase(RDEL)], batch_size=4)[0]
    for r in results:
        miou, iou, n = _reference(zero_fill_model, val_set, r.case)
        assert _same(r.iou, iou) and r.samples == n, r.case.label
        assert not _same(r.iou, full.iou)  # zeros, not the real inputs
    from mlebench.engine.evaluate import missing_policy

    assert missing_policy(zero_fill_model) == "zero-fill"


def test_odd_sizes_are_padded_and_resized(model, val_set):
    """A size that is not a multiple of 32 evaluates padded (logits cropped back), and
    ``eval_size`` resizes first: both equal the per-sample reference."""

    class Odd(Dataset):
        info = val_set.info

        def __len__(self):
            return 3

        def __getitem__(self, i):
            s = dict(val_set[i])
            for key in (*RDEL, "label"):
                s[key] = s[key][..., :50, :61]
            return s

    case = EvalCase(RDEL)
    padded = evaluate_cases(model, Odd(), [case], batch_size=2)[0]
    miou, iou, n = _reference(model, Odd(), case)
    assert padded.samples == n == 3 and _same(padded.iou, iou)
    resized = evaluate_cases(model, Odd(), [case], batch_size=2, eval_size=64)[0]
    miou, iou, n = _reference(model, Odd(), case, eval_size=64)
    assert _same(resized.iou, iou) and resized.miou == pytest.approx(miou, abs=1e-12)
    assert not _same(resized.iou, padded.iou)


# --- the data set's mIoU convention reaches the numbers -----------------------------------


@pytest.fixture(scope="module")
def few_class_deliver(tmp_path_factory: pytest.TempPathFactory):
    """A DELIVER-layout val split whose labels use 3 of the 25 classes, so the two mIoU
    conventions differ a lot (DELIVER's counts the 22 absent classes as 0)."""
    from tests.conftest import save_png

    root = tmp_path_factory.mktemp("dlv") / "DELIVER"
    rng = np.random.default_rng(5)
    for k, weather in enumerate(("cloud", "fog", "night")):
        frame = f"00000{k}"
        label = np.ones((32, 32), np.uint8)
        label[:, 12:] = 2
        label[20:, :] = 3
        arrays = {"rgb": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
                  "depth": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
                  "label": np.stack([label, label, label], axis=2)}
        for modality, array in arrays.items():
            save_png(deliver_path(root, modality, weather, "val", "MAP_1_point0", frame), array)
    return load_dataset("deliver", root, "val", ["rgb", "depth"])


def test_evaluator_uses_the_data_sets_convention(few_class_deliver):
    ds = few_class_deliver
    assert ds.info.miou_convention == "deliver"
    torch.manual_seed(0)
    m = build_method("mlesam", ds.info, ["rgb", "depth"], "tiny", sam2_checkpoint=None).eval()
    with torch.no_grad():  # predict mostly class 1 (the most common label): non-zero IoUs
        m.aux_head.predict.bias[1] += 100.0
    case = EvalCase(("rgb", "depth"))
    result = evaluate_cases(m, ds, [case], batch_size=2)[0]
    deliver, iou, n = _reference(m, ds, case, convention="deliver")
    present, _, _ = _reference(m, ds, case, convention="present")
    assert n == 3 and _same(result.iou, iou)
    assert result.miou == pytest.approx(deliver, abs=1e-12)
    assert abs(deliver - present) > 0.05  # the conventions really differ here
