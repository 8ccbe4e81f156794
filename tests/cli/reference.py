"""The independent reference that the end-to-end tests of tests/cli/ check stored numbers against,
and the protocol runs they check (made once per package by the ``runs`` fixture, conftest.py).

The reference loads the checkpoint a run wrote into a freshly built method and scores the split
itself, sample by sample: its own condition selection from each sample's meta, its own
corruption (seeded by the run's seed and the sample id), normalisation, zero padding to the
method's size multiple, argmax, and a ConfusionMatrix under the data set's mIoU convention.
Only the forward pass is run on the same consecutive chunks of samples as the evaluator's
``--batch-size``: a batched forward may differ from a single-sample one in the last bit of a
logit, which could flip an argmax and make an exact comparison flaky.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import pytest
import torch
import torch.nn.functional as F

from mlebench.corruptions import Corruption, apply_corruption, corruption_seed
from mlebench.data import dataset_info, load_dataset
from mlebench.data.transforms import Normalize
from mlebench.engine.checkpoint import load_checkpoint
from mlebench.metrics import ConfusionMatrix
from mlebench.registry import build_method
from mlebench.results import ResultsStore

from ..helpers import invoke

SEED = 5  # the runs' --seed: not the default, so that noise really is seeded by it
BATCH = 2  # the runs' --batch-size: 5 val samples -> batches of 2, 2 and 1
N_TRAIN, N_VAL, N_TEST = 4, 5, 2
MODS = ("rgb", "depth", "event", "lidar")
KEY = ["protocol", "test_modalities", "condition", "corruption", "metric", "class"]
TSNE_CLASSES = ["Road", "Building", "Sky"]
TSNE_PIXELS = 8


def cli(*args: Any) -> Any:
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return result


# --- the independent reference -------------------------------------------------------------------
def selected(meta: dict[str, Any], condition: str) -> bool:
    """Whether a sample counts for a condition: a weather, daytime or sensor failure of its own."""
    return condition == "all" or condition in {meta.get(k) for k in ("weather", "daytime", "sensor_failure")}


def fresh_method(dataset: str, ckpt: Path, modalities: Sequence[str] = MODS) -> Any:
    torch.manual_seed(12345)  # not the run's seed: nothing may depend on the global RNG state
    method = build_method("mlesam", dataset_info(dataset), list(modalities), "tiny", sam2_checkpoint=None)
    load_checkpoint(method, ckpt)
    return method.eval()


@torch.no_grad()
def predict(method: Any, samples: list[dict], modalities: Sequence[str], corruption: Corruption | None = None,
            seed: int = SEED, batch: int = BATCH) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(prediction (H, W), fused embedding (C, h, w)) of every sample."""
    norm = Normalize(method.info, method.modalities)
    out = []
    for start in range(0, len(samples), batch):
        chunk = samples[start:start + batch]
        inputs = {}
        for m in modalities:
            xs = []
            for s in chunk:
                raw = s[m]
                if corruption is not None and corruption.modality == m:
                    raw = apply_corruption(raw, corruption, corruption_seed(seed, s["meta"]["id"], corruption))
                xs.append(norm({m: raw})[m])
            inputs[m] = torch.stack(xs)
        h, w = chunk[0]["label"].shape
        mult = method.size_multiple
        ph, pw = -h % mult, -w % mult
        feats = {m: method.encode(m, F.pad(x, (0, pw, 0, ph))) for m, x in inputs.items()}
        output = method.decode(feats, (h + ph, w + pw))
        preds = output.logits[:, :, :h, :w].argmax(1)
        out += [(preds[i], output.embedding[i]) for i in range(len(chunk))]
    return out


def score(samples: list[dict], predictions: list, num_classes: int,
          condition: str = "all") -> tuple[ConfusionMatrix, int]:
    """The confusion matrix over the samples of ``condition`` (ignore 255), and their count."""
    cm, n = ConfusionMatrix(num_classes, 255), 0
    for s, (pred, _) in zip(samples, predictions):
        if selected(s["meta"], condition):
            cm.update(pred, s["label"])
            n += 1
    return cm, n


def reference(method: Any, samples: list[dict], modalities: Sequence[str], condition: str = "all",
              corruption: Corruption | None = None, batch: int = BATCH) -> dict[str, Any]:
    predictions = predict(method, samples, modalities, corruption, batch=batch)
    cm, n = score(samples, predictions, method.num_classes, condition)
    convention = method.info.miou_convention
    return {"miou": cm.miou(convention), "pixel_accuracy": cm.pixel_accuracy(),
            "mean_f1": cm.mean_f1(convention), "iou": cm.iou().tolist(), "samples": n, "matrix": cm.matrix}


def split_samples(dataset: str, root: Path, split: str, modalities: Sequence[str] = MODS) -> list[dict]:
    ds = load_dataset(dataset, root, split, list(modalities))
    return [ds[i] for i in range(len(ds))]


# --- reading the store ---------------------------------------------------------------------------
def run_rows(db: Path, run_id: str):
    return ResultsStore(db).results([run_id])


def value(rows, metric: str, modalities: Sequence[str], condition: str = "all", corruption: str = "none",
          cls: str = "") -> float:
    sel = rows[(rows.metric == metric) & (rows.test_modalities == ",".join(modalities))
               & (rows.condition == condition) & (rows.corruption == corruption) & (rows["class"] == cls)]
    assert len(sel) == 1, (metric, modalities, condition, corruption, cls, len(sel))
    return float(sel.value.iloc[0])


def as_dict(rows) -> dict[tuple, float]:
    out = {tuple(r[k] for k in KEY): r.value for _, r in rows.iterrows()}
    assert len(out) == len(rows), "a result key is stored twice"
    return out


def same_values(a: dict[tuple, float], b: dict[tuple, float]) -> None:
    assert a.keys() == b.keys()
    differ = [k for k in a if not (a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])))]
    assert not differ, differ[:5]


def check_case(rows, method, samples, modalities, condition="all", corruption: Corruption | None = None,
               batch: int = BATCH) -> dict[str, Any]:
    """The stored numbers of one case equal the reference's, exactly (NaN where NaN)."""
    ref = reference(method, samples, modalities, condition, corruption, batch)
    where = dict(condition=condition, corruption=corruption.name if corruption else "none")
    assert value(rows, "samples", modalities, **where) == ref["samples"]
    for metric in ("miou", "pixel_accuracy", "mean_f1"):
        got = value(rows, metric, modalities, **where)
        if math.isnan(ref[metric]):
            assert math.isnan(got), metric
        else:
            assert got == pytest.approx(ref[metric], abs=1e-12), (metric, modalities, where)
    for name, want in zip(method.info.classes, ref["iou"]):
        got = value(rows, "iou", modalities, cls=name, **where)
        assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, abs=1e-12), name
    return ref


# --- one trained checkpoint per protocol, run and eval -------------------------------------------
PROTOCOL_CONFIG = {
    "full": "",
    "missing-modality": "",
    "noise": "protocol: {sweep: false}\n",
    "conditions": "",
    "tsne": f"protocol: {{classes: [{', '.join(TSNE_CLASSES)}], pixels_per_class: {TSNE_PIXELS}}}\n",
}


class ProtocolRuns:
    """`mlebench run --protocol P` (training 2 steps, or 2 epochs for `full`) and `mlebench eval`
    of the checkpoint it wrote, into one results file per protocol; each made once per module."""

    def __init__(self, root: Path, folder: Path) -> None:
        self.root, self.folder, self.done = root, folder, {}

    def __call__(self, protocol: str) -> dict[str, Any]:
        if protocol not in self.done:
            name = protocol.replace("-", "_")
            config = self.folder / f"{name}.yaml"
            config.write_text("train: {batch_size: 2, crop_size: 64, base_size: 64}\n" + PROTOCOL_CONFIG[protocol])
            db, ckpt = self.folder / f"{name}.sqlite", self.folder / f"{name}.pt"
            common = ["--protocol", protocol, "--data-root", self.root, "--config", config, "--seed", SEED,
                      "--weights", "none", "--batch-size", BATCH, "--results", db]
            length = ["--epochs", "2"] if protocol == "full" else ["--steps", "2"]
            trained = cli("run", *common, *length, "--save-checkpoint", ckpt)
            evaluated = cli("eval", *common, "--checkpoint", ckpt)
            runs = ResultsStore(db).runs()  # newest first
            assert list(runs.status) == ["finished", "finished"]
            eval_id, run_id = runs.id
            self.done[protocol] = {
                "db": db, "ckpt": ckpt, "config": config, "run_id": run_id, "eval_id": eval_id,
                "run_config": runs.config[1], "eval_config": runs.config[0],
                "run_rows": run_rows(db, run_id), "eval_rows": run_rows(db, eval_id),
                "run_output": trained.output, "eval_output": evaluated.output,
            }
        return self.done[protocol]
