"""``noise``: corrupt one modality at a time, all training modalities present.

Per modality: the paper's Gaussian (sigma 50) and uniform (+-100) noise on the raw 0..255
values, clipped (Sec. IV-E, Tab. VIII); a severity sweep of both; salt-and-pepper; and randomly
missing pixels at rates 0.25 / 0.5 / 0.75. Noise is seeded per sample and corruption
(``mlebench.corruptions``), so every method and every run sees the same noise. The clean case
is included as the reference.
"""

from __future__ import annotations

from typing import Sequence

from mlebench.corruptions import (
    GAUSSIAN_SWEEP,
    MISSING_RATES,
    PAPER_NOISE,
    SALT_PEPPER_RATES,
    UNIFORM_SWEEP,
    Corruption,
)
from mlebench.data.base import DatasetInfo
from mlebench.protocols.base import EvalCase, Protocol, register_protocol


def noise_corruptions(modality: str, sweep: bool = True) -> list[Corruption]:
    specs = list(PAPER_NOISE)
    if sweep:
        specs += [("gaussian", s) for s in GAUSSIAN_SWEEP] + [("uniform", a) for a in UNIFORM_SWEEP]
        specs += [("salt_pepper", r) for r in SALT_PEPPER_RATES]
        specs += [("missing_pixels", r) for r in MISSING_RATES]
    unique = list(dict.fromkeys(specs))  # the paper's levels also appear in the sweeps
    return [Corruption(kind, float(severity), modality) for kind, severity in unique]


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
