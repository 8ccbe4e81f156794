"""``tsne``: how separable the fused features are, per condition and modality set (Fig. 6).

Cases: every single training modality and the full set, under each sensor-failure condition
of the data set (all samples when it has none). For each case the evaluator samples a fixed
number of fused-embedding pixels per class with seeded keys. The summary is the silhouette score
of each case's pixel features (in the embedding space, euclidean); the protocol's figure embeds
the chosen classes with scikit-learn's t-SNE (fixed seed) and draws one grid for the run
(``tsne.png``, a panel per case with its silhouette), returned as PNG bytes that the run stores.

Classes: ``classes`` (names) when given, else the ``top_classes`` most frequent classes among
the sampled pixels of all cases (choice: 6, the order of the paper's figure).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from mlebench.data.base import DatasetInfo
from mlebench.data.deliver import SENSOR_FAILURES
from mlebench.errors import ConfigError
from mlebench.protocols.base import (
    ALL, CaseResult, EvalCase, Protocol, SummaryRow, TableSpec, case_label, register_protocol,
)  # fmt: skip


def _by_condition(frame: Any, info: DatasetInfo) -> Any:
    from mlebench.protocols.base import all_subset_labels, ordered, subset_label

    out = frame[frame.metric == "silhouette"].copy()
    out["test"] = ordered([subset_label(m, info) for m in out.test_modalities], all_subset_labels(info))
    out["condition"] = ordered(out.condition, [ALL, *info.cases])
    return out


@register_protocol("tsne")
class TSNE(Protocol):
    description = "t-SNE and silhouette of fused pixel features per sensor failure and modality set"

    def __init__(self, pixels_per_class: int = 100, classes: Sequence[str] | None = None, top_classes: int = 6,
                 perplexity: float = 30.0, seed: int = 0) -> None:
        if pixels_per_class < 2:
            raise ConfigError(f"tsne: pixels_per_class must be >= 2, got {pixels_per_class}")
        self.collect_pixels = pixels_per_class
        self.classes = list(classes) if classes else None
        self.top_classes, self.perplexity, self.seed = top_classes, perplexity, seed
        self.info: DatasetInfo | None = None

    def cases(self, train_modalities: Sequence[str], info: DatasetInfo) -> list[EvalCase]:
        self.info = info
        if self.classes:
            unknown = [c for c in self.classes if c not in info.classes]
            if unknown:
                raise ConfigError(f"tsne: unknown class(es) {unknown} for {info.name}")
        conditions = [c for c in info.cases if c in SENSOR_FAILURES] or [ALL]
        sets = [(m,) for m in train_modalities]
        if len(train_modalities) > 1:
            sets.append(tuple(train_modalities))
        return [EvalCase(s, condition) for condition in conditions for s in sets]

    @classmethod
    def tables(cls) -> list[TableSpec]:
        return [TableSpec("tsne", "Silhouette of the fused pixel features (higher: classes better separated), "
                          "per sensor failure and modality set (as the paper's Fig. 6)",
                          rows=("method", "condition"), columns=("test",), prepare=_by_condition)]

    def _class_ids(self, results: Sequence[CaseResult]) -> list[int]:
        """The named classes, else the most frequent among the sampled pixels of ALL cases (a
        first case without samples, e.g. a failure absent from the split, must not empty the plot)."""
        assert self.info is not None
        if self.classes:
            return [self.info.classes.index(c) for c in self.classes]
        seen: dict[int, int] = {}
        for result in results:
            for cls, (_, count) in (result.pixels or {}).items():
                seen[cls] = seen.get(cls, 0) + count
        return sorted(seen, key=lambda c: -seen[c])[: self.top_classes]

    def _panels(self, results: Sequence[CaseResult]) -> tuple[list[int], list[tuple[CaseResult, np.ndarray, np.ndarray, float]]]:
        """The classes shown, and per case with at least two of them: its sampled pixel features,
        their classes and their silhouette."""
        from sklearn.metrics import silhouette_score

        class_ids = self._class_ids(results)
        panels = []
        for result in results:
            feats, labels = [], []
            for cls in class_ids:
                if result.pixels and cls in result.pixels:
                    f = result.pixels[cls][0]
                    feats.append(f)
                    labels.append(np.full(len(f), cls))
            if len(labels) < 2 or sum(len(x) for x in labels) < 10:
                continue  # fewer than two classes present: nothing to separate
            x, y = np.concatenate(feats), np.concatenate(labels)
            panels.append((result, x, y, float(silhouette_score(x, y))))
        return class_ids, panels

    def summary(self, results: Sequence[CaseResult], train_modalities: Sequence[str]) -> list[SummaryRow]:
        return [SummaryRow("silhouette", score, test_modalities=result.case.test_modalities,
                           condition=result.case.condition) for result, _, _, score in self._panels(results)[1]]

    def figures(self, results: Sequence[CaseResult], train_modalities: Sequence[str]) -> dict[str, bytes]:
        """``tsne.png``: the 2-D t-SNE of every case's pixel features in one grid."""
        from sklearn.manifold import TSNE as SKTSNE

        class_ids, panels = self._panels(results)
        embedded = []
        for result, x, y, score in panels:
            perplexity = min(self.perplexity, (len(x) - 1) / 3)
            xy = SKTSNE(n_components=2, perplexity=perplexity, init="pca", random_state=self.seed).fit_transform(x)
            embedded.append((result.case, xy, y, score))
        return {"tsne.png": tsne_grid(embedded, class_ids, self.info)} if embedded else {}


def tsne_grid(panels: Sequence[tuple[EvalCase, np.ndarray, np.ndarray, float]], class_ids: Sequence[int],
              info: Any) -> bytes:
    """One figure for the run: a panel per case (rows: conditions, columns: modality sets), the
    silhouette in each title, one legend outside the points, colours from a qualitative palette
    so that classes stay apart even when the data set's own colours are close."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    from mlebench.data.show import png_bytes

    conditions = list(dict.fromkeys(case.condition for case, *_ in panels))
    sets = list(dict.fromkeys(case.test_modalities for case, *_ in panels))
    colours = dict(zip(class_ids, sns.color_palette("tab10" if len(class_ids) <= 10 else "tab20", len(class_ids))))
    fig, axes = plt.subplots(len(conditions), len(sets), figsize=(2.6 * len(sets) + 1.6, 2.6 * len(conditions)),
                             squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for case, xy, labels, score in panels:
        ax = axes[conditions.index(case.condition), sets.index(case.test_modalities)]
        ax.set_axis_on()
        for cls in class_ids:
            sel = labels == cls
            ax.scatter(xy[sel, 0], xy[sel, 1], s=3, color=colours[cls], linewidths=0)
        ax.set_title(f"{case_label(case.test_modalities, case.condition)}\nsilhouette {score:.2f}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=colours[c], label=info.classes[c]) for c in class_ids]
    fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1 - 1.4 / fig.get_figwidth(), 1))
    return png_bytes(fig, dpi=110)
