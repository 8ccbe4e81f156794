"""Input corruptions for the robustness protocols, deterministic per sample.

The MLE-SAM paper's robustness study: "Gaussian noise was generated using a standard normal
distribution scaled by 50.0, while random noise was uniformly sampled within the range
[-100, 100]. The noise was directly added to the image data of the targeted modality, followed
by clipping pixel values to the range [0, 255]."

Corruptions act on the *raw* modality values (0..255 scale, see :mod:`mlebench.data.base`),
before normalisation (:mod:`mlebench.data.transforms`). Every method has to see exactly the same
noise, so the noise of a sample is drawn from a CPU generator seeded by
:func:`corruption_seed` - a stable hash of (base seed, sample id, corruption name). It does not
depend on batch composition, data-loader order, the number of worker processes, the device, the
method or Python's per-process hash randomisation.

Kinds (``severity`` meaning):

- ``gaussian``: ``x + sigma * N(0, 1)``, independent per channel and pixel; severity = sigma;
- ``uniform``: ``x + U[-a, a]``, independent per channel and pixel; severity = a;
- ``salt_pepper``: that fraction of pixels set to 0 or 255 (equal odds), all channels of a
  pixel together;
- ``missing_pixels``: that fraction of pixels set to 0, all channels of a pixel together.

The two mask kinds change exactly ``round(fraction * H * W)`` pixels (chosen by a seeded
permutation). Every result is float32 on the 0..255 scale, clipped to [0, 255].
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from mlebench.errors import ConfigError

__all__ = [
    "ADDITIVE_KINDS",
    "FRACTION_KINDS",
    "GAUSSIAN_SWEEP",
    "KINDS",
    "MISSING_RATES",
    "PAPER_NOISE",
    "SALT_PEPPER_RATES",
    "UNIFORM_SWEEP",
    "Corruption",
    "apply_corruption",
    "corrupt_batch",
    "corrupt_sample",
    "corruption_seed",
]

# Noise added to the values (severity: sigma / half-width on the 0..255 scale).
ADDITIVE_KINDS = ("gaussian", "uniform")
# Pixels replaced (severity: the fraction of pixels, in [0, 1]).
FRACTION_KINDS = ("salt_pepper", "missing_pixels")
KINDS = ADDITIVE_KINDS + FRACTION_KINDS

# Protocol defaults.
PAPER_NOISE: tuple[tuple[str, float], ...] = (("gaussian", 50.0), ("uniform", 100.0))
MISSING_RATES: tuple[float, ...] = (0.25, 0.5, 0.75)
GAUSSIAN_SWEEP: tuple[float, ...] = (10, 25, 50, 75, 100)
UNIFORM_SWEEP: tuple[float, ...] = (25, 50, 100, 150)
SALT_PEPPER_RATES: tuple[float, ...] = (0.05, 0.1, 0.2)

# Keys of a sample dict that are never modalities.
_RESERVED_KEYS = ("label", "meta")
_NAME_RE = re.compile(r"^(?P<kind>[a-z_]+)-(?P<severity>[^@\s]+)@(?P<modality>[^@\s]+)$")
_SEED_MASK = (1 << 63) - 1


def _format_number(value: float) -> str:
    """Shortest text that round-trips through ``float``, without a trailing ``.0``."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


@dataclass(frozen=True)
class Corruption:
    """One corruption of one modality, e.g. ``Corruption("gaussian", 50, "rgb")``.

    ``severity`` is stored as a float: sigma (``gaussian``) or half-width (``uniform``) on the
    0..255 scale, or a fraction of pixels in [0, 1] (``salt_pepper``, ``missing_pixels``).
    """

    kind: str
    severity: float
    modality: str

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or self.kind not in KINDS:
            raise ConfigError(f"unknown corruption kind {self.kind!r}; known: {', '.join(KINDS)}")
        severity = self.severity
        if isinstance(severity, bool) or not isinstance(severity, (int, float)):
            raise ConfigError(
                f"corruption {self.kind}: severity must be a number, got {severity!r}"
            )
        severity = float(severity)
        if not math.isfinite(severity) or severity < 0:
            raise ConfigError(
                f"corruption {self.kind}: severity must be a finite number >= 0, got {severity!r}"
            )
        if self.kind in FRACTION_KINDS and severity > 1:
            raise ConfigError(
                f"corruption {self.kind}: severity is a fraction of pixels and must lie in "
                f"[0, 1], got {severity!r}"
            )
        object.__setattr__(self, "severity", severity)
        modality = self.modality
        if (
            not isinstance(modality, str)
            or not modality
            or "@" in modality
            or any(ch.isspace() for ch in modality)
        ):
            raise ConfigError(
                f"corruption {self.kind}: modality must be a non-empty name without '@' or "
                f"spaces, got {modality!r}"
            )
        if modality in _RESERVED_KEYS:
            raise ConfigError(
                f"corruption {self.kind}: {modality!r} is not a modality and cannot be corrupted"
            )

    @property
    def name(self) -> str:
        """Stable readable key, e.g. ``gaussian-50@rgb`` or ``missing_pixels-0.5@event``."""
        return f"{self.kind}-{_format_number(self.severity)}@{self.modality}"

    def __str__(self) -> str:
        return self.name

    @classmethod
    def parse(cls, text: str) -> Corruption:
        """Inverse of :attr:`name`: ``Corruption.parse("uniform-100@depth")``."""
        if not isinstance(text, str):
            raise ConfigError(f"bad corruption {text!r}: expected text like 'gaussian-50@rgb'")
        match = _NAME_RE.match(text.strip())
        if match is None:
            raise ConfigError(
                f"bad corruption {text!r}: expected KIND-SEVERITY@MODALITY, e.g. "
                f"'gaussian-50@rgb' (kinds: {', '.join(KINDS)})"
            )
        try:
            severity = float(match["severity"])
        except ValueError:
            raise ConfigError(
                f"bad corruption {text!r}: severity {match['severity']!r} is not a number"
            ) from None
        try:
            return cls(match["kind"], severity, match["modality"])
        except ConfigError as exc:
            raise ConfigError(f"bad corruption {text!r}: {exc}") from None


def corruption_seed(base_seed: int, sample_id: str, corruption: Corruption) -> int:
    """Deterministic 63-bit seed for one corruption of one sample.

    A BLAKE2b hash of (base seed, sample id, corruption name): the same in every process, on
    every platform and independent of ``PYTHONHASHSEED``.
    """
    if isinstance(base_seed, bool) or not isinstance(base_seed, int):
        raise ConfigError(f"base seed must be an integer, got {base_seed!r}")
    if not isinstance(sample_id, str):
        raise ConfigError(f"sample id must be a string, got {sample_id!r}")
    if not isinstance(corruption, Corruption):
        raise ConfigError(f"expected a Corruption, got {corruption!r}")
    return stable_seed("mlebench-corruption-v1", base_seed, sample_id, corruption.name)


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from the parts' text: BLAKE2b, so not salted by ``PYTHONHASHSEED``."""
    key = "\x1f".join(str(p) for p in parts)
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") & _SEED_MASK


def apply_corruption(x: torch.Tensor, corruption: Corruption, seed: int) -> torch.Tensor:
    """Corrupt one sample's raw modality ``x`` (C, H, W), uint8 or float, 0..255 scale.

    Returns a new float32 tensor (C, H, W) on ``x``'s device, clipped to [0, 255]. The noise is
    drawn on the CPU from ``torch.Generator().manual_seed(seed)`` so it is identical on every
    device. Severity 0 returns ``x`` unchanged (as a float32 copy).
    """
    if not isinstance(x, torch.Tensor):
        raise ConfigError(f"{corruption.name}: expected a tensor, got {type(x).__name__}")
    if x.dim() != 3:
        raise ConfigError(
            f"{corruption.name}: expected one sample's modality of shape (C, H, W), "
            f"got shape {tuple(x.shape)}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"{corruption.name}: seed must be an integer, got {seed!r}")
    out = x.to(torch.float32, copy=True)
    if corruption.severity == 0:
        return out
    gen = torch.Generator(device="cpu").manual_seed(seed & _SEED_MASK)
    channels, height, width = x.shape
    kind = corruption.kind
    if kind == "gaussian":
        noise = torch.randn((channels, height, width), generator=gen, dtype=torch.float32)
        out = out + (noise * corruption.severity).to(out.device)
    elif kind == "uniform":
        noise = torch.rand((channels, height, width), generator=gen, dtype=torch.float32)
        out = out + ((noise * 2 - 1) * corruption.severity).to(out.device)
    else:
        n_pixels = height * width
        count = int(round(corruption.severity * n_pixels))
        if count:
            index = torch.randperm(n_pixels, generator=gen)[:count]
            if kind == "salt_pepper":
                salt = torch.randint(0, 2, (count,), generator=gen)
                values = salt.to(torch.float32) * 255.0
            else:  # missing_pixels
                values = torch.zeros(count, dtype=torch.float32)
            flat = out.reshape(channels, n_pixels)  # a view: ``out`` is a contiguous copy
            flat[:, index.to(out.device)] = values.to(out.device).expand(channels, count)
    return out.clamp_(0.0, 255.0)


def _as_list(corruptions: Corruption | Sequence[Corruption]) -> list[Corruption]:
    if isinstance(corruptions, Corruption):
        return [corruptions]
    items = list(corruptions)
    for item in items:
        if not isinstance(item, Corruption):
            raise ConfigError(f"expected Corruption objects, got {item!r}")
    return items


def _check_modality(data: Mapping[str, Any], corruption: Corruption, what: str) -> None:
    if corruption.modality not in data:
        present = [k for k in data if k not in _RESERVED_KEYS]
        raise ConfigError(
            f"{corruption.name}: modality {corruption.modality!r} is not in the {what}; "
            f"it has: {', '.join(map(str, present)) or '(no modalities)'}"
        )


def _meta_ids(data: Mapping[str, Any], what: str) -> Any:
    meta = data.get("meta")
    if not isinstance(meta, Mapping) or "id" not in meta:
        raise ConfigError(f"the {what} has no meta['id'] to seed its corruptions with")
    return meta["id"]


def corrupt_sample(
    sample: Mapping[str, Any],
    corruptions: Corruption | Sequence[Corruption],
    base_seed: int = 0,
) -> dict[str, Any]:
    """A new sample dict with each listed modality corrupted (float32, 0..255).

    Each corruption is seeded with ``corruption_seed(base_seed, sample["meta"]["id"], c)``;
    several corruptions of one modality apply in the order given. Other keys are untouched.
    """
    items = _as_list(corruptions)
    out = dict(sample)
    if not items:
        return out
    sample_id = _meta_ids(sample, "sample")
    for corruption in items:
        _check_modality(out, corruption, "sample")
        seed = corruption_seed(base_seed, sample_id, corruption)
        out[corruption.modality] = apply_corruption(out[corruption.modality], corruption, seed)
    return out


def corrupt_batch(
    batch: Mapping[str, Any],
    corruptions: Corruption | Sequence[Corruption],
    base_seed: int = 0,
) -> dict[str, Any]:
    """:func:`corrupt_sample` for a collated batch (modalities ``(B, C, H, W)``).

    ``batch["meta"]["id"]`` is the list of the B sample ids; sample ``i`` gets exactly the noise
    it would get on its own, whatever its position in the batch.
    """
    items = _as_list(corruptions)
    out = dict(batch)
    if not items:
        return out
    ids = _meta_ids(batch, "batch")
    if isinstance(ids, str) or not isinstance(ids, Sequence):
        raise ConfigError(f"batch meta['id'] must be a list of sample ids, got {ids!r}")
    ids = list(ids)
    for corruption in items:
        _check_modality(out, corruption, "batch")
        x = out[corruption.modality]
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ConfigError(
                f"{corruption.name}: expected a batch of shape (B, C, H, W) for "
                f"{corruption.modality!r}, got {shape}"
            )
        if x.shape[0] != len(ids):
            raise ConfigError(
                f"{corruption.name}: batch has {x.shape[0]} samples of {corruption.modality!r} "
                f"but {len(ids)} ids in meta['id']"
            )
        if not ids:
            out[corruption.modality] = x.to(torch.float32, copy=True)
            continue
        out[corruption.modality] = torch.stack(
            [
                apply_corruption(x[i], corruption, corruption_seed(base_seed, sid, corruption))
                for i, sid in enumerate(ids)
            ]
        )
    return out
