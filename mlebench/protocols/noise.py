"""``noise``: corrupt one modality at a time, all training modalities present.

Per modality: the paper's Gaussian (sigma 50) and uniform (+-100) noise on the raw 0..255
values, clipped (Sec. IV-E, Tab. VIII); a severity sweep of both; salt-and-pepper; and randomly
missing pixels at rates 0.25 / 0.5 / 0.75. Noise is seeded per sample and corruption
(``mlebench.corruptions``), so every method and every run sees the same noise. The clean case
is included as the reference.
"""

from __future__ import annotations

from typing import Any, Sequence

from mlebench.corruptions import (
    GAUSSIAN_SWEEP,
    MISSING_RATES,
    PAPER_NOISE,
    SALT_PEPPER_RATES,
    UNIFORM_SWEEP,
    Corruption,
)
from mlebench.data.base import DatasetInfo
from mlebench.protocols.base import EvalCase, Protocol, TableSpec, register_protocol


def noise_corruptions(modality: str, sweep: bool = True) -> list[Corruption]:
    specs = list(PAPER_NOISE)
    if sweep:
        specs += [("gaussian", s) for s in GAUSSIAN_SWEEP] + [("uniform", a) for a in UNIFORM_SWEEP]
        specs += [("salt_pepper", r) for r in SALT_PEPPER_RATES]
        specs += [("missing_pixels", r) for r in MISSING_RATES]
    unique = list(dict.fromkeys(specs))  # the paper's levels also appear in the sweeps
    return [Corruption(kind, float(severity), modality) for kind, severity in unique]


KIND_LABELS = {"gaussian": "Gaussian σ={:g}", "uniform": "Uniform ±{:g}", "salt_pepper": "Salt & pepper {:.0%}",
               "missing_pixels": "Missing pixels {:.0%}"}
CLEAN = "clean"


def noise_label(kind: str, severity: float) -> str:
    """"Gaussian σ=50 †": the paper's two settings are marked with †."""
    label = KIND_LABELS[kind].format(severity)
    return label + (" †" if (kind, severity) in PAPER_NOISE else "")


def _by_noise(frame: Any, info: DatasetInfo) -> Any:
    from mlebench.protocols.base import modality_letters, ordered

    out = frame[frame.metric == "miou"].copy()
    parsed = [None if c == "none" else Corruption.parse(c) for c in out.corruption]
    out["noise"] = [CLEAN if c is None else noise_label(c.kind, c.severity) for c in parsed]
    letters = modality_letters(info)
    out["corrupted"] = [CLEAN if c is None else letters.get(c.modality, c.modality) for c in parsed]
    kinds = list(KIND_LABELS)
    specs = sorted({(c.kind, c.severity) for c in parsed if c is not None}, key=lambda k: (kinds.index(k[0]), k[1]))
    out["noise"] = ordered(out.noise, [CLEAN, *(noise_label(*k) for k in specs)])
    out["corrupted"] = ordered(out.corrupted, [CLEAN, *letters.values()])
    return out


@register_protocol("noise")
class Noise(Protocol):
    description = "Gaussian/uniform noise (paper), severity sweeps, salt-and-pepper, missing pixels"

    def __init__(self, sweep: bool = True) -> None:
        self.sweep = sweep

    def cases(self, train_modalities: Sequence[str], info: DatasetInfo) -> list[EvalCase]:
        full = tuple(train_modalities)
        cases = [EvalCase(full)]
        for modality in train_modalities:
            cases += [EvalCase(full, corruption=c) for c in noise_corruptions(modality, self.sweep)]
        return cases

    @classmethod
    def tables(cls) -> list[TableSpec]:
        return [TableSpec(
            "noise", "mIoU (%) with one modality corrupted, by noise type and severity (as the paper's Tab. VIII)",
            rows=("method", "noise"), columns=("corrupted",), prepare=_by_noise,
            notes=("† the paper's settings: Gaussian σ=50 and uniform ±100 on 0-255 values, clipped.",),
        )]
