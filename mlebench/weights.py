"""Weights files: the one reader of ``torch.load`` files, and strict, explained loading of
pretrained weights, offered to every method (built-in or plugin).

:func:`load_tensor_file` is the only place the suite calls ``torch.load`` (always with
``weights_only=True``); checkpoints (:mod:`mlebench.engine.checkpoint`) and pretrained weights
(:func:`read_weights`) both go through it.

A method decides which of its tensors a weights file must fill (``wanted``) and which of the
file's keys it may skip; :func:`copy_strict` then refuses, naming the keys, a file with missing
or unexpected entries or other shapes, and copies nothing unless every check passes. Also the
preset-config builder every method's options go through (:func:`config_from_preset`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any, Iterable, Mapping, TypeVar

import torch

from mlebench.errors import ConfigError

C = TypeVar("C")


def load_tensor_file(path: Path, what: str) -> Any:
    """The contents of a ``torch.save`` file, read with ``weights_only=True`` (no code runs);
    errors name ``what`` and the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated or unsafe pickles raise several types
        raise ConfigError(f"cannot read {what} {path}: {exc}") from exc


def read_weights(path: Path, what: str, wrappers: tuple[str, ...] = ("model",)) -> dict[str, torch.Tensor]:
    """A weights file's state dict, loaded with ``weights_only=True``; the ``wrappers`` keys it
    may be nested under (``{"model": sd}``) are unwrapped. Errors name the file."""
    blob = load_tensor_file(path, what)
    for wrapper in wrappers:
        if isinstance(blob, dict) and wrapper in blob:
            blob = blob[wrapper]
    if not isinstance(blob, dict) or not blob or not all(isinstance(v, torch.Tensor) for v in blob.values()):
        raise ConfigError(f"{what} {path} holds no state dict of tensors")
    return blob


def listing(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" ... (+{len(keys) - limit} more)" if len(keys) > limit else "")


def copy_strict(wanted: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], skipped: Iterable[str],
                path: Path, what: str, target: str, hint: str) -> None:
    """Copy ``state`` into ``wanted`` (tensors sharing storage with the model's) if the file fits.

    ``what`` names the checkpoint kind ("SAM2 checkpoint"), ``target`` what it should fit ("this
    MLE-SAM encoder"), ``hint`` ends the mismatch message.
    """
    skipped = set(skipped)
    missing = sorted(k for k in wanted if k not in state)
    unexpected = sorted(k for k in state if k not in wanted and k not in skipped)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {listing(unexpected)}")
        raise ConfigError(f"{what} {path} does not fit {target} ({'; '.join(parts)}); {hint}")
    mismatched = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
                  for k, v in wanted.items() if state[k].shape != v.shape]
    if mismatched:
        raise ConfigError(f"{what} {path}: shape mismatch: {listing(mismatched, 4)}")
    with torch.no_grad():
        for key, value in wanted.items():
            value.copy_(state[key])


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def config_from_preset(presets: Mapping[str, C], preset: str, overrides: Mapping[str, Any], method: str) -> C:
    """The preset's config dataclass with ``overrides``; unknown keys are a ConfigError listing
    the known ones; the config's own ``validate()`` runs."""
    if preset not in presets:
        raise ConfigError(f"unknown preset {preset!r}; known: {', '.join(presets)}")
    base = presets[preset]
    known = {f.name for f in dataclasses.fields(base)}  # type: ignore[arg-type]
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown {method} option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    overrides = dict(overrides)
    for key, value in overrides.items():  # lists from YAML where the config holds tuples
        if isinstance(getattr(base, key), tuple) and isinstance(value, list):
            overrides[key] = tuple(value)
    config = dataclasses.replace(base, **overrides)  # type: ignore[type-var]
    config.validate()  # type: ignore[attr-defined]
    return config
