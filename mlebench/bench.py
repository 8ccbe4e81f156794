"""Side-by-side benchmarks: each prints both timings, measured in one run, and their ratio."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch

from mlebench.timing import best_time as _best_time


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
) -> dict[str, Any]:
    """The evaluator with and without the per-modality feature cache, on the same data."""
    from torch.utils.data import Subset

    from methods import build_method
    from mlebench.data import dataset_info, load_dataset
    from mlebench.engine.evaluate import evaluate_cases
    from mlebench.protocols import get_protocol

    info = dataset_info(dataset)
    modalities = info.defaults
    full = load_dataset(dataset, data_root, split, modalities)
    data = Subset(full, range(min(samples, len(full))))
    data.info = full.info  # type: ignore[attr-defined]  (the evaluator reads the data set's info)
    torch.manual_seed(seed)
    method = build_method(method_name, info, modalities, preset)
    cases = get_protocol(protocol).cases(modalities, info)
    timings, outcomes = {}, {}
    for cached in (True, False):
        start = time.perf_counter()
        outcomes[cached] = evaluate_cases(method, data, cases, batch_size, device, feature_cache=cached, base_seed=seed)
        timings[cached] = time.perf_counter() - start
    diff = max(abs(a.miou - b.miou) for a, b in zip(outcomes[True], outcomes[False]))
    return {
        "method": method_name,
        "protocol": protocol,
        "cases": len(cases),
        "samples": len(data),
        "batch_size": batch_size,
        "device": device,
        "cached_s": timings[True],
        "uncached_s": timings[False],
        "ratio": timings[False] / timings[True],
        "miou_max_abs_diff": diff,
    }


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
