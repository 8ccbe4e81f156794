"""Loading a SAM2 checkpoint (``sam2.1_hiera_*.pt``) into MLE-SAM, strictly and explained.

What maps where: ``image_encoder.*`` (Hiera trunk + FPN neck), ``sam_prompt_encoder.*``,
``no_mem_embed`` and the class-independent parts of ``sam_mask_decoder.*`` (the two-way
transformer, output upscaling, ``conv_s0``/``conv_s1``, the IoU token) load one to one and must
all be present with matching shapes. The class-specific decoder parts (mask tokens,
hypernetwork MLPs, the IoU head's output layer) have K entries instead of SAM2's four and start
fresh. SAM2's video-only parts (memory attention/encoder, object pointers, object-score head)
are ignored by name. Anything else is an error that lists the keys, so a wrong or truncated
file never loads silently (sam2's own Hiera ``weights_path`` loads non-strictly).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from mlebench.weights import copy_strict, read_weights, sha256

_LOADED_PREFIXES = ("image_encoder.", "sam_prompt_encoder.", "sam_mask_decoder.", "no_mem_embed")
_CLASS_SPECIFIC = (
    "sam_mask_decoder.mask_tokens.",
    "sam_mask_decoder.output_hypernetworks_mlps.",
    "sam_mask_decoder.iou_prediction_head.",
)
_VIDEO_ONLY = (
    "memory_attention.", "memory_encoder.", "obj_ptr_proj.", "obj_ptr_tpos_proj.",
    "mask_downsample.", "maskmem_tpos_enc", "no_mem_pos_enc", "no_obj_ptr", "no_obj_embed_spatial",
    "sam_mask_decoder.obj_score_token.", "sam_mask_decoder.pred_obj_score_head.",
)  # fmt: skip


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A SAM2 checkpoint's state dict (``{"model": sd}`` or ``sd``)."""
    return read_weights(path, "SAM2 checkpoint")


def load_sam2_weights(model: nn.Module, path: Path) -> dict[str, Any]:
    """Copy a SAM2 checkpoint into ``model``'s SAM2-named modules; returns a summary."""
    state = read_state_dict(path)
    own = model.state_dict()
    wanted = {
        k: v for k, v in own.items()
        if k.startswith(_LOADED_PREFIXES) and not k.startswith(_CLASS_SPECIFIC)
    }  # fmt: skip
    skipped = [k for k in state if k not in own and (k.startswith(_VIDEO_ONLY) or k.startswith(_CLASS_SPECIFIC))]
    skipped += [k for k in state if k in own and k not in wanted]
    copy_strict(wanted, state, skipped, path, "SAM2 checkpoint", "this MLE-SAM encoder",
                "is it a SAM2 checkpoint of the preset's size?")
    return {
        "sha256": sha256(path),
        "loaded": len(wanted),
        "fresh": sorted(k for k in own if k.startswith(_CLASS_SPECIFIC)),
        "ignored": sorted(k for k in state if k.startswith(_VIDEO_ONLY)),
    }


