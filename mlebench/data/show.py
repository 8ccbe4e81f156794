"""``mlebench data show``: one PNG with every modality of a sample and its coloured label."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: no display on CI or GPU nodes
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from mlebench.data.base import DatasetInfo  # noqa: E402
from mlebench.fsutil import atomic_path  # noqa: E402


def colorize_label(label: torch.Tensor | np.ndarray, info: DatasetInfo) -> np.ndarray:
    """``(H, W)`` class ids -> ``(H, W, 3)`` uint8 colours; the ignore index is black."""
    label = np.asarray(label)
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[: info.num_classes] = info.palette_array()
    return palette[label.clip(0, 255).astype(np.int64)]


def displayable(x: torch.Tensor) -> np.ndarray:
    """A raw modality tensor ``(3, H, W)`` as an ``(H, W, 3)`` float image in ``[0, 1]``."""
    arr = x.detach().cpu().float().numpy().transpose(1, 2, 0)
    if x.dtype == torch.uint8 or (arr.min() >= 0 and arr.max() > 1.0):
        return np.clip(arr / 255.0, 0.0, 1.0)
    # Float modalities in their own range (AoLP in [-1, 1], DoLP in [0, 1]): stretch to view.
    lo, hi = float(arr.min()), float(arr.max())
    return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)


def render_sample(
    sample: dict[str, Any], info: DatasetInfo, modalities: Sequence[str], out: str | Path
) -> Path:
    """Write every modality side by side plus the coloured label to ``out`` (PNG, atomically)."""
    panels = [(name, displayable(sample[name])) for name in modalities]
    panels.append(("label", colorize_label(sample["label"], info)))
    height, width = panels[0][1].shape[:2]
    scale = 3.2 / max(height, width)
    fig, axes = plt.subplots(
        1, len(panels), figsize=(len(panels) * width * scale, height * scale + 0.6), squeeze=False
    )
    for ax, (title, image) in zip(axes[0], panels):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    meta = sample.get("meta", {})
    fig.suptitle(f"{info.name}  {meta.get('id', '')}", fontsize=10)
    fig.tight_layout()
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return out
