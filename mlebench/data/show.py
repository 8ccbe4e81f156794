"""``mlebench data show``: one PNG with every modality of a sample and its coloured label (with a
legend of the classes in it); and the qualitative figure of a run: inputs, ground truth and
prediction for a few samples."""

from __future__ import annotations

import io
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


def displayable(x: torch.Tensor, normalization: str = "unit") -> np.ndarray:
    """A raw modality tensor ``(3, H, W)`` as an ``(H, W, 3)`` float image in ``[0, 1]``.

    Raw values are on the 0..255 scale (:mod:`mlebench.data.base`) whatever their dtype, so they
    are divided by 255 — never guessed from the data (an event frame of counts 0/1 must stay
    dark). Only modalities kept in their own range (``identity`` normalisation: MCubeS AoLP in
    [-1, 1], DoLP in [0, 1]) are stretched to view."""
    arr = x.detach().cpu().float().numpy().transpose(1, 2, 0)
    if normalization != "identity":
        return np.clip(arr / 255.0, 0.0, 1.0)
    lo, hi = float(arr.min()), float(arr.max())
    return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)


def render_sample(
    sample: dict[str, Any], info: DatasetInfo, modalities: Sequence[str], out: str | Path
) -> Path:
    """Write every modality side by side plus the coloured label to ``out`` (PNG, atomically)."""
    panels = [(name, displayable(sample[name], info.modality(name).normalization)) for name in modalities]
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
    legend = class_legend(info, [sample["label"]])
    fig.legend(handles=legend, loc="lower center", ncol=min(6, max(1, len(legend))), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.1 + 0.04 * (len(legend) // 6), 1, 1))
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return out


def class_legend(info: DatasetInfo, labels: Sequence[Any]) -> list[Any]:
    """Legend handles (palette colour, class name) for the classes that occur in ``labels``."""
    from matplotlib.patches import Patch

    present = sorted({int(v) for label in labels for v in np.unique(np.asarray(label)) if v < info.num_classes})
    palette = info.palette_array() / 255.0
    return [Patch(facecolor=palette[c], edgecolor="none", label=info.classes[c]) for c in present]


def render_predictions(
    samples: Sequence[dict[str, Any]], predictions: Sequence[Any], info: DatasetInfo, modalities: Sequence[str],
    title: str = "",
) -> bytes:
    """A row per sample: every input modality, the ground truth and the prediction, coloured with
    the data set's palette, and one legend of the classes shown; the PNG's bytes."""
    rows = len(samples)
    columns = len(modalities) + 2
    height, width = np.asarray(predictions[0]).shape
    scale = 2.4 / max(height, width)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * width * scale, rows * height * scale + 1.0),
                             squeeze=False)
    for r, (sample, prediction) in enumerate(zip(samples, predictions)):
        panels = [(m, displayable(sample[m], info.modality(m).normalization)) for m in modalities]
        panels += [("ground truth", colorize_label(sample["label"], info)),
                   ("prediction", colorize_label(prediction, info))]
        for ax, (name, image) in zip(axes[r], panels):
            ax.imshow(image, interpolation="nearest")
            ax.set_title(name if r == 0 else "", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(str(sample.get("meta", {}).get("id", "")), fontsize=7)
    legend = class_legend(info, [s["label"] for s in samples] + list(predictions))
    fig.legend(handles=legend, loc="lower center", ncol=min(8, max(1, len(legend))), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.06 + 0.03 * (len(legend) // 8), 1, 1))
    return png_bytes(fig, dpi=100)


def png_bytes(fig: Any, dpi: int) -> bytes:
    """A matplotlib figure as PNG bytes (and closed)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return buffer.getvalue()


def predictions_figure(dataset: Any, predictions: Sequence[tuple[str, Any]], modalities: Sequence[str],
                       title: str = "") -> bytes:
    """:func:`render_predictions` of ``predictions`` ((sample id, predicted label map) pairs, as
    the evaluator keeps them) with each sample read from ``dataset``; a sample evaluated at
    another size is resized to the prediction's (label nearest, inputs bilinear)."""
    position = {ref.id: i for i, ref in enumerate(dataset.refs)}
    samples = []
    for sample_id, prediction in predictions:
        sample = dataset[position[sample_id]]
        if tuple(sample["label"].shape) != tuple(prediction.shape):  # evaluated at another size
            sample = {**sample, "label": torch.nn.functional.interpolate(
                sample["label"][None, None].float(), size=prediction.shape, mode="nearest")[0, 0].long()}
            sample.update({m: torch.nn.functional.interpolate(sample[m][None].float(), size=prediction.shape,
                                                              mode="bilinear", align_corners=False)[0]
                           for m in modalities})
        samples.append(sample)
    return render_predictions(samples, [p for _, p in predictions], dataset.info, modalities, title=title)
