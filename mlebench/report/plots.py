"""Figures of a report, drawn from the tidy frame of stored rows (and the runs' stored figures).

Each function returns :class:`~mlebench.report.document.Figure` s (PNG bytes), one per data set
and split with something to show, or none.
"""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from mlebench.data import dataset_info  # noqa: E402
from mlebench.protocols.base import all_subset_labels, modality_letters, subset_label  # noqa: E402
from mlebench.protocols.noise import CLEAN, KIND_LABELS, noise_label  # noqa: E402
from mlebench.report.document import Figure  # noqa: E402
from mlebench.results.store import ResultsStore  # noqa: E402


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _method_label(frame: pd.DataFrame) -> pd.Series:
    return frame["method"] + " (" + frame["train_modalities"].map(lambda m: m.replace(",", "-")) + ")"


def subset_heatmap(frame: pd.DataFrame) -> list[Figure]:
    """mIoU over every test subset (columns) for each model (rows): the missing-modality view."""
    figures = []
    rows = frame[(frame["protocol"] == "missing-modality") & (frame["metric"] == "miou")]
    for (dataset, split), part in rows.groupby(["dataset", "split"]):
        info = dataset_info(dataset)
        part = part.assign(model=_method_label(part), test=[subset_label(m, info) for m in part["test_modalities"]])
        grid = part.pivot_table(index="model", columns="test", values="value", aggfunc="mean")
        grid = grid[[c for c in all_subset_labels(info) if c in grid.columns]]
        fig, ax = plt.subplots(figsize=(1.0 + 0.62 * grid.shape[1], 1.2 + 0.45 * grid.shape[0]))
        sns.heatmap(grid, annot=True, fmt=".1f", cmap="viridis", cbar_kws={"label": "mIoU (%)"}, ax=ax,
                    annot_kws={"fontsize": 7})
        ax.set_xlabel("test modalities")
        ax.set_ylabel("")
        ax.set_title(f"mIoU over modality subsets — {dataset} ({split})", fontsize=10)
        figures.append(Figure(f"heatmap-{dataset}-{split}", "mIoU over modality subsets", _png(fig),
                              f"Each row is one trained model evaluated on every subset of its modalities; "
                              f"{dataset}, split {split}."))
    return figures


def noise_bars(frame: pd.DataFrame) -> list[Figure]:
    """mIoU per noise type and corrupted modality, with 95% intervals, beside the clean mIoU."""
    from mlebench.corruptions import Corruption

    figures = []
    rows = frame[(frame["protocol"] == "noise") & (frame["metric"] == "miou")]
    for (dataset, split), part in rows.groupby(["dataset", "split"]):
        letters = modality_letters(dataset_info(dataset))
        parsed = [None if c == "none" else Corruption.parse(c) for c in part["corruption"]]
        part = part.assign(
            model=_method_label(part),
            noise=[CLEAN if c is None else noise_label(c.kind, c.severity) for c in parsed],
            corrupted=[CLEAN if c is None else letters.get(c.modality, c.modality) for c in parsed],
            order=[(-1, 0.0) if c is None else (list(KIND_LABELS).index(c.kind), c.severity) for c in parsed],
        ).sort_values("order")
        models = list(dict.fromkeys(part["model"]))
        noises = list(dict.fromkeys(part["noise"]))
        fig, axes = plt.subplots(len(models), 1, figsize=(max(6.0, 0.55 * len(noises) * 2 + 2), 3.0 * len(models)),
                                 squeeze=False)
        for ax, model in zip(axes[:, 0], models):
            mine = part[part["model"] == model]
            sns.barplot(data=mine, x="noise", y="value", hue="corrupted", order=noises, ax=ax, errorbar=None)
            _interval_bars(ax, mine, noises)
            ax.set_title(model, fontsize=9)
            ax.set_xlabel("")
            ax.set_ylabel("mIoU (%)")
            ax.tick_params(axis="x", labelrotation=30, labelsize=7)
            ax.legend(title="corrupted", fontsize=7, title_fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.suptitle(f"mIoU under noise, one modality corrupted — {dataset} ({split})", fontsize=10)
        figures.append(Figure(f"noise-{dataset}-{split}", "mIoU under noise", _png(fig),
                              "Bars: mIoU with the named modality corrupted (clean: no corruption); "
                              "whiskers: 95% bootstrap interval over the images. † the paper's settings."))
    return figures


def _interval_bars(ax: Any, frame: pd.DataFrame, order: list[str]) -> None:
    """Whiskers at the stored interval bounds, on the bars seaborn drew (matched by height)."""
    for container in ax.containers:
        for bar in container:
            height = bar.get_height()
            match = frame[(frame["value"] - height).abs() < 1e-9]
            if match.empty or match["ci_low"].isna().all():
                continue
            low, high = match["ci_low"].iloc[0], match["ci_high"].iloc[0]
            x = bar.get_x() + bar.get_width() / 2
            ax.plot([x, x], [low, high], color="black", linewidth=0.8)


def condition_bars(frame: pd.DataFrame) -> list[Figure]:
    """mIoU per weather and sensor failure, with 95% intervals."""
    figures = []
    rows = frame[(frame["protocol"] == "conditions") & (frame["metric"] == "miou") & frame["value"].notna()]
    for (dataset, split), part in rows.groupby(["dataset", "split"]):
        info = dataset_info(dataset)
        order = [c for c in ("all", *info.cases) if c in set(part["condition"])]
        part = part.assign(model=_method_label(part))
        fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(order) + 2), 3.4))
        sns.barplot(data=part, x="condition", y="value", hue="model", order=order, ax=ax, errorbar=None)
        _interval_bars(ax, part, order)
        ax.set_xlabel("")
        ax.set_ylabel("mIoU (%)")
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.set_title(f"mIoU per condition — {dataset} ({split})", fontsize=10)
        figures.append(Figure(f"conditions-{dataset}-{split}", "mIoU per condition", _png(fig),
                              "Whiskers: 95% bootstrap interval over the images of each condition."))
    return figures


def stored_figures(store: ResultsStore, frame: pd.DataFrame) -> list[Figure]:
    """The figures the selected runs stored: t-SNE grids and prediction examples."""
    figures = []
    runs = frame.drop_duplicates("run_id")
    shown: set[tuple[str, str]] = set()
    for run in runs.itertuples():
        for name, data in store.artifacts(run.run_id).items():
            if name == "predictions.png":  # the same model shows the same predictions under every protocol
                if (run.method, run.train_modalities) in shown:
                    continue
                shown.add((run.method, run.train_modalities))
            what = {"tsne.png": "t-SNE of fused features", "predictions.png": "Predictions"}.get(name, name)
            figures.append(Figure(f"{name.rsplit('.', 1)[0]}-{run.run_id[:8]}",
                                  f"{what}: {run.method} ({run.train_modalities.replace(',', '-')}), {run.protocol}",
                                  data, f"run {run.run_id}, {run.dataset} ({run.split})"))
    return figures


def report_figures(store: ResultsStore, frame: pd.DataFrame) -> list[Figure]:
    if frame.empty:
        return []
    return [*subset_heatmap(frame), *noise_bars(frame), *condition_bars(frame), *stored_figures(store, frame)]
