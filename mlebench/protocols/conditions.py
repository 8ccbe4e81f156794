"""``conditions``: each weather and sensor failure of the data set on its own, and all."""

from __future__ import annotations

from typing import Sequence

from mlebench.data.base import DatasetInfo
from mlebench.protocols.base import ALL, EvalCase, Protocol, register_protocol


@register_protocol("conditions")
class Conditions(Protocol):
    description = "each weather and sensor failure (the data set's cases) and all samples"

    def cases(self, train_modalities: Sequence[str], info: DatasetInfo) -> list[EvalCase]:
        return [EvalCase(tuple(train_modalities), condition) for condition in (ALL, *info.cases)]
