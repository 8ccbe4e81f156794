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
import pickle
from pathlib import Path
from typing import Any, Iterable, Mapping, TypeVar

import torch

from mlebench.errors import ConfigError
from mlebench.fsutil import describe_os_error, sniff

C = TypeVar("C")


def load_tensor_file(path: Path, what: str) -> Any:
    """The contents of a ``torch.save`` file, read with ``weights_only=True`` (no code runs).

    Errors are one line naming ``what`` and the file: a file of another kind is named by what it
    is (a results store, a text file, an image) before torch reads it; a pickle that holds more
    than tensors and plain containers is refused as such (it is never unpickled)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a directory, not a {what} file")
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist")
    try:
        kind, description = sniff(path)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {describe_os_error(exc, path)}") from None
    if kind == "damaged":
        raise ConfigError(f"cannot read {what} {path}: it is damaged or truncated ({description})")
    if kind not in ("torch", "pickle"):
        raise ConfigError(f"{what} {path} is {description}, not a {what} (a file written by torch.save)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ConfigError(f"{what} {path} is not a plain weights file: it holds Python objects that only "
                          "unpickling could rebuild, which could run code; mlebench reads tensors only") from None
    except Exception as exc:  # truncated or damaged archives raise several types
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot read {what} {path}: it is damaged or truncated ({reason})") from None


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
