"""The gate's power, measured: regressions of known kind planted into a method
(tests/gate_plants.py) and checked by the real gate — one method trained with the check's seed 0
and compared with the committed baseline — must fail it. docs/benchmark.md lists every plant
tried, caught or not, and the smallest drop each method's figures detect."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Callable

import pytest
from click.testing import CliRunner

from mlebench.cli import main

from .gate_plants import class_tokens_shuffled, degraded_predictions


def two_point_fraction(miou: float) -> float:
    """The share of pixels whose class, made wrong, takes about 2 points off a full-modality
    mIoU of ``miou`` (percent): IoU (1 - f) / (1 + f IoU) = IoU - 0.02 solved for f."""
    return 2 / (miou + miou * (miou - 2) / 100)


def _sam_lora_two_points_down() -> AbstractContextManager:
    from methods.sam_lora import SAMLoRA

    return degraded_predictions(SAMLoRA, two_point_fraction(12.19))  # the baseline's full mIoU


# Kept here: the plants the gate must catch. docs/benchmark.md lists every plant tried on every
# method, caught or not.
PLANTS: dict[str, tuple[str, Callable[[], AbstractContextManager]]] = {
    "sam-lora-2-points-down": ("sam-lora", _sam_lora_two_points_down),
    "mlesam-class-tokens-shuffled": ("mlesam", class_tokens_shuffled),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PLANTS))
def test_the_gate_catches_a_planted_regression(name: str):
    method, plant = PLANTS[name]
    with plant():
        result = CliRunner().invoke(main, ["check", "--methods", method])
    assert result.exit_code == 1, result.output
    assert "FELL: " in result.output and "gated figure(s) below the baseline" in result.output
