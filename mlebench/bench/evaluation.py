"""Side-by-side benchmarks: each prints both timings, measured in one run, and their ratio."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import torch

from mlebench.timing import best_time as _best_time


def _subset(dataset: str, data_root: Any, split: str, modalities: Any, samples: int) -> Any:
    from torch.utils.data import Subset

    from mlebench.data import load_dataset

    full = load_dataset(dataset, data_root, split, modalities)
    data = Subset(full, range(min(samples, len(full))))
    data.info = full.info  # type: ignore[attr-defined]  (the evaluator reads the data set's info)
    data.modalities = full.modalities  # type: ignore[attr-defined]
    return data


def bench_feature_cache(
    method_name: str,
    protocol: str = "missing-modality",
    preset: str = "tiny",
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
    from methods import build_method
    from mlebench.data import dataset_info
    from mlebench.engine.evaluate import EvalProfile, evaluate_cases
    from mlebench.protocols import get_protocol

    info = dataset_info(dataset)
    modalities = info.defaults
    data = _subset(dataset, data_root, split, modalities, samples)
    torch.manual_seed(seed)
    method = build_method(method_name, info, modalities, preset)
    size = type(method).eval_size(preset) if eval_size is None else eval_size
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
        "method": method_name, "preset": preset, "protocol": protocol, "cases": report["cached"]["cases"],
        "samples": len(data), "batch_size": batch_size, "device": device, "eval_size": size, "amp": amp,
        "runs": report,
        "ratio": report["uncached"]["seconds"] / report["cached"]["seconds"],
        "cached_vs_full_per_sample": report["cached"]["per_sample_s"] / report["full"]["per_sample_s"],
        "miou_max_abs_diff": diff,
    }  # fmt: skip


def bench_decode(method_name: str, preset: str = "tiny", dataset: str = "synthetic", data_root: Any = None,
                 split: str = "val", samples: int = 8, batch_size: int = 4, repeats: int = 3, seed: int = 0) -> dict[str, Any]:
    """One modality's encode against one decode + prediction of all modalities, with the plain
    (contiguous) and the channels-last upsampling of the logits, on the same features; and
    whether their predictions agree pixel for pixel."""
    from methods import build_method
    from methods.base import contiguous_upsampling
    from mlebench.data import dataset_info
    from mlebench.data.transforms import normalize_modality
    from mlebench.metrics import predict_labels

    info = dataset_info(dataset)
    modalities = info.defaults
    data = _subset(dataset, data_root, split, modalities, samples)
    torch.manual_seed(seed)
    method = build_method(method_name, info, modalities, preset).eval()
    size = type(method).eval_size(preset)
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


def bench_loader(method_name: str, preset: str = "tiny", dataset: str = "synthetic", data_root: Any = None,
                 samples: int = 32, batch_size: int = 4, workers: tuple[int, ...] = (0, 2), train_steps: int = 3,
                 seed: int = 0) -> dict[str, Any]:
    """Data loading against the model, in samples per second: the training loader (augmented
    crops) and the evaluation loader for each worker count, next to the model's training steps
    and its evaluation (full protocol, at the preset's evaluation size) on CPU."""
    from torch.utils.data import DataLoader

    from methods import build_method
    from mlebench.data import dataset_info
    from mlebench.data.augment import TrainAugment, TrainingView
    from mlebench.engine.evaluate import EvalProfile, evaluate_cases
    from mlebench.engine.train import TrainConfig, train
    from mlebench.protocols import get_protocol

    info = dataset_info(dataset)
    modalities = info.defaults
    train_data = _subset(dataset, data_root, "train", modalities, samples)
    eval_data = _subset(dataset, data_root, "val", modalities, samples)
    torch.manual_seed(seed)
    method = build_method(method_name, info, modalities, preset)
    recipe = type(method).train_defaults(preset)
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
                   eval_size=type(method).eval_size(preset), profile=profile)
    return {"method": method_name, "preset": preset, "samples": samples, "batch_size": batch_size,
            "loader": {str(w): v for w, v in loaders.items()}, "model_train_samples_per_s": train_rate,
            "model_eval_samples_per_s": profile.samples / (profile.encode_s + profile.decode_s)}  # fmt: skip


def bench_throughput(method_name: str, preset: str = "paper", device: str = "cuda", batch_size: int = 2,
                     steps: int = 5, dataset: str = "synthetic", seed: int = 0) -> dict[str, Any]:
    """Images per second and peak GPU memory for training steps (the preset's autocast) and for
    evaluation forwards in fp32 and under bf16 autocast, on random inputs at the preset's crop
    and evaluation sizes. Returns ``{"skipped": reason}`` for a CUDA device that is not there."""
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        return {"skipped": "no CUDA device (torch.cuda.is_available() is False)", "device": device}
    from methods import build_method
    from mlebench.data import dataset_info

    info = dataset_info(dataset)
    modalities = info.defaults
    dev = torch.device(device)
    torch.manual_seed(seed)
    method = build_method(method_name, info, modalities, preset).to(dev)
    recipe = type(method).train_defaults(preset)
    crop = recipe.get("crop_size", 128)
    eval_size = type(method).eval_size(preset) or crop
    cuda = dev.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(dev)

    def measure(fn: Any, n: int) -> dict[str, Any]:
        fn()  # warm-up (kernels, allocator)
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats(dev)
        start = time.perf_counter()
        for _ in range(n):
            fn()
        sync()
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated(dev) / 2**30 if cuda else None
        return {"images_per_s": n * batch_size / seconds, "peak_gib": peak}

    g = torch.Generator().manual_seed(seed)
    train_batch = {m: torch.randn(batch_size, 3, crop, crop, generator=g).to(dev) for m in modalities}
    target = torch.randint(0, info.num_classes, (batch_size, crop, crop), generator=g).to(dev)
    eval_batch = {m: torch.randn(batch_size, 3, eval_size, eval_size, generator=g).to(dev) for m in modalities}
    optimizer = torch.optim.AdamW(method.optimizer_groups(1e-4), lr=1e-4)
    amp = bool(recipe.get("amp", False)) and cuda

    def train_step() -> None:
        method.train()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            loss = method.loss(method(train_batch), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def eval_forward(bf16: bool) -> Any:
        def run() -> None:
            method.eval()
            with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                method(eval_batch).logits.argmax(1)
        return run

    return {"method": method_name, "preset": preset, "device": str(dev), "batch_size": batch_size, "steps": steps,
            "crop_size": crop, "eval_size": eval_size, "train_amp": amp,
            "train": measure(train_step, steps), "eval_fp32": measure(eval_forward(False), steps),
            "eval_bf16": measure(eval_forward(True), steps)}  # fmt: skip


def bench_bootstrap(cases: int = 15, samples: int = 500, classes: int = 25, resamples: int = 1000, seed: int = 0,
                    loop_resamples: int = 100) -> dict[str, Any]:
    """Bootstrap intervals for a whole protocol: vectorised (one matmul per case set) against a
    plain loop over resamples that sums the resampled images' counts one resample at a time.

    The loop runs ``loop_resamples`` resamples and is scaled to ``resamples`` (it is linear in
    them); both use the same weights, and the largest difference of their resampled mIoUs is
    reported.
    """
    import numpy as np

    from mlebench import stats

    rng = np.random.default_rng(seed)
    data = [tuple(rng.integers(0, 400, size=(samples, classes)) * (rng.random((samples, classes)) < 0.4)
                  for _ in range(3)) for _ in range(cases)]  # fmt: skip

    def vectorised() -> list[Any]:
        out = [stats.miou_interval(*c, convention="deliver", resamples=resamples, seed=seed) for c in data]
        out.append(stats.summary_interval(data, lambda m: m.mean(axis=-1), "deliver", resamples, seed))
        return out

    weights = stats.bootstrap_weights(samples, loop_resamples, seed)

    def loop() -> np.ndarray:
        values = np.empty((cases, loop_resamples))
        for j, (tp, fp, fn) in enumerate(data):
            for r in range(loop_resamples):
                index = np.repeat(np.arange(samples), weights[r])
                values[j, r] = stats.miou_from_counts(tp[index], fp[index], fn[index], "deliver")
        return values

    vec_s = _best_time(vectorised, 1)
    loop_s = _best_time(loop, 1) * resamples / loop_resamples
    reference = loop()
    fast = np.stack([stats.bootstrap_mious(*c, weights, "deliver") for c in data])
    return {"cases": cases, "samples": samples, "classes": classes, "resamples": resamples,
            "vectorised_s": vec_s, "loop_s": loop_s, "ratio": loop_s / vec_s,
            "max_abs_diff": float(np.abs(reference - fast).max())}  # fmt: skip
