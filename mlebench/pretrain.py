"""``mlebench pretrain --method NAME``: the tiny presets' stand-in backbones, by one shared recipe.

The paper's methods start from backbones pre-trained on millions of images (SAM2's Hiera, SAM's
ViT-B, ImageNet MiT-B0). None can be downloaded here, and a frozen random backbone gives LoRA,
adapters or fine-tuning little to work with, so at tiny scale every method's backbone starts from
a stand-in trained the same way: on a synthetic RGB set of its own (generator seed
:data:`PretrainRecipe.data_seed`, disjoint from every benchmark split), with the same steps,
batch, crops, learning rate and schedule, each through its own segmentation model (the method's
``prepare_pretraining`` says which parts learn). The result is written in the format the
method's weights option reads, with a JSON file beside it recording the recipe, the command, the
final loss, the package versions and the file's sha256. CPU runs are deterministic for a given
seed and thread count, so a stand-in is re-made bit for bit by the command it records.

Why this is fair: every method then sees the same pre-training data and budget for its backbone,
as in the paper each starts from a backbone pre-trained on large data; what differs is only what
the methods themselves bring (architecture, fine-tuning scheme). See docs/baselines.md.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from mlebench.config import TrainConfig
from mlebench.data import load_dataset
from mlebench.data.synthetic import ensure_synthetic
from mlebench.engine.train import train
from mlebench.errors import ConfigError
from mlebench.fsutil import atomic_path
from mlebench.outputs import CHECKPOINT, check_name, guard_output
from mlebench.registry import build_method, method_entry
from mlebench.results.provenance import package_versions
from mlebench.weights import sha256


@dataclass(frozen=True)
class PretrainRecipe:
    """The one pre-training recipe every stand-in is made with (the defaults are the shipped
    files'; MLE-SAM's SAM2 stand-in was made with them first)."""

    steps: int = 4000
    batch_size: int = 8
    lr: float = 1e-3
    seed: int = 0
    n_images: int = 600
    crop_size: int = 128
    base_size: int = 256
    data_seed: int = 1000  # the synthetic scenes' generator seed: no benchmark split uses it
    threads: int = 2  # CPU results depend on the thread count; the shipped files used 2

    def command(self, method: str) -> str:
        return (f"mlebench pretrain --method {method} --steps {self.steps} --batch-size {self.batch_size} "
                f"--lr {self.lr} --seed {self.seed} --n-images {self.n_images} --threads {self.threads}")


def sidecar_path(stand_in_path: Path) -> Path:
    """The JSON file recording a stand-in's recipe and checksum."""
    return Path(stand_in_path).with_suffix(".json")


def _stand_in_record(record: Path) -> dict[str, Any] | None:
    try:
        earlier = json.loads(record.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return earlier if isinstance(earlier, dict) and "stand_in" in earlier else None


def check_output(out: Path, force: bool = False) -> None:
    """Before training: ``out`` may take a weights file and the record beside it replaces nothing
    but an earlier record. A stand-in (a weights file with its record beside it) is replaced;
    any other checkpoint only with ``force`` (``--force``); a store, a data set, a directory or
    another kind of file never (:func:`mlebench.outputs.guard_output`)."""
    if out.suffix == ".json":
        raise ConfigError(f"--out {out}: the weights need another suffix than .json (the record is written "
                          "beside them as .json)")
    record = sidecar_path(out)
    check_name(record, "--out (the record beside it)")
    if record.exists() and _stand_in_record(record) is None:
        raise ConfigError(f"{record} exists and is not a stand-in record; refusing to overwrite it "
                          "(give another --out)")
    replaces = (CHECKPOINT,) if record.exists() else ()  # a stand-in with its record: ours to replace
    guard_output(out, "--out", CHECKPOINT, replaces=replaces, force=force)


def pretrain_stand_in(
    method: str,
    out: str | Path | None = None,
    recipe: PretrainRecipe = PretrainRecipe(),
    data_root: str | Path | None = None,
    progress: bool = False,
    report: Callable[[str], None] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Train method ``method``'s tiny stand-in backbone with ``recipe`` and write it to ``out``
    (default: the shipped file) with its JSON record beside it. Returns the record. ``force``:
    ``out`` may replace a checkpoint that is not a stand-in (see :func:`check_output`)."""
    stand_in = method_entry(method).stand_in
    if stand_in is None:
        raise ConfigError(f"method {method!r} has no tiny stand-in backbone: its tiny preset starts from a "
                          "seeded random init")
    out = Path(out) if out is not None else stand_in.path
    check_output(out, force)
    root = Path(data_root) if data_root else ensure_synthetic(
        n_train=recipe.n_images, n_val=1, n_test=1, seed=recipe.data_seed
    )
    dataset = load_dataset("synthetic", root, "train", ["rgb"])
    trainer = method_entry(stand_in.trained_by)
    options = {trainer.weights_option: None}  # nothing loaded: the stand-in is what is made
    if stand_in.seed_option is not None:
        options[stand_in.seed_option] = recipe.seed
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    try:
        torch.manual_seed(recipe.seed)
        model = build_method(trainer.name, dataset.info, ["rgb"], trainer.default_preset, **options)
        model.prepare_pretraining()
        config = TrainConfig(steps=recipe.steps, batch_size=recipe.batch_size, lr=recipe.lr, seed=recipe.seed,
                             crop_size=recipe.crop_size, base_size=recipe.base_size)
        start = time.perf_counter()
        losses = train(model, dataset, config, progress=progress, report=report)
        seconds = time.perf_counter() - start
        state = model.stand_in_state()
    finally:
        torch.set_num_threads(previous_threads)
    record = {
        "stand_in": stand_in.name,
        "trained_by": trainer.name,
        "command": recipe.command(method),
        "recipe": dataclasses.asdict(recipe),
        "data": f"synthetic RGB, generator seed {recipe.data_seed}, {len(dataset)} images",
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "final_loss": losses[-1],
        "train_seconds": round(seconds, 1),
        "versions": package_versions(extra=model.versioned_packages),
    }
    with atomic_path(out) as tmp:
        torch.save({"model": state, "mlebench_pretrain": record}, tmp)
    record["sha256"] = sha256(out)
    record["bytes"] = out.stat().st_size
    with atomic_path(sidecar_path(out)) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    return {**record, "out": str(out), "losses": losses}
