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

from mlebench.data import load_dataset
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


def test_identity_tells_other_data_apart_and_the_same_data_anywhere(tmp_path: Path):
    """Two synthetic sets of different seeds share every sample id; their fingerprints differ.
    A copy elsewhere has the same fingerprint (another root); a file that changes size does not."""
    import shutil

    from mlebench.data.synthetic import generate_synthetic

    a = generate_synthetic(tmp_path / "a", size=32, n_train=1, n_val=3, n_test=1, seed=0, workers=1)
    b = generate_synthetic(tmp_path / "b", size=32, n_train=1, n_val=3, n_test=1, seed=1, workers=1)
    ida, idb = (load_dataset("synthetic", r, "val", ["rgb", "depth"]).identity() for r in (a, b))
    assert [r.id for r in load_dataset("synthetic", a, "val").refs] == [r.id for r in load_dataset("synthetic", b, "val").refs]
    assert ida["fingerprint"] != idb["fingerprint"] and ida["samples"] == idb["samples"] == 3
    copy = Path(shutil.copytree(a, tmp_path / "copy"))
    same = load_dataset("synthetic", copy, "val", ["rgb", "depth"]).identity()
    assert same["fingerprint"] == ida["fingerprint"] and same["root"] != ida["root"] == str(a.resolve())
    victim = next(copy.glob("hha/*/val/*/*_depth_front.png"))
    victim.write_bytes(victim.read_bytes() + b"\0")
    assert load_dataset("synthetic", copy, "val", ["rgb", "depth"]).identity()["fingerprint"] != ida["fingerprint"]
    # only the evaluated modalities count: lidar changes nothing for an rgb-depth run
    assert load_dataset("synthetic", a, "val", ["rgb", "lidar"]).identity()["fingerprint"] != ida["fingerprint"]
