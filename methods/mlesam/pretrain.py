"""``mlebench pretrain``: a stand-in for SAM2's pre-training, for the tiny preset.

SAM2 weights cannot be downloaded here, and a randomly initialised, frozen Hiera gives LoRA
experts too little to adapt (measured: about 25 mIoU on the synthetic set with all four
modalities; see docs/mlesam.md). So the embedded default starts from a tiny SAM2 that was
pre-trained the way the paper's SAM2 was used: on RGB images only, then frozen.

What it does: generate a synthetic set with its own seed (disjoint from the benchmark's
train/val/test scenes), train the whole tiny SAM2 (Hiera trunk, FPN neck, mask decoder incl. its
two-way transformer) with the K-class semantic decoder on the RGB modality, and write the
result as a SAM2-format checkpoint (``{"model": state_dict}``, sam2's key names) that
``--sam2-checkpoint`` and the tiny preset load like any SAM2 file. CPU runs are deterministic
for a given seed, so the shipped file is reproducible with the command recorded in it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from mlebench.fsutil import atomic_path

SAM2_PREFIXES = ("image_encoder.", "sam_prompt_encoder.", "sam_mask_decoder.", "no_mem_embed")
# The synthetic scenes the pre-training sees: a seed no benchmark split uses.
PRETRAIN_DATA_SEED = 1000


def pretrain_tiny_sam2(
    out: str | Path,
    steps: int = 4000,
    batch_size: int = 8,
    lr: float = 1e-3,
    seed: int = 0,
    n_images: int = 600,
    data_root: str | Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Pre-train the tiny preset's SAM2 on synthetic RGB and save it to ``out``."""
    from methods import build_method
    from mlebench.data import load_dataset
    from mlebench.data.synthetic import ensure_synthetic
    from mlebench.results.provenance import package_versions
    from mlebench.engine.train import TrainConfig, train

    root = Path(data_root) if data_root else ensure_synthetic(
        n_train=n_images, n_val=1, n_test=1, seed=PRETRAIN_DATA_SEED
    )
    dataset = load_dataset("synthetic", root, "train", ["rgb"])
    torch.manual_seed(seed)
    # Random frozen init (sam2_checkpoint=None), every SAM2 part trainable, no LoRA delta.
    model = build_method("mlesam-integrated", dataset.info, ["rgb"], "tiny", sam2_checkpoint=None, init_seed=seed)
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith(SAM2_PREFIXES) or name.startswith("aux_head."))
    model.image_encoder.requires_grad_(True)
    model.lora.requires_grad_(False)  # B stays 0: the trunk itself learns
    config = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed, crop_size=128, base_size=256)
    losses = train(model, dataset, config, progress=progress)
    state = {k: v.detach().clone() for k, v in model.state_dict().items() if k.startswith(SAM2_PREFIXES)}
    info = {
        "command": f"mlebench pretrain --steps {steps} --batch-size {batch_size} --lr {lr} --seed {seed} "
        f"--n-images {n_images}",
        "data": f"synthetic RGB, generator seed {PRETRAIN_DATA_SEED}, {len(dataset)} images",
        "trunk": dataclasses.asdict(model.config.trunk),
        "d_model": model.config.d_model,
        "final_loss": losses[-1],
        "versions": package_versions(extra=("sam2",)),
    }
    out = Path(out)
    with atomic_path(out) as tmp:
        torch.save({"model": state, "mlebench_pretrain": info}, tmp)
    return {**info, "out": str(out), "losses": losses}
