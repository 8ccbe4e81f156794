"""CMNeXt (DELIVER's arbitrary-modal baseline), registered as the ``cmnext`` method."""

from __future__ import annotations

from typing import Any, Sequence

from methods.cmnext.model import STAND_IN, CMNeXt, CMNeXtConfig, make_config
from mlebench.data.base import DatasetInfo
from mlebench.registry import register_method


@register_method("cmnext", weights_option="mit_checkpoint", stand_in=STAND_IN)
def build_cmnext(info: DatasetInfo, modalities: Sequence[str], preset: str, **overrides: Any) -> CMNeXt:
    """Options: ``variant`` ("b0" default, "b2"), ``mit_checkpoint`` (SegFormer MiT weights),
    ``init_seed``, ``drop_path_rate``, ``ohem_thresh``; unknown ones are a ConfigError."""
    return CMNeXt(info, modalities, preset, make_config(preset, **overrides))


__all__ = ["CMNeXt", "CMNeXtConfig", "build_cmnext", "make_config"]
