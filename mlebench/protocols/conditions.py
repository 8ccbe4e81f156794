"""``conditions``: each weather and sensor failure of the data set on its own, and all."""

from __future__ import annotations

from typing import Any, Sequence

from mlebench.data.base import DatasetInfo
from mlebench.protocols.base import (
    ALL,
    EvalCase,
    Protocol,
    TableSpec,
    all_subset_labels,
    ordered,
    register_protocol,
    subset_label,
)

PARAMS = "Params (M)"


def _by_condition(frame: Any, info: DatasetInfo) -> Any:
    import pandas as pd

    out = frame[frame.metric == "miou"].copy()
    params = out.drop_duplicates("run_id").assign(value=lambda f: f.params_m, metric="params_m", condition=PARAMS,
                                                  ci_low=float("nan"), ci_high=float("nan"))
    out = pd.concat([params, out])
    out["condition"] = ordered(out.condition, [PARAMS, ALL, *info.cases])
    out["train"] = ordered([subset_label(m, info) for m in out.train_modalities], all_subset_labels(info))
    return out


@register_protocol("conditions")
class Conditions(Protocol):
    description = "each weather and sensor failure (the data set's cases) and all samples"

    def cases(self, train_modalities: Sequence[str], info: DatasetInfo) -> list[EvalCase]:
        return [EvalCase(tuple(train_modalities), condition) for condition in (ALL, *info.cases)]

    @classmethod
    def tables(cls) -> list[TableSpec]:
        return [TableSpec("conditions", "mIoU (%) per weather and sensor failure, with trainable parameters "
                          "(as the paper's Tab. IV)", rows=("method", "train"), columns=("condition",),
                          prepare=_by_condition, unranked_columns=(PARAMS,))]
