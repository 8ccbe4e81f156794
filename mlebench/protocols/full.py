"""``full``: the training modalities, all samples, clean inputs."""

from __future__ import annotations

from typing import Sequence

from mlebench.data.base import DatasetInfo
from mlebench.protocols.base import EvalCase, Protocol, register_protocol


@register_protocol("full")
class Full(Protocol):
    description = "the training modalities on the whole split"

    def cases(self, train_modalities: Sequence[str], info: DatasetInfo) -> list[EvalCase]:
        return [EvalCase(tuple(train_modalities))]
