"""The loader base class: a new loader that never thought of NaN gets the non-finite check for
free, for single-file and two-file modalities, whoever calls ``decode``."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mlebench.data.base import DatasetInfo, ModalitySpec, MultiModalDataset, SampleRef
from mlebench.errors import DataError


class _FloatLoader(MultiModalDataset):
    """A loader written without any thought of NaN: the base class checks it anyway."""

    info = DatasetInfo(name="floaty", classes=("a", "b"), palette=((0, 0, 0), (1, 1, 1)),
                       modalities=(ModalitySpec("thermal", "float32 thermal"), ModalitySpec("pair", "two files")),
                       splits=("val",))

    def index(self) -> list[SampleRef]:
        return [SampleRef(id=p.stem, paths={"thermal": p, "pair": (p.with_suffix(".a"), p.with_suffix(".b"))},
                          label=p.with_suffix(".label")) for p in sorted(self.root.glob("*.raw"))]

    def decode(self, ref: SampleRef) -> dict[str, Any]:
        values = torch.from_numpy(np.fromfile(ref.paths["thermal"], dtype=np.float32).reshape(1, 2, 2))
        sample = {m: values.expand(3, 2, 2).clone() for m in self.modalities}
        return {**sample, "label": torch.zeros(2, 2, dtype=torch.int64), "meta": {"id": ref.id}}


@pytest.mark.parametrize("modality, named", [("thermal", "{raw}"), ("pair", "{a} / {b}")])
def test_a_new_loader_gets_the_check_for_free(tmp_path: Path, modality: str, named: str):
    raw = tmp_path / "x.raw"
    np.array([1.0, math.nan, 2.0, 3.0], dtype=np.float32).tofile(raw)
    ds = _FloatLoader(tmp_path, "val", [modality])
    where = named.format(raw=raw, a=raw.with_suffix(".a"), b=raw.with_suffix(".b"))
    with pytest.raises(DataError, match=re.escape(f"{modality} file {where} holds NaN or infinite values (3 NaN")):
        ds[0]
    with pytest.raises(DataError, match="holds NaN"):
        ds.decode(ds.refs[0])  # whoever calls decode
    np.array([1.0, 0.0, 2.0, 3.0], dtype=np.float32).tofile(raw)
    assert ds[0][modality].shape == (3, 2, 2)
