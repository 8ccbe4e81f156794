"""MLE-SAM and its ablation variants (paper Tab. V), registered as ``mlesam*`` methods."""

from __future__ import annotations

from typing import Any, Sequence

from methods.mlesam import commands  # noqa: F401  (registers bench lora)
from methods.mlesam.model import MLESAM, TINY_SAM2_CHECKPOINT, MLESAMConfig, make_config
from mlebench.data.base import DatasetInfo
from mlebench.method import StandIn
from mlebench.registry import register_method

# name -> (fusion, auxiliary head)
VARIANTS = {
    "mlesam": ("unified", True),
    "mlesam-noaux": ("unified", False),
    "mlesam-integrated": ("integrated", True),
    "mlesam-integrated-noaux": ("integrated", False),
    "mlesam-weighted": ("weighted", True),
    "mlesam-weighted-noaux": ("weighted", False),
}


#: every variant's tiny preset loads one SAM2 stand-in, trained through MLE-SAM's own model
STAND_IN = StandIn("sam2-hiera-tiny", TINY_SAM2_CHECKPOINT, trained_by="mlesam-integrated")


def _register(name: str, fusion: str, aux_head: bool) -> None:
    @register_method(name, weights_option="sam2_checkpoint", default=name == "mlesam", stand_in=STAND_IN)
    def build(info: DatasetInfo, modalities: Sequence[str], preset: str, **overrides: Any) -> MLESAM:
        config = make_config(preset, **{"fusion": fusion, "aux_head": aux_head, **overrides})
        return MLESAM(info, modalities, preset, config)


for _name, (_fusion, _aux) in VARIANTS.items():
    _register(_name, _fusion, _aux)

__all__ = ["MLESAM", "MLESAMConfig", "VARIANTS", "make_config"]
