"""Evaluation benchmarks on the synthetic set, each measured side by side in one run: the feature
cache, the logit upsampling of decode, and data loading against the model."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset

from mlebench.data import dataset_info, load_dataset
from mlebench.data.augment import TrainAugment, TrainingView
from mlebench.data.transforms import normalize_modality
from mlebench.engine.evaluate import EvalProfile, evaluate_cases
from mlebench.engine.train import TrainConfig, train
from mlebench.method import contiguous_upsampling
from mlebench.metrics import predict_labels
from mlebench.protocols import get_protocol
from mlebench.registry import build_method
from mlebench.timing import best_time as _best_time


def _subset(dataset: str, data_root: Any, split: str, modalities: Any, samples: int) -> Any:
    full = load_dataset(dataset, data_root, split, modalities)
    data = Subset(full, range(min(samples, len(full))))
    data.info = full.info  # type: ignore[attr-defined]  (the evaluator reads the data set's info)
    data.modalities = full.modalities  # type: ignore[attr-defined]
    return data


def bench_feature_cache(
    method_name: str,
    protocol: str = "missing-modality",
    preset: str | None = None,
    dataset: str = "synthetic",
    data_root: Any = None,
    split: str = "val",
    samples: int = 16,
    batch_size: int = 4,
    device: str = "cpu",
    seed: int = 0,
    eval_size: int | None = None,
    amp: bool = False,
) -> dict[str, Any]:
    """The evaluator as ``mlebench run`` runs it (at the preset's evaluation size unless
    ``eval_size`` is given) on the same samples three ways: the ``full`` protocol (one case, every
    modality), ``protocol`` with the per-modality feature cache, and ``protocol`` without it.
    For each: seconds, seconds per sample, encoder passes per sample, and the time split into
    encoding, decoding and the rest (loading, resizing, normalising, metrics)."""
    info = dataset_info(dataset)
    modalities = info.defaults
    data = _subset(dataset, data_root, split, modalities, samples)
    torch.manual_seed(seed)
    method = build_method(method_name, info, modalities, preset)
    preset = method.preset  # None: the method's default preset
    size = method.eval_size(preset) if eval_size is None else eval_size
    runs = {"full": ("full", True), "cached": (protocol, True), "uncached": (protocol, False)}
    report: dict[str, Any] = {}
    outcomes = {}
    for name, (proto, cached) in runs.items():
        cases = get_protocol(proto).cases(modalities, info)
        profile = EvalProfile(device=str(device))
        outcomes[name] = evaluate_cases(method, data, cases, batch_size, device, feature_cache=cached, base_seed=seed,
                                        eval_size=size, amp=amp, profile=profile)
        n = profile.samples
        report[name] = {
            "protocol": proto, "cases": len(cases), "feature_cache": cached and method.separable_encoder,
            "seconds": profile.total_s, "per_sample_s": profile.total_s / n,
            "encoder_passes_per_sample": profile.encoder_passes / n,
            "forward_passes_per_sample": profile.forward_passes / n,
            "encode_s": profile.encode_s, "decode_s": profile.decode_s, "other_s": profile.other_s,
        }  # fmt: skip
    diff = max(abs(a.miou - b.miou) for a, b in zip(outcomes["cached"], outcomes["uncached"]))
    return {
        "method": method_name, "preset": preset, "dataset": dataset, "protocol": protocol,
        "cases": report["cached"]["cases"],
        "samples": len(data), "batch_size": batch_size, "device": device, "eval_size": size, "amp": amp,
        "runs": report,
        "ratio": report["uncached"]["seconds"] / report["cached"]["seconds"],
        "cached_vs_full_per_sample": report["cached"]["per_sample_s"] / report["full"]["per_sample_s"],
        "miou_max_abs_diff": diff,
    }  # fmt: skip


def bench_decode(method_name: str, preset: str | None = None, dataset: str = "synthetic", data_root: Any = None,
                 split: str = "val", samples: int = 8, batch_size: int = 4, repeats: int = 3, seed: int = 0) -> dict[str, Any]:
    """One modality's encode against one decode + prediction of all modalities, with the plain
    (contiguous) and the channels-last upsampling of the logits, on the same features; and
    whether their predictions agree pixel for pixel."""
    info = dataset_info(dataset)
    modalities = info.defaults
    data = _subset(dataset, data_root, split, modalities, samples)
    torch.manual_seed(seed)
    method = build_method(method_name, info, modalities, preset).eval()
    preset = method.preset
    size = method.eval_size(preset)
    batches = []
    for start in range(0, len(data), batch_size):
        items = [data[i] for i in range(start, min(start + batch_size, len(data)))]
        batch = {m: torch.stack([normalize_modality(it[m], info.modality(m)) for it in items]) for m in modalities}
        if size is not None:
            batch = {m: torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear") for m, x in batch.items()}
        batches.append(batch)
    first = next(iter(modalities))
    with torch.no_grad():
        features = [method.encode_many(b) for b in batches]
        image_size = tuple(batches[0][first].shape[-2:])

        def encode_one() -> None:
            for b in batches:
                method.encode(first, b[first])

        def decode(plain: bool) -> list[torch.Tensor]:
            with contiguous_upsampling() if plain else contextlib.nullcontext():
                out = [method.decode(f, image_size).logits for f in features]
            return [predict_labels(o) if not plain else o.max(1).indices for o in out]

        encode_s = _best_time(encode_one, repeats)
        plain_s = _best_time(lambda: decode(True), repeats)
        fast_s = _best_time(lambda: decode(False), repeats)
        same = all(torch.equal(a, b) for a, b in zip(decode(True), decode(False)))
    return {"method": method_name, "preset": preset, "samples": len(data), "batch_size": batch_size,
            "modalities": list(modalities), "image_size": list(image_size), "encode_one_modality_s": encode_s,
            "decode_plain_s": plain_s, "decode_s": fast_s, "speedup": plain_s / fast_s,
            "decode_plain_per_encode": plain_s / encode_s, "decode_per_encode": fast_s / encode_s,
            "predictions_identical": same}  # fmt: skip


def bench_loader(method_name: str, preset: str | None = None, dataset: str = "synthetic", data_root: Any = None,
                 samples: int = 32, batch_size: int = 4, workers: tuple[int, ...] = (0, 2), train_steps: int = 3,
                 seed: int = 0) -> dict[str, Any]:
    """Data loading against the model, in samples per second: the training loader (augmented
    crops) and the evaluation loader for each worker count, next to the model's training steps
    and its evaluation (full protocol, at the preset's evaluation size) on CPU."""
    info = dataset_info(dataset)
    modalities = info.defaults
    train_data = _subset(dataset, data_root, "train", modalities, samples)
    eval_data = _subset(dataset, data_root, "val", modalities, samples)
    torch.manual_seed(seed)
    method = build_method(method_name, info, modalities, preset)
    preset = method.preset
    recipe = method.train_defaults(preset)
    crop, base = recipe.get("crop_size", 128), recipe.get("base_size")

    def rate(loader: DataLoader) -> float:
        start, n = time.perf_counter(), 0
        for batch in loader:
            n += len(batch["label"])
        return n / (time.perf_counter() - start)

    loaders = {}
    for w in workers:
        view = TrainingView(train_data, TrainAugment(crop, base), seed=seed)
        loaders[w] = {
            "train_samples_per_s": rate(DataLoader(view, batch_size=batch_size, num_workers=w)),
            "eval_samples_per_s": rate(DataLoader(eval_data, batch_size=batch_size, num_workers=w)),
        }
    config = TrainConfig(steps=train_steps, batch_size=batch_size, crop_size=crop, base_size=base, seed=seed, log_every=1)
    start = time.perf_counter()
    train(method, train_data, config)
    train_rate = train_steps * batch_size / (time.perf_counter() - start)
    profile = EvalProfile()
    evaluate_cases(method, eval_data, get_protocol("full").cases(modalities, info), batch_size,
                   eval_size=method.eval_size(preset), profile=profile)
    return {"method": method_name, "preset": preset, "samples": samples, "batch_size": batch_size,
            "loader": {str(w): v for w, v in loaders.items()}, "model_train_samples_per_s": train_rate,
            "model_eval_samples_per_s": profile.samples / (profile.encode_s + profile.decode_s)}  # fmt: skip


def format_feature_cache(r: dict[str, Any]) -> str:
    size = f"{r['eval_size']} px short side" if r["eval_size"] else "stored size"
    lines = [f"{r['method']} ({r['preset']}) on {r['samples']} {r['dataset']} samples at {size}, batch "
             f"{r['batch_size']}, {r['device']}{', bf16' if r['amp'] else ''}",
             f"  {'':34} {'s/sample':>9} {'enc.passes':>10} {'encode':>8} {'decode':>8} {'other':>8}"]
    protocol = r["protocol"]
    labels = {"full": "full protocol (1 case)", "cached": f"{protocol} ({r['cases']}), feature cache",
              "uncached": f"{protocol} ({r['cases']}), no cache"}
    for key, label in labels.items():
        run = r["runs"][key]
        passes = run["encoder_passes_per_sample"] or run["forward_passes_per_sample"]
        lines.append(f"  {label:<34} {run['per_sample_s']:9.3f} {passes:10.0f} {run['encode_s']:7.2f}s "
                     f"{run['decode_s']:7.2f}s {run['other_s']:7.2f}s")
    lines += [f"  ratio no cache / feature cache     : {r['ratio']:6.2f}x",
              f"  {protocol} / full, per sample : {r['cached_vs_full_per_sample']:6.2f}x",
              f"  max |mIoU difference|              : {r['miou_max_abs_diff']:.2e}"]
    return "\n".join(lines)


def format_decode(r: dict[str, Any], repeats: int) -> str:
    return "\n".join([
        f"{r['method']} ({r['preset']}), {r['samples']} synthetic val samples at {r['image_size'][0]}x"
        f"{r['image_size'][1]}, batch {r['batch_size']}, {len(r['modalities'])} modalities (best of {repeats})",
        f"  encode, one modality           : {r['encode_one_modality_s'] * 1e3:8.1f} ms",
        f"  decode + argmax, plain upsample: {r['decode_plain_s'] * 1e3:8.1f} ms "
        f"({r['decode_plain_per_encode']:.2f} of an encode)",
        f"  decode + argmax, channels-last : {r['decode_s'] * 1e3:8.1f} ms ({r['decode_per_encode']:.2f} of an encode)",
        f"  speed-up                       : {r['speedup']:8.2f}x",
        f"  predictions identical          : {'yes' if r['predictions_identical'] else 'NO'}",
    ])


def format_loader(r: dict[str, Any]) -> str:
    lines = [f"{r['method']} ({r['preset']}), {r['samples']} synthetic samples, batch {r['batch_size']}, CPU (samples/s)"]
    for count, rates in r["loader"].items():
        lines.append(f"  loader, {count} workers : train {rates['train_samples_per_s']:8.1f}   "
                     f"eval {rates['eval_samples_per_s']:8.1f}")
    lines.append(f"  model             : train {r['model_train_samples_per_s']:8.1f}   "
                 f"eval {r['model_eval_samples_per_s']:8.1f}")
    return "\n".join(lines)
