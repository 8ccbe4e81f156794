"""Evaluation of a trained method over modality subsets, one pass over the data.

Each modality is encoded once per batch and its features are reused by every subset that
contains it (methods with a separable encoder); other methods run a forward per subset.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch.utils.data import DataLoader

from mlebench.data.transforms import Normalize
from mlebench.metrics import ConfusionMatrix


class _Normalized(torch.utils.data.Dataset):
    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self.normalize = Normalize(dataset.info, dataset.modalities)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.normalize(self.dataset[index])


@torch.no_grad()
def evaluate_subsets(
    method: Any,
    dataset: Any,
    subsets: Sequence[Sequence[str]],
    batch_size: int = 4,
    device: str = "cpu",
) -> dict[tuple[str, ...], ConfusionMatrix]:
    """A confusion matrix per modality subset of ``method.modalities``."""
    method.to(device).eval()
    subsets = [tuple(s) for s in subsets]
    needed = sorted({m for s in subsets for m in s}, key=list(method.modalities).index)
    matrices = {s: ConfusionMatrix(method.num_classes, dataset.info.ignore_index, device) for s in subsets}
    loader = DataLoader(_Normalized(dataset), batch_size=batch_size, shuffle=False)
    for batch in loader:
        inputs = {m: batch[m].to(device) for m in needed}
        target = batch["label"].to(device)
        size = tuple(target.shape[-2:])
        features = method.encode_many(inputs) if method.separable_encoder else None
        for subset in subsets:
            if features is not None:
                output = method.decode({m: features[m] for m in subset}, size)
            else:
                output = method({m: inputs[m] for m in subset}, subset)
            matrices[subset].update(output.logits.argmax(1), target, validate=False)
    return matrices
