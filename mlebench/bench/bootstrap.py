"""``mlebench bench bootstrap``: the vectorised bootstrap of a whole protocol against a plain loop
over resamples, timed side by side, with the largest difference of their resampled mIoUs."""

from __future__ import annotations

from typing import Any

import numpy as np

from mlebench import stats
from mlebench.timing import best_time as _best_time


def bench_bootstrap(cases: int = 15, samples: int = 500, classes: int = 25, resamples: int = 1000, seed: int = 0,
                    loop_resamples: int = 100) -> dict[str, Any]:
    """Bootstrap intervals for a whole protocol: vectorised (one matmul per case set) against a
    plain loop over resamples that sums the resampled images' counts one resample at a time.

    The loop runs ``loop_resamples`` resamples and is scaled to ``resamples`` (it is linear in
    them); both use the same weights, and the largest difference of their resampled mIoUs is
    reported.
    """
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


def format_bootstrap(r: dict[str, Any]) -> str:
    return "\n".join([
        f"95% intervals for {r['cases']} cases + their mean, {r['samples']} samples, {r['classes']} classes, "
        f"{r['resamples']} resamples",
        f"  loop over resamples (scaled) : {r['loop_s']:8.2f} s",
        f"  vectorised                   : {r['vectorised_s']:8.2f} s",
        f"  ratio loop/vectorised        : {r['ratio']:8.1f}x",
        f"  max |difference|             : {r['max_abs_diff']:.2e}",
    ])
