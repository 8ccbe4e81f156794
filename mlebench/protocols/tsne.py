"""``tsne``: how separable the fused features are, per condition and modality set (Fig. 6).

Cases: every single training modality and the full set, under each sensor-failure condition
of the data set (all samples when it has none). For each case the evaluator samples a fixed
number of fused-embedding pixels per class with seeded keys; the summary embeds the chosen
classes with scikit-learn's t-SNE (fixed seed), writes one scatter PNG per case and stores the
silhouette score of the pixel features (in the embedding space, euclidean) as a number.

Classes: ``classes`` (names) when given, else the ``top_classes`` most frequent classes among
the sampled pixels of the first case (choice: 6, the order of the paper's figure).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mlebench.data.base import DatasetInfo
from mlebench.data.deliver import SENSOR_FAILURES
from mlebench.errors import ConfigError
from mlebench.protocols.base import ALL, CaseResult, EvalCase, Protocol, SummaryRow, register_protocol


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

    def _class_ids(self, results: Sequence[CaseResult]) -> list[int]:
        assert self.info is not None
        if self.classes:
            return [self.info.classes.index(c) for c in self.classes]
        seen = results[0].pixels or {}
        return sorted(seen, key=lambda c: -seen[c][1])[: self.top_classes]

    def summary(
        self, results: Sequence[CaseResult], train_modalities: Sequence[str], artifacts: Path | None = None
    ) -> list[SummaryRow]:
        from sklearn.manifold import TSNE as SKTSNE
        from sklearn.metrics import silhouette_score

        class_ids = self._class_ids(results)
        rows = []
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
            rows.append(SummaryRow("silhouette", float(silhouette_score(x, y)),
                                   test_modalities=result.case.test_modalities, condition=result.case.condition))
            if artifacts is not None:
                perplexity = min(self.perplexity, (len(x) - 1) / 3)
                xy = SKTSNE(n_components=2, perplexity=perplexity, init="pca", random_state=self.seed).fit_transform(x)
                _scatter(xy, y, self.info, result.case, artifacts)
        return rows


def _scatter(xy: np.ndarray, labels: np.ndarray, info: Any, case: EvalCase, artifacts: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mlebench.fsutil import atomic_path

    fig, ax = plt.subplots(figsize=(4, 4))
    palette = info.palette_array() / 255.0
    for cls in np.unique(labels):
        sel = labels == cls
        ax.scatter(xy[sel, 0], xy[sel, 1], s=4, color=palette[cls], label=info.classes[cls])
    ax.set_title(f"{'-'.join(case.test_modalities)} | {case.condition}", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=6, markerscale=2, loc="best")
    fig.tight_layout()
    out = Path(artifacts) / f"tsne_{case.condition}_{'-'.join(case.test_modalities)}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return out
