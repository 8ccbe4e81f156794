"""MLE-SAM: SAM2 with per-modality LoRA experts, routed multi-scale fusion and a dual decoder.

Encoder: sam2's Hiera trunk and FPN neck (``ImageEncoder`` with ``scalp=1``), frozen, with
per-modality LoRA experts on every block's q and v (``lora.py``). Per modality it yields the
paper's three maps: SFM (stride 16, ``d_model`` channels, plus SAM2's ``no_mem_embed`` as the
image predictor adds it), IFP (stride 8) and FFP (stride 4), the latter two reduced by the mask
decoder's own 1x1 convs ``conv_s1`` / ``conv_s0`` exactly where ``SAM2Base.forward_image`` applies
them. Fusion: ``fusion.py``. Decoder: ``decoder.py``.

Module names follow ``SAM2Base`` (``image_encoder``, ``sam_prompt_encoder``,
``sam_mask_decoder``, ``no_mem_embed``) so that a SAM2 checkpoint's keys map one to one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import torch
from sam2.modeling.backbones.hieradet import Hiera
from sam2.modeling.backbones.image_encoder import FpnNeck, ImageEncoder
from sam2.modeling.position_encoding import PositionEmbeddingSine
from torch import nn

from methods.losses import ohem_cross_entropy
from methods.mlesam.decoder import NO_PROMPT_MODES, AuxiliaryHead, build_sam_heads, semantic_mask_logits
from methods.mlesam.fusion import FUSION_MODES, ROUTERS, MultiModalFusion
from methods import ASSETS
from methods.lora import ModalityLoRA
from mlebench.data.base import DatasetInfo
from mlebench.errors import ConfigError
from mlebench.method import MethodOutput, SegmentationMethod, upsample_logits


@dataclass(frozen=True)
class HieraSpec:
    """Arguments of sam2's ``Hiera`` (see ``sam2/modeling/backbones/hieradet.py``)."""

    embed_dim: int
    num_heads: int
    stages: tuple[int, ...]
    window_spec: tuple[int, ...]
    global_att_blocks: tuple[int, ...]
    window_pos_embed_bkg_spatial_size: tuple[int, int]

    @property
    def channel_list(self) -> list[int]:
        """Output widths, deepest first (what ``FpnNeck.backbone_channel_list`` expects)."""
        return [self.embed_dim * 2**i for i in reversed(range(len(self.stages)))]

    def validate(self) -> None:
        ends = [sum(self.stages[: i + 1]) - 1 for i in range(len(self.stages))]
        q_pool_blocks = {e + 1 for e in ends[:-1]}
        bad = sorted(q_pool_blocks & set(self.global_att_blocks))
        if bad:
            # In sam2's Hiera a q-pool block's window size is derived from the previous
            # stage's; with window 0 (global) the unpartition step breaks.
            raise ConfigError(f"Hiera: global-attention blocks {bad} are stage-start q-pool blocks")
        if max(self.global_att_blocks, default=0) >= sum(self.stages):
            raise ConfigError(f"Hiera: global-attention block index beyond {sum(self.stages)} blocks")


# sam2.1_hiera_b+.yaml: embed_dim 112, num_heads 2, Hiera's defaults for the rest.
HIERA_BASE_PLUS = HieraSpec(112, 2, (2, 3, 16, 3), (8, 4, 14, 7), (12, 16, 20), (14, 14))
# A 7-block Hiera for CPU runs at 128-256 px; block 5 (last of stage 3) attends globally.
HIERA_TINY = HieraSpec(32, 1, (1, 2, 3, 1), (8, 4, 8, 4), (5,), (7, 7))


MISSING_POLICIES = ("drop", "zero")
AUX_COMBINES = ("mean", "main", "learned")


@dataclass(frozen=True)
class MLESAMConfig:
    """Every MLE-SAM setting. Values the paper does not give are marked (choice)."""

    image_size: int  # training / positional-embedding size; inputs must be multiples of 32
    trunk: HieraSpec
    d_model: int = 256
    decoder_depth: int = 2
    decoder_heads: int = 8
    decoder_mlp_dim: int = 2048
    lora_rank: int = 32
    lora_alpha: float = 32.0  # (choice) scaling alpha / rank = 1
    fusion: str = "unified"  # unified | integrated | weighted
    top_k: int = 2  # (choice)
    router: str = "channel"  # (choice) channel | scalar
    aux_head: bool = True
    aux_embed_dim: int = 32  # (choice) matches Tab. V's +0.02M for the head
    aux_dropout: float = 0.1  # (choice)
    # (choice) how the prediction combines the two pathways (docs/mlesam.md, measured): learned:
    # (1 - w) main + w aux with w = sigmoid(g), g trained by an extra OHEM term on the combined
    # prediction with both pathways detached; mean: w fixed at aux_output_weight (0.5 until
    # issue 21: it lost to the no-aux ablation); main: the main pathway alone (the aux head only
    # adds its loss in training, as mmseg's auxiliary heads)
    aux_combine: str = "learned"
    aux_output_weight: float = 0.5  # (choice) w of "mean", and where "learned" starts
    # (choice) the learned gate's learning rate as a multiple of lr, without weight decay: at lr
    # 1e-3 Adam moves one scalar by about 1e-3 a step, too slow for w to leave 0.5 in 500 steps
    aux_gate_lr_scale: float = 100.0
    main_loss_weight: float = 1.0  # lambda_1 (choice)
    aux_loss_weight: float = 0.4  # lambda_2 (choice, mmseg's usual auxiliary weight)
    ohem_thresh: float = 0.7
    freeze_decoder_transformer: bool = True  # the paper: "a frozen transformer block"
    grouped_lora: bool = True  # run all modalities through the trunk in one pass
    sam2_checkpoint: str | None = None
    init_seed: int = 0  # seed of the frozen parts' random init when no checkpoint is given
    # (choice) a missing modality is dropped from fusion; "zero" feeds it as an all-zero
    # (normalised) input instead, the policy of early-fusion baselines, for like-for-like studies
    missing_modality: str = "drop"
    # the decoder's sparse tokens without a prompt: SAM2's two "not a point" tokens, or none
    # ("empty", this suite's behaviour before); see methods/mlesam/decoder.py
    no_prompt: str = "sam2"

    def validate(self) -> None:
        self.trunk.validate()
        if self.fusion not in FUSION_MODES:
            raise ConfigError(f"unknown fusion {self.fusion!r}; known: {', '.join(FUSION_MODES)}")
        if self.router not in ROUTERS:
            raise ConfigError(f"unknown router {self.router!r}; known: {', '.join(ROUTERS)}")
        if self.image_size % 32:
            raise ConfigError(f"image_size {self.image_size} is not a multiple of 32")
        if self.lora_rank < 1 or self.top_k < 1:
            raise ConfigError("lora_rank and top_k must be >= 1")
        if self.missing_modality not in MISSING_POLICIES:
            raise ConfigError(
                f"unknown missing_modality {self.missing_modality!r}; known: {', '.join(MISSING_POLICIES)}"
            )
        if self.no_prompt not in NO_PROMPT_MODES:
            raise ConfigError(f"unknown no_prompt {self.no_prompt!r}; known: {', '.join(NO_PROMPT_MODES)}")
        if self.aux_combine not in AUX_COMBINES:
            raise ConfigError(f"unknown aux_combine {self.aux_combine!r}; known: {', '.join(AUX_COMBINES)}")
        if self.aux_combine == "learned" and not 0.0 < self.aux_output_weight < 1.0:
            raise ConfigError(f"aux_combine learned starts at aux_output_weight {self.aux_output_weight}: "
                              "it must be in (0, 1)")
        if self.aux_gate_lr_scale <= 0:
            raise ConfigError(f"aux_gate_lr_scale {self.aux_gate_lr_scale} must be > 0")
        if not 0.0 <= self.aux_output_weight <= 1.0:
            raise ConfigError(f"aux_output_weight {self.aux_output_weight} is not in [0, 1]")


# Made by `mlebench pretrain --method mlesam`; the tiny preset's frozen SAM2.
TINY_SAM2_CHECKPOINT = ASSETS / "sam2_hiera_tiny_synthetic.pt"
#: the SAM2 parts (sam2's key names) a SAM2 checkpoint and the tiny stand-in hold
SAM2_PREFIXES = ("image_encoder.", "sam_prompt_encoder.", "sam_mask_decoder.", "no_mem_embed")

PRESET_CONFIGS = {
    "paper": MLESAMConfig(image_size=1024, trunk=HIERA_BASE_PLUS),
    "tiny": MLESAMConfig(
        image_size=256, trunk=HIERA_TINY, d_model=64, decoder_heads=4, decoder_mlp_dim=256,
        lora_rank=8, lora_alpha=8.0, sam2_checkpoint=str(TINY_SAM2_CHECKPOINT),
    ),
}


def make_config(preset: str, **overrides: Any) -> MLESAMConfig:
    """The preset's config with ``overrides`` applied; unknown keys are a ConfigError."""
    base = PRESET_CONFIGS[preset]
    known = {f.name for f in dataclasses.fields(MLESAMConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown MLE-SAM option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    config = dataclasses.replace(base, **overrides)
    config.validate()
    return config


class ModalityFeatures(NamedTuple):
    """One modality's multi-scale maps: SFM (stride 16), IFP (8), FFP (4)."""

    sfm: torch.Tensor
    ifp: torch.Tensor
    ffp: torch.Tensor


class MLESAM(SegmentationMethod):
    size_multiple = 32  # Hiera tiles its 8x8 windowed positional embedding at stride 4
    versioned_packages = ("sam2",)
    def __init__(self, info: DatasetInfo, modalities: Sequence[str], preset: str, config: MLESAMConfig) -> None:
        super().__init__(info, modalities, preset)
        self.config = config
        self.variant = config.fusion + ("+aux" if config.aux_head else "")
        self.supports_missing_modalities = config.missing_modality == "drop"
        # The frozen parts come from a SAM2 checkpoint or, without one, from a fixed seed, so
        # that a checkpoint of the trainable weights alone always reproduces the model.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.init_seed)
            self._build_sam2_parts(config)
        self.frozen_source = f"seed:{config.init_seed}"
        if config.sam2_checkpoint:
            from methods.mlesam.checkpoint import load_sam2_weights

            self.sam2_load_summary = load_sam2_weights(self, Path(config.sam2_checkpoint))
            self.frozen_source = f"sam2:{self.sam2_load_summary['sha256'][:16]}"
        d = config.d_model
        self.lora = ModalityLoRA(self.image_encoder.trunk, self.modalities, config.lora_rank, config.lora_alpha)
        levels = (d, d // 4, d // 8)  # SFM, IFP (conv_s1), FFP (conv_s0)
        self.fusion = MultiModalFusion(levels, config.fusion, config.top_k, config.router)
        self.aux_head = (
            AuxiliaryHead(levels, config.aux_embed_dim, self.num_classes, config.aux_dropout)
            if config.aux_head
            else None
        )
        # the learned combination's weight, as a logit (sigmoid(aux_gate) = w)
        self.aux_gate = (
            nn.Parameter(torch.logit(torch.tensor(config.aux_output_weight)))
            if config.aux_head and config.aux_combine == "learned"
            else None
        )
        self._freeze()

    def _build_sam2_parts(self, config: MLESAMConfig) -> None:
        spec, d = config.trunk, config.d_model
        trunk = Hiera(
            embed_dim=spec.embed_dim,
            num_heads=spec.num_heads,
            stages=spec.stages,
            window_spec=spec.window_spec,
            global_att_blocks=spec.global_att_blocks,
            window_pos_embed_bkg_spatial_size=spec.window_pos_embed_bkg_spatial_size,
        )
        neck = FpnNeck(
            position_encoding=PositionEmbeddingSine(num_pos_feats=d, normalize=True, temperature=10000),
            d_model=d,
            backbone_channel_list=spec.channel_list,
            fpn_top_down_levels=[2, 3],
            fpn_interp_model="nearest",
        )
        self.image_encoder = ImageEncoder(trunk=trunk, neck=neck, scalp=1)
        self.sam_prompt_encoder, self.sam_mask_decoder = build_sam_heads(
            self.num_classes, d, config.decoder_depth, config.decoder_heads, config.decoder_mlp_dim,
            image_embedding_size=config.image_size // 16, image_size=config.image_size,
        )
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, d))

    def _freeze(self) -> None:
        frozen = [self.image_encoder, self.sam_prompt_encoder, self.sam_mask_decoder.iou_prediction_head]
        frozen.append(self.sam_mask_decoder.iou_token)  # only feeds the unused IoU head's token
        if self.config.freeze_decoder_transformer:
            frozen.append(self.sam_mask_decoder.transformer)
        for module in frozen:
            module.requires_grad_(False)
        self.no_mem_embed.requires_grad_(False)

    # --- encode -------------------------------------------------------------------------
    def _encode_stacked(self, x: torch.Tensor, active: Sequence[str]) -> ModalityFeatures:
        with self.lora.active(active):
            fpn = self.image_encoder(x)["backbone_fpn"]  # [stride 4, 8, 16]
        decoder = self.sam_mask_decoder
        sfm = fpn[2] + self.no_mem_embed.reshape(1, -1, 1, 1).to(fpn[2].dtype)
        return ModalityFeatures(sfm=sfm, ifp=decoder.conv_s1(fpn[1]), ffp=decoder.conv_s0(fpn[0]))

    def _check_input(self, modality: str, x: torch.Tensor) -> None:
        self.check_subset([modality])
        if x.ndim != 4 or x.shape[1] != 3:
            raise ConfigError(f"mlesam: {modality} input must be (B, 3, H, W), got {tuple(x.shape)}")
        if x.shape[-1] % 32 or x.shape[-2] % 32:
            raise ConfigError(
                f"mlesam: input size {tuple(x.shape[-2:])} must be a multiple of 32 (Hiera's "
                "windowed positional embedding tiles 8x8 windows at stride 4)"
            )

    def encode(self, modality: str, x: torch.Tensor) -> ModalityFeatures:
        self._check_input(modality, x)
        return self._encode_stacked(x, [modality])

    def encode_many(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, ModalityFeatures]:
        names = list(inputs)
        for name in names:
            self._check_input(name, inputs[name])
        if not self.config.grouped_lora or len(names) == 1:
            return {m: self._encode_stacked(inputs[m], [m]) for m in names}
        feats = self._encode_stacked(torch.cat([inputs[m] for m in names]), names)
        chunks = [level.chunk(len(names)) for level in feats]
        return {m: ModalityFeatures(*(c[i] for c in chunks)) for i, m in enumerate(names)}

    # --- decode -------------------------------------------------------------------------
    def decode(self, features: Mapping[str, ModalityFeatures], image_size: tuple[int, int]) -> MethodOutput:
        present = [m for m in self.modalities if m in features]  # a fixed order
        self.check_subset(list(features))
        levels = [[features[m][level] for m in present] for level in range(3)]
        sfm, ifp, ffp = self.fusion(levels)
        def up(x: torch.Tensor) -> torch.Tensor:
            return upsample_logits(x, image_size)

        main = semantic_mask_logits(self.sam_prompt_encoder, self.sam_mask_decoder, sfm, ifp, ffp,
                                    self.config.no_prompt)
        if self.aux_head is None:
            logits = up(main)
            return MethodOutput(logits=logits, embedding=sfm, main_logits=logits)
        aux = self.aux_head(sfm, ifp, ffp)
        # Bilinear upsampling is linear: combining at stride 4 and upsampling once equals
        # combining the upsampled logits, at a third of the full-resolution work.
        logits = up(self.combine(main, aux))
        if not self.training:
            return MethodOutput(logits=logits, embedding=sfm)
        return MethodOutput(logits=logits, embedding=sfm, aux_logits=up(aux), main_logits=up(main))

    def aux_weight(self) -> float | torch.Tensor:
        """The auxiliary pathway's share w of the prediction (0 for ``aux_combine: main``)."""
        combine = self.config.aux_combine
        if combine == "main":
            return 0.0
        if combine == "learned":
            return torch.sigmoid(self.aux_gate)
        return self.config.aux_output_weight

    def combine(self, main: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        """The prediction from the two pathways' logits: ``(1 - w) main + w aux``."""
        w = self.aux_weight()
        return main if isinstance(w, float) and w == 0.0 else (1 - w) * main + w * aux

    def loss(self, output: MethodOutput, target: torch.Tensor) -> torch.Tensor:
        """Eq. 14: l1 OHEM(main) + l2 OHEM(aux); with ``aux_combine: learned`` plus OHEM of the
        combined prediction, through the weight only (both pathways' logits detached)."""
        cfg = self.config
        main = output.main_logits if output.main_logits is not None else output.logits
        total = cfg.main_loss_weight * ohem_cross_entropy(main, target, self.info.ignore_index, cfg.ohem_thresh)
        if output.aux_logits is not None:
            total = total + cfg.aux_loss_weight * ohem_cross_entropy(
                output.aux_logits, target, self.info.ignore_index, cfg.ohem_thresh
            )
            if self.aux_gate is not None:
                combined = self.combine(main.detach(), output.aux_logits.detach())
                total = total + ohem_cross_entropy(combined, target, self.info.ignore_index, cfg.ohem_thresh)
        return total

    # --- bookkeeping --------------------------------------------------------------------
    # --- the tiny stand-in (mlebench/pretrain.py) ----------------------------------------
    def prepare_pretraining(self) -> None:
        """The whole SAM2 (Hiera trunk, FPN neck, mask decoder with its two-way transformer) and
        the auxiliary head learn, on RGB; the LoRA deltas stay zero so the trunk itself learns."""
        for name, param in self.named_parameters():
            param.requires_grad_(name.startswith(SAM2_PREFIXES) or name.startswith("aux_head."))
        self.image_encoder.requires_grad_(True)
        self.lora.requires_grad_(False)

    def stand_in_state(self) -> dict[str, torch.Tensor]:
        """A SAM2-format state dict (sam2's key names), as ``sam2_checkpoint`` reads it."""
        return {k: v.detach().clone() for k, v in self.state_dict().items() if k.startswith(SAM2_PREFIXES)}

    def optimizer_groups(self, lr: float) -> list[dict[str, Any]]:
        """Every trainable parameter at ``lr``; the learned combination's gate (if any) at
        ``aux_gate_lr_scale * lr`` and without weight decay (decay would pull w back to 0.5)."""
        rest = [p for p in self.parameters() if p.requires_grad and p is not self.aux_gate]
        groups: list[dict[str, Any]] = [{"params": rest, "lr": lr}]
        if self.aux_gate is not None:
            groups.append({"params": [self.aux_gate], "lr": lr * self.config.aux_gate_lr_scale, "weight_decay": 0.0})
        return groups

    def parameter_groups(self) -> dict[str, Any]:
        groups: dict[str, Any] = {f"lora.{m}": self.lora.parameters_of(m) for m in self.modalities}
        groups["fusion"] = self.fusion
        groups["decoder"] = self.sam_mask_decoder
        if self.aux_head is not None:
            groups["aux_head"] = self.aux_head
        if self.aux_gate is not None:
            groups["aux_gate"] = [self.aux_gate]
        return groups

    def config_dict(self) -> dict[str, Any]:
        config = dataclasses.asdict(self.config)
        config.pop("sam2_checkpoint")  # where the frozen weights came from is run metadata
        return config
