"""Method checkpoints: only the trainable weights, plus what is needed to trust them.

A checkpoint stores the method name and variant, data set, class names, training modalities,
preset, the method's config, package versions and the trainable state dict; never the frozen
encoder (it comes from the SAM2 checkpoint or the seed). Files are written atomically (temp file
+ rename) and read with ``weights_only=True``. Loading into a method of another name, variant,
modality set, class list or preset is an error that says which; so is a checkpoint holding NaN
or infinite weights (it would evaluate to a meaningless mIoU). Nothing is copied into the method
unless every check passes.
"""

from __future__ import annotations

import io
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from mlebench.errors import ConfigError, OutputError
from mlebench.fsutil import write_bytes_atomically
from mlebench.method import SegmentationMethod
from mlebench.results.provenance import package_versions
from mlebench.weights import load_tensor_file

CHECKPOINT_FORMAT = 1


def checkpoint_identity(method: SegmentationMethod) -> dict[str, Any]:
    """The fields that must match between a checkpoint and the method it is loaded into."""
    return {
        "method": method.method_name,
        "variant": method.variant,
        "dataset": method.info.name,
        "classes": list(method.info.classes),
        "modalities": list(method.modalities),
        "preset": method.preset,
        "frozen_source": method.frozen_source,
    }


def save_checkpoint(method: SegmentationMethod, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``method``'s trainable weights and identity to ``path`` atomically."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        **checkpoint_identity(method),
        "config": method.config_dict(),
        "versions": package_versions(extra=method.versioned_packages),
        "state_dict": method.trainable_state_dict(),
        "extra": extra or {},
    }
    # Serialised in memory first: torch.save onto a full disk fails with an internal error
    # ("unexpected pos ..."); a plain write fails with the errno that says what happened.
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return write_bytes_atomically(path, buffer.getvalue())


def checkpoint_bytes(method: SegmentationMethod) -> int:
    """About how big ``method``'s training checkpoint gets: its trainable tensors and AdamW's
    two moments for each (float32), for the free-space check before training."""
    return 3 * sum(t.numel() * 4 for t in method.trainable_state_dict().values())


def rescue_path(path: str | Path) -> Path:
    """Where weights go when their checkpoint path cannot take them: the temporary folder."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    return Path(tempfile.gettempdir()) / "mlebench-rescued" / f"{Path(path).stem[:64]}-{stamp}-{os.getpid()}.pt"


def save_or_rescue(method: SegmentationMethod, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """:func:`save_checkpoint`; when ``path`` cannot be written (a full disk, a folder gone
    read-only), the weights are written to :func:`rescue_path` instead and the error says both,
    so that a long training run is never lost to a write that fails at its end."""
    try:
        return save_checkpoint(method, path, extra)
    except OutputError as exc:
        rescue = rescue_path(path)
        try:
            save_checkpoint(method, rescue, extra)
        except OutputError as again:
            raise OutputError(f"{exc}; the trained weights could not be kept elsewhere either ({again})") from exc
        raise OutputError(f"{exc}; the trained weights were written to {rescue} instead (continue with "
                          f"--save-checkpoint {rescue} --resume, or move it where it belongs)") from exc


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's contents (``weights_only=True``); errors name the file."""
    blob = load_tensor_file(Path(path), "checkpoint")
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT or "state_dict" not in blob:
        raise ConfigError(f"{path} is not an mlebench checkpoint (format {CHECKPOINT_FORMAT})")
    return blob


def first_non_finite(state: dict[str, Any]) -> tuple[str, int, int] | None:
    """``(key, number of bad values, size)`` of the first tensor of ``state`` (in its order)
    holding NaN or infinite values, or ``None``."""
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and (value.is_floating_point() or value.is_complex()):
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                return key, bad, value.numel()
    return None


def load_checkpoint(method: SegmentationMethod, path: str | Path) -> dict[str, Any]:
    """Load trainable weights into ``method`` after checking identity; returns ``extra``."""
    blob = read_checkpoint(path)
    expected = checkpoint_identity(method)
    for field, want in expected.items():
        got = blob.get(field)
        if got == want:
            continue
        if field == "classes":
            got = got or []
            if len(got) != len(want):
                raise ConfigError(
                    f"checkpoint {path} was trained on {len(got)} classes, this run has {len(want)}"
                )
            i = next(i for i, (a, b) in enumerate(zip(got, want)) if a != b)
            raise ConfigError(f"checkpoint {path}: class {i} is {got[i]!r}, this run's is {want[i]!r}")
        raise ConfigError(f"checkpoint {path} is for {field} {got!r}, but this run uses {want!r}")
    state = blob["state_dict"]
    own = method.trainable_state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise ConfigError(
            f"checkpoint {path} does not match the method's trainable weights "
            f"(missing: {missing[:5]}, unexpected: {unexpected[:5]})"
        )
    targets = method.state_dict()  # tensors sharing storage with parameters and buffers
    with torch.no_grad():
        for key, value in state.items():
            if value.shape != targets[key].shape:
                raise ConfigError(
                    f"checkpoint {path}: {key} has shape {tuple(value.shape)}, "
                    f"expected {tuple(targets[key].shape)}"
                )
        bad = first_non_finite(state)
        if bad is not None:
            key, n_bad, size = bad
            raise ConfigError(
                f"checkpoint {path} holds NaN or infinite weights: {key} has {n_bad} of {size} "
                f"values non-finite; it cannot be evaluated or trained from"
            )
        for key, value in state.items():
            targets[key].copy_(value)
    return blob["extra"]
