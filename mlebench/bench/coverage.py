"""Coverage of the bootstrap intervals, by simulation: the scene (cluster) bootstrap against the
image bootstrap on per-sample counts whose frames share a scene effect.

The model: ``scenes`` scenes of ``frames`` frames each, ``classes`` classes. Every frame has
``pixels`` pixels of each class and ``false_pixels`` candidates for false positives per class.
A scene draws a difficulty shared by its frames, ``u ~ U(-0.25, 0.25)`` and ``v ~ U(-0.08,
0.08)``; a frame's class ``k`` then gets ``tp ~ Binomial(pixels, q_k + u)``, ``fn = pixels - tp``
and ``fp ~ Binomial(false_pixels, r_k + v)``, with ``q_k`` evenly spaced in [0.35, 0.65] and
``r_k`` in [0.10, 0.30]. The true mIoU, the limit of the summed-counts mIoU over infinitely many
scenes, is ``mean_k pixels q_k / (pixels + false_pixels r_k)`` (the scene terms average to 0).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mlebench import stats


@dataclass(frozen=True)
class CoverageModel:
    scenes: int = 40
    frames: int = 5
    classes: int = 5
    pixels: int = 400
    false_pixels: int = 200

    def true_miou(self) -> float:
        q, r = self._rates()
        return float(np.mean(self.pixels * q / (self.pixels + self.false_pixels * r)))

    def _rates(self) -> tuple[np.ndarray, np.ndarray]:
        return np.linspace(0.35, 0.65, self.classes), np.linspace(0.10, 0.30, self.classes)

    def draw(self, rng: np.random.Generator) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], list[int]]:
        """One data set: per-frame ``(tp, fp, fn)`` of shape (scenes * frames, classes) and each
        frame's scene."""
        q, r = self._rates()
        u = rng.uniform(-0.25, 0.25, size=(self.scenes, 1))
        v = rng.uniform(-0.08, 0.08, size=(self.scenes, 1))
        tp = rng.binomial(self.pixels, np.repeat(q + u, self.frames, axis=0))
        fp = rng.binomial(self.false_pixels, np.repeat(r + v, self.frames, axis=0))
        return (tp, fp, self.pixels - tp), np.repeat(np.arange(self.scenes), self.frames).tolist()


def simulate_coverage(repetitions: int = 2000, resamples: int = 1000, level: float = 0.95, seed: int = 0,
                      model: CoverageModel = CoverageModel()) -> dict[str, Any]:
    """How often the scene and the image bootstrap's ``level`` intervals hold the true mIoU."""
    rng = np.random.default_rng(seed)
    truth = model.true_miou()
    hits = {"scene": 0, "image": 0}
    widths: dict[str, list[float]] = {"scene": [], "image": []}
    start = time.perf_counter()
    for i in range(repetitions):
        counts, scenes = model.draw(rng)
        for unit, clusters in (("scene", scenes), ("image", None)):
            iv = stats.miou_interval(*counts, resamples=resamples, seed=i, level=level, clusters=clusters)
            hits[unit] += iv.low <= truth <= iv.high
            widths[unit].append(iv.high - iv.low)
    return {"model": asdict(model), "repetitions": repetitions, "resamples": resamples, "level": level,
            "true_miou": truth, "coverage": {u: hits[u] / repetitions for u in hits},
            "mean_width": {u: float(np.mean(w)) for u, w in widths.items()},
            "seconds": time.perf_counter() - start}


def format_coverage(result: dict[str, Any]) -> str:
    m, n = result["model"], result["repetitions"]
    lines = [f"coverage of {result['level']:.0%} bootstrap intervals of mIoU, {n} simulated data sets of "
             f"{m['scenes']} scenes x {m['frames']} frames ({result['resamples']} resamples each):"]
    for unit in ("scene", "image"):
        c = result["coverage"][unit]
        se = (c * (1 - c) / n) ** 0.5
        lines.append(f"  resampling {unit + 's':<7} covers the true mIoU in {c:6.1%} (± {se:.1%}), mean width "
                     f"{100 * result['mean_width'][unit]:.2f} points")
    lines.append(f"  ratio of widths scene/image: {result['mean_width']['scene'] / result['mean_width']['image']:.2f}"
                 f" ({result['seconds']:.0f} s)")
    return "\n".join(lines)
