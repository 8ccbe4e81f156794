"""Every built-in method's options, per preset, pinned: a default or preset value that changes
moves the numbers, often within the gate's tolerance, so it must be a deliberate change of
``tests/methods/presets.json`` (``python -m tests.methods.test_presets`` rewrites it), not a
side effect. Also pinned by hand: the values the paper states for the ``paper`` presets."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from methods import ASSETS
from methods.cmnext.model import CMNeXt
from methods.cmnext.model import make_config as cmnext_config
from methods.cwsam.model import CWSAM
from methods.cwsam.model import make_config as cwsam_config
from methods.mlesam import VARIANTS
from methods.mlesam.model import MLESAM
from methods.mlesam.model import make_config as mlesam_config
from methods.sam_lora import SAMLoRA
from methods.sam_lora import make_config as sam_lora_config

PINNED = Path(__file__).with_name("presets.json")


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, str) and value.startswith(str(ASSETS)):
        return "methods/assets/" + Path(value).name  # the checkout's own path is not part of the recipe
    return value


def current() -> dict[str, Any]:
    """name -> preset -> {config, train_defaults, eval_size} of every built-in method."""
    builders = {name: (MLESAM, lambda p, f=fusion, a=aux: mlesam_config(p, fusion=f, aux_head=a))
                for name, (fusion, aux) in VARIANTS.items()}
    builders.update({"sam-lora": (SAMLoRA, sam_lora_config), "cwsam": (CWSAM, cwsam_config),
                     "cmnext": (CMNeXt, cmnext_config)})
    return {name: {preset: {"config": _plain(make(preset)), "train_defaults": _plain(cls.train_defaults(preset)),
                            "eval_size": cls.eval_size(preset)} for preset in ("tiny", "paper")}
            for name, (cls, make) in sorted(builders.items())}


def test_every_option_default_and_preset_value_is_pinned():
    pinned, now = json.loads(PINNED.read_text()), current()
    assert sorted(now) == sorted(pinned), "a built-in method came or went: update presets.json"
    changed = [f"{name} {preset} {part}: {key} {pinned[name][preset][part].get(key)!r} -> {value!r}"
               for name in now for preset in now[name] for part in ("config", "train_defaults")
               for key, value in now[name][preset][part].items() if pinned[name][preset][part].get(key) != value]
    changed += [f"{name} {preset}: {key} gone" for name in now for preset in now[name]
                for part in ("config", "train_defaults") for key in pinned[name][preset][part]
                if key not in now[name][preset][part]]
    changed += [f"{name} {preset}: eval_size {pinned[name][preset]['eval_size']} -> {now[name][preset]['eval_size']}"
                for name in now for preset in now[name]
                if pinned[name][preset]["eval_size"] != now[name][preset]["eval_size"]]
    assert not changed, "changed on purpose? run `python -m tests.methods.test_presets`:\n" + "\n".join(changed)


@pytest.mark.parametrize("name", ["mlesam", "mlesam-noaux", "sam-lora", "cwsam", "cmnext"])
def test_the_paper_presets_follow_the_paper(name: str):
    """Training: batch 6 at 1024² for 100 epochs with bf16 (paper Sec. IV-A; CMNeXt keeps the
    DELIVER config's own recipe); LoRA rank 32 (Sec. IV-A); OHEM threshold 0.7; evaluation at 1024."""
    paper = current()[name]["paper"]
    assert paper["eval_size"] == 1024
    assert {k: paper["train_defaults"][k] for k in ("crop_size", "base_size", "epochs")} == \
        {"crop_size": 1024, "base_size": 1024, "epochs": 100}
    if name != "cmnext":
        assert paper["train_defaults"]["batch_size"] == 6 and paper["train_defaults"]["amp"] is True
    if name.startswith("mlesam") or name == "sam-lora":
        assert paper["config"]["lora_rank"] == 32
    if name != "cwsam":
        assert paper["config"]["ohem_thresh"] == 0.7


if __name__ == "__main__":  # rewrite the pinned values (a deliberate change)
    PINNED.write_text(json.dumps(current(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {PINNED}", file=sys.stderr)
