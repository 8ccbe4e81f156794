"""CMNeXt (Zhang et al., "Delivering Arbitrary-Modal Semantic Segmentation", CVPR 2023) as a
``SegmentationMethod``, after the reference code jamycheung/DELIVER (``semseg/models/cmnext.py``).

The module tree is the reference's: ``backbone`` (:class:`CMNeXtBackbone`) and ``decode_head``
(:class:`SegFormerHead`), so a state dict of the reference ``CMNeXt`` model loads with
``load_state_dict`` unchanged, and the parameter count equals the reference's for every variant,
modality count and class count (B2, RGB only, 25 classes: 25,785,049).

The encoder mixes modalities from the first stage on, so it is not separable: ``encode`` only
checks a modality's input and passes it on, ``decode`` runs the whole network. A missing
modality is zero-filled (by the evaluator, or by ``decode`` when called with a subset). That is
this suite's choice, not the reference's: DELIVER never zero-fills (it trains one model per
modality set, and its sensor-failure splits are corrupted inputs that are still present); the
run records ``missing_modality: zero-fill`` (docs/baselines.md).

Recipe (``recipe``, methods/recipes.py): the paper's common recipe by default; ``reference``:
DELIVER's own (:data:`REFERENCE_RECIPE`). The reference's reshape quirk between stages is kept
by default (``extra_reshape``), as every reference quirk is (docs/baselines.md).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from methods.cmnext.backbone import DROP_PATH_RATE, SETTINGS, CMNeXtBackbone
from methods.cmnext.head import SegFormerHead
from methods import ASSETS
from methods.losses import ohem_cross_entropy
from methods.recipes import check_recipe, recipe_defaults
from mlebench.data.base import DatasetInfo
from mlebench.errors import ConfigError
from mlebench.method import MethodOutput, SegmentationMethod, StandIn, upsample_logits
from mlebench.weights import read_weights, sha256

#: names of the RGB camera modality (DELIVER/MCubeS ``rgb``, MUSES ``frame``)
RGB_NAMES = ("rgb", "frame")
#: decode-head embedding width per variant (reference: 256 for B0/B1, 512 otherwise)
HEAD_EMBED = {"b0": 256, "b2": 512}


@dataclass(frozen=True)
class CMNeXtConfig:
    variant: str = "b0"  # b0 (the paper's choice) | b2 (the DELIVER reference config)
    mit_checkpoint: str | None = None  # SegFormer ImageNet MiT weights (mit_b0.pth / mit_b2.pth)
    init_seed: int = 0  # seed of the random initialisation
    drop_path_rate: float = DROP_PATH_RATE
    ohem_thresh: float = 0.7
    # the reference's NCHW-as-NHWC reshape of the extra-modality maps between stages, or "fixed"
    extra_reshape: str = "reference"
    recipe: str = "paper"  # paper | reference (methods/recipes.py)

    def validate(self) -> None:
        if self.variant not in SETTINGS:
            raise ConfigError(f"unknown CMNeXt variant {self.variant!r}; known: {', '.join(SETTINGS)}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ConfigError(f"drop_path_rate {self.drop_path_rate} is not in [0, 1)")
        if not 0.0 < self.ohem_thresh <= 1.0:
            raise ConfigError(f"ohem_thresh {self.ohem_thresh} is not in (0, 1]")
        if self.extra_reshape not in ("reference", "fixed"):
            raise ConfigError(f"unknown extra_reshape {self.extra_reshape!r}; known: reference, fixed")
        check_recipe("cmnext", self.recipe)


#: jamycheung/DELIVER's own training (configs/deliver_rgbdel.yaml l. 24-44; README l. 198-204):
#: BATCH_SIZE 2 per GPU on 4 GPUs (tools/train_mm.py l. 64-78: DistributedSampler), so 8 in all;
#: AdamW lr 6e-5, weight decay 0.01; 200 epochs; warm-up poly, power 0.9, 10 warm-up epochs
#: (5% of 200) from ratio 0.1; OHEM cross-entropy, as the paper's recipe. Not reproduced: the
#: reference's schedule runs to (epochs + 1) x iterations (train_mm.py l. 61), ending at 0.9% of lr.
REFERENCE_RECIPE: dict[str, dict[str, Any]] = {
    "paper": {"batch_size": 8, "lr": 6e-5, "epochs": 200, "warmup_fraction": 0.05},
    "tiny": {"warmup_fraction": 0.05},
}

#: the tiny preset's ImageNet-MiT stand-in, SegFormer's MiT key names (B0 only; a tiny B2 starts
#: from a seeded init)
MIT_B0_TINY = ASSETS / "mit_b0_tiny_synthetic.pt"
STAND_IN = StandIn("mit-b0-tiny", MIT_B0_TINY, trained_by="cmnext")


def make_config(preset: str, **overrides: Any) -> CMNeXtConfig:
    """The preset's config (B0 for both presets) with ``overrides``; unknown keys are errors.
    The tiny B0 loads the MiT-B0 stand-in unless ``mit_checkpoint`` is given (None: none)."""
    known = {f.name for f in dataclasses.fields(CMNeXtConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown CMNeXt option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    if isinstance(overrides.get("variant"), str):
        overrides["variant"] = overrides["variant"].lower()
    if preset == "tiny" and overrides.get("variant", "b0") == "b0" and "mit_checkpoint" not in overrides:
        overrides["mit_checkpoint"] = str(MIT_B0_TINY)
    config = CMNeXtConfig(**overrides)
    config.validate()
    return config


def _init_weights(m: nn.Module) -> None:
    """The reference's ``BaseModel._init_weights``, applied to the whole model. Its conv branch
    computes ``fan_out // m.groups`` without assigning it, so depth-wise convs use the full
    ``k*k*out`` fan-out; kept as is."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class CMNeXt(SegmentationMethod):
    separable_encoder = False  # modalities are mixed from stage 1 on
    supports_missing_modalities = False  # a missing modality is zero-filled
    size_multiple = 32
    versioned_packages: tuple[str, ...] = ()

    def __init__(self, info: DatasetInfo, modalities: Sequence[str], preset: str, config: CMNeXtConfig) -> None:
        super().__init__(info, modalities, preset)
        config.validate()
        rgb = [m for m in self.modalities if m in RGB_NAMES]
        if not rgb:
            raise ConfigError(
                f"cmnext needs the RGB camera among its modalities (one of {', '.join(RGB_NAMES)}), "
                f"as the reference (its MiT stream is the RGB one); got {', '.join(self.modalities)}"
            )
        for name in self.modalities:
            channels = info.modality(name).channels
            if channels != 3:
                raise ConfigError(f"cmnext: modality {name!r} has {channels} channels; the reference's "
                                  "patch embeddings take 3-channel inputs")
        self.config = config
        self.variant = config.variant
        # Reference order: the camera first, then the extra modalities (their per-modality
        # norms ``ln_0, ln_1, ...`` follow this order).
        self.rgb_modality = rgb[0]
        self.extra_modalities = tuple(m for m in self.modalities if m != self.rgb_modality)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.init_seed)
            self.backbone = CMNeXtBackbone(config.variant, len(self.extra_modalities), config.drop_path_rate,
                                           config.extra_reshape)
            self.decode_head = SegFormerHead(self.backbone.channels, HEAD_EMBED[config.variant], self.num_classes)
            self.apply(_init_weights)
        self.frozen_source = f"seed:{config.init_seed}"
        self.pretrained_summary: dict[str, Any] | None = None
        if config.mit_checkpoint:
            self.load_pretrained(config.mit_checkpoint)

    # --- training and evaluation settings --------------------------------------------------
    @classmethod
    def train_defaults(cls, preset: str) -> dict[str, Any]:
        """The paper's common recipe (``SegmentationMethod.train_defaults``) in every preset;
        ``recipe: reference`` changes it to DELIVER's own (:data:`REFERENCE_RECIPE`)."""
        if preset not in ("tiny", "paper"):
            raise ConfigError(f"unknown preset {preset!r}")
        return super().train_defaults(preset)

    def training_defaults(self) -> dict[str, Any]:
        return recipe_defaults(self.train_defaults(self.preset), self.config.recipe, REFERENCE_RECIPE, self.preset)

    @classmethod
    def eval_size(cls, preset: str) -> int | None:
        if preset == "tiny":
            return None
        if preset == "paper":
            return 1024  # the reference evaluates at 1024x1024
        raise ConfigError(f"unknown preset {preset!r}")

    def optimizer_groups(self, lr: float) -> list[dict[str, Any]]:
        """As DELIVER ``semseg/optimizers.py`` ``get_optimizer``: ONE learning rate for the whole
        model (backbone and head alike, no 10x head rate), weight decay on parameters with
        more than one dimension and none on 1-D ones (biases, norms, layer scales)."""
        decay, no_decay = [], []
        for p in self.parameters():
            if p.requires_grad:
                (no_decay if p.dim() == 1 else decay).append(p)
        return [{"params": decay, "lr": lr}, {"params": no_decay, "lr": lr, "weight_decay": 0.0}]

    # --- the interface ------------------------------------------------------------------------
    def _check_input(self, modality: str, x: torch.Tensor) -> None:
        self.check_subset([modality])
        if x.ndim != 4 or x.shape[1] != 3:
            raise ConfigError(f"cmnext: {modality} input must be (B, 3, H, W), got {tuple(x.shape)}")

    def encode(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """CMNeXt fuses modalities inside its encoder, so per-modality features do not exist:
        this checks the input and returns it; :meth:`decode` runs the whole network."""
        self._check_input(modality, x)
        return x

    def network_inputs(self, features: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        """The reference's input list ``[rgb, extra_1, ...]``; absent modalities as zeros."""
        self.check_subset(list(features))
        like = next(iter(features.values()))
        return [features[m] if m in features else torch.zeros_like(like)
                for m in (self.rgb_modality, *self.extra_modalities)]

    def decode(self, features: Mapping[str, torch.Tensor], image_size: tuple[int, int]) -> MethodOutput:
        stages = self.backbone(self.network_inputs(features))
        logits = upsample_logits(self.decode_head(stages), image_size)
        return MethodOutput(logits=logits, embedding=stages[-1])

    def loss(self, output: MethodOutput, target: torch.Tensor) -> torch.Tensor:
        # DELIVER trains with OhemCrossEntropy (thresh 0.7) on the upsampled logits.
        return ohem_cross_entropy(output.logits, target, self.info.ignore_index, self.config.ohem_thresh)

    # --- pretrained weights -----------------------------------------------------------------------
    def load_pretrained(self, path: str | Path) -> dict[str, Any]:
        """Load SegFormer's ImageNet MiT weights (``mit_b0.pth`` / ``mit_b2.pth``) into the RGB
        stream, strictly.

        The file's keys are MiT's (``patch_embed1.proj.weight``, ``block1.0.attn.q.weight``,
        ``norm1.weight``, ...), identical to this backbone's RGB-stream names. Its ImageNet
        classifier (``head.*``) is not used. As the reference (``semseg/models/cmnext.py``
        ``load_dualpath_model``, where ``extra_pretrained`` is ``None``), the extra-modality
        branch, FRM/FFM and the decode head keep their random initialisation. Every RGB-stream
        tensor must be in the file with its shape, and the file may hold nothing else: missing,
        unexpected and mismatched keys are named in a :class:`ConfigError`, and nothing is
        copied unless all checks pass.
        """
        path = Path(path)
        blob = read_weights(path, "MiT checkpoint", wrappers=("state_dict", "model"))  # as the reference unwraps
        state = {k: v for k, v in blob.items() if not k.startswith("head.")}
        own = {k: v for k, v in self.backbone.state_dict().items() if _is_mit_key(k)}
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        mismatched = sorted(f"{k} {tuple(state[k].shape)} (expected {tuple(own[k].shape)})"
                            for k in set(own) & set(state) if state[k].shape != own[k].shape)
        if missing or unexpected or mismatched:
            parts = []
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("mismatched", mismatched)):
                if keys:
                    more = f" and {len(keys) - 10} more" if len(keys) > 10 else ""
                    parts.append(f"{label}: {', '.join(keys[:10])}{more}")
            raise ConfigError(
                f"MiT checkpoint {path} does not fit the CMNeXt-{self.variant.upper()} RGB stream "
                f"(SegFormer mit_{self.variant}.pth key names expected); " + "; ".join(parts)
            )
        bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise ConfigError(f"MiT checkpoint {path} holds NaN or infinite values in {', '.join(bad[:5])}")
        targets = self.backbone.state_dict()
        with torch.no_grad():
            for key, value in state.items():
                targets[key].copy_(value)
        digest = sha256(path)
        self.frozen_source = f"mit:{digest[:16]}"
        self.pretrained_summary = {"path": str(path), "sha256": digest, "loaded": len(state),
                                   "ignored": sorted(k for k in blob if k.startswith("head."))}
        return self.pretrained_summary

    # --- the tiny stand-in (mlebench/pretrain.py) ------------------------------------------------
    def prepare_pretraining(self) -> None:
        """The whole RGB-only network learns (MiT backbone and SegFormer head)."""
        self.requires_grad_(True)

    def stand_in_state(self) -> dict[str, torch.Tensor]:
        """The MiT (RGB stream) weights under SegFormer's ``mit_b0.pth`` key names."""
        return {k: v.detach().clone() for k, v in self.backbone.state_dict().items() if _is_mit_key(k)}

    # --- bookkeeping ----------------------------------------------------------------------------
    def parameter_groups(self) -> dict[str, Any]:
        def params(mods: list[nn.Module]) -> list[nn.Parameter]:
            return [p for m in mods for p in m.parameters()]

        groups: dict[str, Any] = {"backbone": params(self.backbone.rgb_modules())}
        if self.extra_modalities:
            groups["extra_branch"] = params(self.backbone.extra_modules())
            groups["fusion"] = params(self.backbone.fusion_modules())
        groups["head"] = self.decode_head
        return groups

    def config_dict(self) -> dict[str, Any]:
        config = dataclasses.asdict(self.config)
        config.pop("mit_checkpoint")  # where the initial weights came from is run metadata
        return config


def _is_mit_key(key: str) -> bool:
    """A key of the RGB stream, named as in SegFormer's MiT (``patch_embed1``, ``block1``, ``norm1``)."""
    return key.split(".")[0].rstrip("1234") in ("patch_embed", "block", "norm")
