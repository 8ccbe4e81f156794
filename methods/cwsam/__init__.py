"""CWSAM (ClassWise-SAM-Adapter, xypu98/CWSAM), registered as the ``cwsam`` method; the model and
every choice are described in :mod:`methods.cwsam.model`."""

from __future__ import annotations

from typing import Any, Sequence

from methods.cwsam.model import CWSAM, CWSAMConfig, make_config
from methods.cwsam.parts import fft_filter
from methods.sam_vit import SAM_VIT_STAND_IN
from mlebench.data.base import DatasetInfo
from mlebench.registry import register_method


@register_method("cwsam", weights_option="sam_checkpoint", stand_in=SAM_VIT_STAND_IN)
def build_cwsam(info: DatasetInfo, modalities: Sequence[str], preset: str, **overrides: Any) -> CWSAM:
    """CWSAM; options: the fields of :class:`CWSAMConfig` (``fusion``, ``sam_checkpoint``, ...)."""
    return CWSAM(info, modalities, preset, make_config(preset, **overrides))


__all__ = ["CWSAM", "CWSAMConfig", "build_cwsam", "fft_filter", "make_config"]
