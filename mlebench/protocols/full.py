"""``full``: the training modalities, all samples, clean inputs."""

from __future__ import annotations

from typing import Any, Sequence

from mlebench.data.base import DatasetInfo
from mlebench.protocols.base import (
    ALL,
    NO_CORRUPTION,
    EvalCase,
    Protocol,
    TableSpec,
    all_subset_labels,
    ordered,
    register_protocol,
    subset_label,
)

PARAMS = "Params (M)"


def _clean_full(frame: Any) -> Any:
    return frame[(frame.metric == "miou") & (frame.test_modalities == frame.train_modalities)
                 & (frame.condition == ALL) & (frame.corruption == NO_CORRUPTION)].copy()


def _by_combination(frame: Any, info: DatasetInfo) -> Any:
    out = _clean_full(frame)
    out["modalities"] = ordered([subset_label(m, info) for m in out.train_modalities], all_subset_labels(info))
    return out


def _params_and_miou(frame: Any, info: DatasetInfo) -> Any:
    import pandas as pd

    out = _clean_full(frame)
    out = out[out.train_modalities == ",".join(info.defaults)]
    params = out.drop_duplicates("run_id").assign(value=lambda f: f.params_m, metric="params_m", ci_low=float("nan"),
                                                  ci_high=float("nan"))
    both = pd.concat([params.assign(quantity=PARAMS), out.assign(quantity="mIoU")])
    both["quantity"] = ordered(both.quantity, [PARAMS, "mIoU"])
    return both


@register_protocol("full")
class Full(Protocol):
    description = "the training modalities on the whole split"

    def cases(self, train_modalities: Sequence[str], info: DatasetInfo) -> list[EvalCase]:
        return [EvalCase(tuple(train_modalities))]

    @classmethod
    def tables(cls) -> list[TableSpec]:
        return [
            TableSpec("full", "mIoU (%) per method and training modalities, tested on the same modalities "
                      "(as the paper's Tab. I-III)", rows=("method",), columns=("modalities",),
                      prepare=_by_combination),
            TableSpec("params", "Trainable parameters and mIoU (%) with every modality (as the paper's Tab. V)",
                      rows=("method", "variant"), columns=("quantity",), prepare=_params_and_miou,
                      unranked_columns=(PARAMS,), peers=()),
        ]
