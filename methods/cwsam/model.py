"""CWSAM (ClassWise-SAM-Adapter), after the reference code xypu98/CWSAM, as a multi-modal baseline.

Encoder: segment_anything's ``ImageEncoderViT`` (SAM ViT-B in the ``paper`` preset), frozen, and
run block by block by :meth:`CWSAM._encode` (patch embedding, absolute positional embedding
(resized when the token grid differs from ``image_size / 16``, bilinearly as SAMed does by
default: ``pos_embed_resize``; the reference only runs at 1024), the blocks, the neck),
with three trainable additions as in the reference's ``image_encoder.py``:

* a **space adapter** after attention in every block: ``y + fc2(GELU(fc1(y)))`` on the attention
  output ``y`` (before the window un-partition and the residual), width ``dim -> dim/4 -> dim``;
* a **MLP adapter** parallel to the MLP in every block: ``x + mlp(n) + s * fc2(GELU(fc1(n)))``
  with ``n = norm2(x)``, no skip of its own, ``s = 0.5`` (the reference ``Block``'s ``scale``);
* the **prompt generator**: ``embedding_generator`` (Linear ``dim -> dim/r``) of the patch
  embedding (before the positional embedding), plus ``handcrafted_generator`` (a ``16x16``
  stride-16 conv ``3 -> dim/r``) of the FFT-filtered image, summed; per block ``i`` a
  ``lightweight_mlps[i]`` (Linear ``dim/r -> dim/r`` + GELU) and one ``shared_mlp`` (Linear
  ``dim/r -> dim``) give the prompt added to the tokens before block ``i``; ``r = 32``
  (the reference's ``scale_factor``), FFT mask a centred square of area ``0.25`` (``freq_nums``).
  The patch embedding reaches ``embedding_generator`` in the reference's scrambled token order
  (``init_embeddings``, image_encoder.py l. 305-306 reshapes a (B, H, W, C) tensor as (N, C, H*W)):
  ``embedding_reshape="reference"`` (default) reproduces it, ``"fixed"`` projects each token's
  own vector. The policy for every reference quirk is the same (docs/baselines.md): faithful by
  default, so reference weights behave as trained, the fix as an option.

The adapters are attached with forward hooks on each block's frozen ``attn`` and ``mlp``, so the
ViT and its module names stay segment_anything's (a SAM checkpoint loads one to one) and with no
modality active the encoder *is* the plain frozen ViT.

**FFT band.** The reference's prompt generator is configured ``prompt_type='highpass'``, but its
``fft`` returns the *low-pass* image ``|ifft2(ifftshift(fftshift(fft2(x)) * mask))|`` (the
high-pass one is computed and discarded). We follow the code: ``fft_band="low"`` (default);
``fft_band="high"`` uses ``1 - mask``.

Decoder (the reference's class-wise ``MaskDecoder``): SAM's two-way transformer on the image
embedding plus the no-mask dense embedding, with SAM's output tokens (IoU token and four mask
tokens; the reference calls it with ``multimask_output=False``, so only mask token 0 and
hypernetwork MLP 0 produce the output). ``output_upscaling`` runs on both the transformer's
output and its input (skip), the two are concatenated (``d/8 + d/8 = d/4`` channels) and
``cls_upscaling`` (ConvT 2x2 s2, LayerNorm2d, GELU, Conv 7x7 s2 to ``d/8 * K`` channels, GELU)
gives, per pixel, one ``d/8`` vector per class; the hypernetwork output dotted with each class's
vector gives K logits at stride 4 (channel ``c * K + k`` belongs to class ``k``, the reference's
``view`` layout), upsampled bilinearly to the input size. The whole decoder is trainable (the
reference freezes only the image encoder), and so is the no-mask embedding (in the reference it
sits outside the encoder); the positional encoding (a fixed random Gaussian matrix) is frozen.

Trainable parameters, counted as used. The reference also builds, and counts as trainable, a
``Depth_Adapter`` in every block that its forward never calls, the IoU prediction head whose
output it discards, and hypernetwork MLPs 1-3 of the unused mask tokens; none is built here, so
the parameter report counts only what takes part in the forward pass (for ViT-B the unused depth
adapters alone would add 12 x 295,872 = 3,550,464). The four mask tokens are kept: tokens 1-3
still attend with token 0 in the transformer.

Multi-modality (the paper does not say how CWSAM is made multi-modal), option ``fusion``:

* ``"separate"`` (default): one set of adapters and one prompt generator per modality on the one
  shared frozen ViT, one class-wise decoder shared by all modalities; the prediction is the mean
  of the per-modality logits over the modalities present. This is how the paper treats its
  SAM-LoRA baseline (per-modality tuning of a shared frozen SAM), and it keeps the encoder
  separable: ``encode(m, x)`` depends on modality ``m`` only, so the evaluator's feature cache works
  and any non-empty subset of the training modalities can be decoded.
* ``"shared"``: one set of adapters and one prompt generator for all modalities; otherwise the
  same (per-modality decoding, logits averaged).

Loss and recipe (``recipe``, methods/recipes.py): by default the paper's common recipe, OHEM
cross-entropy on the averaged logits. ``recipe: reference`` trains as xypu98/CWSAM does:
``nn.CrossEntropyLoss`` (models/sam.py l. 157-164, 280), AdamW lr 2e-4 with a cosine schedule
to 1e-7 and no warm-up, batch 1, 200 epochs. Both shipped configs set a per-class
``loss_weight`` (l. 77) for their 5 or 10 SAR classes; those weights have no counterpart on
DELIVER, MUSES or MCubeS, so the reference recipe's cross-entropy is unweighted.

Frozen weights: a SAM checkpoint in segment_anything's format (``sam_checkpoint`` /
:meth:`CWSAM.load_pretrained`, strict and explained) or, without one, a fixed seed
(``frozen_source`` "sam:<sha256 prefix>" or "seed:N").
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT, TwoWayTransformer
from torch import nn

from methods.losses import ohem_cross_entropy
from methods.recipes import check_recipe, recipe_defaults
from methods.cwsam.parts import BlockAdapters, ClassWiseMaskDecoder, PromptEmbeddings, PromptGenerator
from methods.sam_vit import POS_EMBED_RESIZE, VIT_PRESETS, SAMViTRecipe, resize_pos_embed
from mlebench.data.base import DatasetInfo
from mlebench.errors import ConfigError
from mlebench.method import MethodOutput, SegmentationMethod, upsample_logits
from mlebench.weights import config_from_preset, copy_strict, read_weights, sha256

FUSIONS = ("separate", "shared")
#: a reference quirk: reproduced ("reference", the default) or corrected ("fixed")
QUIRK_POLICIES = ("reference", "fixed")
FFT_BANDS = ("low", "high")
SHARED_KEY = "shared"


@dataclass(frozen=True)
class CWSAMConfig:
    """Every CWSAM setting; reference values unless marked (choice)."""

    image_size: int  # the positional embedding's size (SAM: 1024)
    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int
    out_chans: int  # the neck's and the decoder's width
    patch_size: int = 16
    mlp_ratio: float = 4.0
    use_rel_pos: bool = True
    decoder_depth: int = 2
    decoder_heads: int = 8
    decoder_mlp_dim: int = 2048
    num_mask_tokens: int = 4  # SAM's 3 multimask + 1 (only token 0 predicts)
    adapter_ratio: float = 0.25  # dim -> dim/4 -> dim
    mlp_adapter_scale: float = 0.5
    prompt_scale_factor: int = 32  # prompt generator width dim / 32
    freq_nums: float = 0.25  # area of the FFT mask's centred square
    fft_band: str = "low"  # what the reference's fft returns (see the module docstring)
    fusion: str = "separate"  # (choice) separate | shared
    zero_init_adapters: bool = False  # (choice, off in the reference) start as the frozen ViT
    # the reference's token-scrambling reshape of the patch embedding (see parts.py), or "fixed"
    embedding_reshape: str = "reference"
    recipe: str = "paper"  # paper | reference (methods/recipes.py)
    pos_embed_resize: str = "bilinear"  # (choice: the reference never resizes) SAMed's mode; or bicubic
    sam_checkpoint: str | None = None
    init_seed: int = 0  # seed of the frozen parts when no checkpoint is given

    def validate(self) -> None:
        if self.fusion not in FUSIONS:
            raise ConfigError(f"unknown fusion {self.fusion!r}; known: {', '.join(FUSIONS)}")
        if self.fft_band not in FFT_BANDS:
            raise ConfigError(f"unknown fft_band {self.fft_band!r}; known: {', '.join(FFT_BANDS)}")
        if self.embedding_reshape not in QUIRK_POLICIES:
            raise ConfigError(
                f"unknown embedding_reshape {self.embedding_reshape!r}; known: {', '.join(QUIRK_POLICIES)}"
            )
        check_recipe("cwsam", self.recipe)
        if self.pos_embed_resize not in POS_EMBED_RESIZE:
            raise ConfigError(
                f"unknown pos_embed_resize {self.pos_embed_resize!r}; known: {', '.join(POS_EMBED_RESIZE)}"
            )
        if self.image_size % self.patch_size:
            raise ConfigError(f"image_size {self.image_size} is not a multiple of {self.patch_size}")
        if self.embed_dim % self.prompt_scale_factor or self.embed_dim // self.prompt_scale_factor < 1:
            raise ConfigError(f"embed_dim {self.embed_dim} is not divisible by {self.prompt_scale_factor}")
        if self.out_chans % 8:
            raise ConfigError(f"out_chans {self.out_chans} is not a multiple of 8")
        if any(not 0 <= i < self.depth for i in self.global_attn_indexes):
            raise ConfigError(f"global_attn_indexes {self.global_attn_indexes} outside 0..{self.depth - 1}")
        if not 0.0 < self.freq_nums <= 1.0:
            raise ConfigError(f"freq_nums {self.freq_nums} is not in (0, 1]")


PRESET_CONFIGS = {
    # the shared SAM ViT (methods/sam_vit.py) and the reference's decoder
    "paper": CWSAMConfig(**VIT_PRESETS["paper"]),
    # (choice) a small decoder, prompt width 96/8 = 12
    "tiny": CWSAMConfig(**VIT_PRESETS["tiny"], decoder_heads=4, decoder_mlp_dim=256, prompt_scale_factor=8),
}


def make_config(preset: str, **overrides: Any) -> CWSAMConfig:
    """The preset's config with ``overrides``; unknown keys are a ConfigError listing the known."""
    return config_from_preset(PRESET_CONFIGS, preset, overrides, "CWSAM")


# --- the method -------------------------------------------------------------------------------
class CWSAM(SAMViTRecipe, SegmentationMethod):
    size_multiple = 16  # the ViT's patch size
    versioned_packages = ("segment-anything",)

    def __init__(self, info: DatasetInfo, modalities: Sequence[str], preset: str, config: CWSAMConfig) -> None:
        super().__init__(info, modalities, preset)
        config.validate()
        self.config = config
        self.variant = config.fusion
        c = config
        # The frozen parts come from a SAM checkpoint or a fixed seed, so that a checkpoint of the
        # trainable weights alone reproduces the model.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c.init_seed)
            self.image_encoder = ImageEncoderViT(
                img_size=c.image_size, patch_size=c.patch_size, in_chans=3, embed_dim=c.embed_dim, depth=c.depth,
                num_heads=c.num_heads, mlp_ratio=c.mlp_ratio, out_chans=c.out_chans, qkv_bias=True,
                norm_layer=partial(nn.LayerNorm, eps=1e-6), act_layer=nn.GELU, use_abs_pos=True,
                use_rel_pos=c.use_rel_pos, rel_pos_zero_init=True, window_size=c.window_size,
                global_attn_indexes=c.global_attn_indexes,
            )  # fmt: skip
            self.prompt_encoder = PromptEmbeddings(c.out_chans)
        self.frozen_source = f"seed:{c.init_seed}"
        self.image_encoder.requires_grad_(False)
        keys = list(self.modalities) if c.fusion == "separate" else [SHARED_KEY]
        self.adapters = nn.ModuleDict(
            {k: nn.ModuleList(BlockAdapters(c.embed_dim, c.adapter_ratio) for _ in range(c.depth)) for k in keys}
        )
        self.prompt_generators = nn.ModuleDict(
            {
                k: PromptGenerator(c.embed_dim, c.depth, c.prompt_scale_factor, c.patch_size, c.freq_nums, c.fft_band,
                                   c.embedding_reshape)
                for k in keys
            }
        )
        if c.zero_init_adapters:
            self.zero_adapters()
        self.mask_decoder = ClassWiseMaskDecoder(
            c.out_chans,
            TwoWayTransformer(depth=c.decoder_depth, embedding_dim=c.out_chans, mlp_dim=c.decoder_mlp_dim,
                              num_heads=c.decoder_heads),
            self.num_classes, c.num_mask_tokens,
        )  # fmt: skip
        self._active: str | None = None
        for i, block in enumerate(self.image_encoder.blocks):
            block.attn.register_forward_hook(self._space_hook(i))
            block.mlp.register_forward_hook(self._mlp_hook(i))
        if c.sam_checkpoint:
            self.load_pretrained(c.sam_checkpoint)

    # --- training (the recipe: SAMViTRecipe) ------------------------------------------------------
    def optimizer_groups(self, lr: float) -> list[dict[str, Any]]:
        """Encoder additions (adapters, prompt generators) and the decoder, both at ``lr``."""
        encoder = [p for p in (*self.adapters.parameters(), *self.prompt_generators.parameters()) if p.requires_grad]
        decoder = [p for p in (*self.mask_decoder.parameters(), *self.prompt_encoder.parameters()) if p.requires_grad]
        return [
            {"name": "encoder_adapters", "params": encoder, "lr": lr},
            {"name": "decoder", "params": decoder, "lr": lr},
        ]

    # --- adapters -----------------------------------------------------------------------------
    def adapter_key(self, modality: str) -> str:
        return modality if self.config.fusion == "separate" else SHARED_KEY

    def zero_adapters(self) -> None:
        """Zero every adapter's last layer and the prompt generators' output layer: the encoder
        then computes exactly the frozen ViT."""
        with torch.no_grad():
            for blocks in self.adapters.values():
                for block in blocks:
                    for layer in (block.space.fc2, block.mlp.fc2):
                        layer.weight.zero_()
                        layer.bias.zero_()
            for generator in self.prompt_generators.values():
                generator.shared_mlp.weight.zero_()
                generator.shared_mlp.bias.zero_()

    def _space_hook(self, index: int):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> torch.Tensor:
            if self._active is None:
                return output
            return self.adapters[self._active][index].space(output)

        return hook

    def _mlp_hook(self, index: int):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> torch.Tensor:
            if self._active is None:
                return output
            return output + self.config.mlp_adapter_scale * self.adapters[self._active][index].mlp(inputs[0])

        return hook

    @contextlib.contextmanager
    def active(self, key: str | None) -> Iterator[None]:
        """Within the block the ViT's hooks apply ``key``'s adapters (``None``: the plain ViT)."""
        previous, self._active = self._active, key
        try:
            yield
        finally:
            self._active = previous

    # --- encode ---------------------------------------------------------------------------------
    def _pos_embed(self, h: int, w: int) -> torch.Tensor:
        return resize_pos_embed(self.image_encoder.pos_embed, (h, w), self.config.pos_embed_resize)

    def encode(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """The image embedding (B, out_chans, H/16, W/16) of one modality."""
        self.check_subset([modality])
        if x.ndim != 4 or x.shape[1] != 3:
            raise ConfigError(f"cwsam: {modality} input must be (B, 3, H, W), got {tuple(x.shape)}")
        if x.shape[-1] % self.size_multiple or x.shape[-2] % self.size_multiple:
            raise ConfigError(f"cwsam: input size {tuple(x.shape[-2:])} is not a multiple of {self.size_multiple}")
        return self.encode_with(self.adapter_key(modality), x)

    def encode_with(self, key: str | None, x: torch.Tensor) -> torch.Tensor:
        """The ViT with ``key``'s adapters and prompts (``None``: none, the frozen ViT)."""
        vit = self.image_encoder
        tokens = vit.patch_embed(x)  # (B, h, w, C)
        if key is None:
            prompts = [None] * len(vit.blocks)
        else:
            prompts = self.prompt_generators[key](x, tokens)
        tokens = tokens + self._pos_embed(*tokens.shape[1:3]).to(tokens.dtype)
        with self.active(key):
            for block, prompt in zip(vit.blocks, prompts):
                tokens = block(tokens if prompt is None else tokens + prompt)
        return vit.neck(tokens.permute(0, 3, 1, 2))

    # --- decode ---------------------------------------------------------------------------------
    def decode_logits(self, embedding: torch.Tensor) -> torch.Tensor:
        """Class-wise logits at stride 4 for image embeddings (B, d, h, w)."""
        b, d, h, w = embedding.shape
        dense = self.prompt_encoder.no_mask_embed.weight.reshape(1, d, 1, 1).to(embedding.dtype)
        pe = self.prompt_encoder.pe_layer((h, w)).unsqueeze(0).to(embedding.dtype)
        return self.mask_decoder(embedding, pe, dense)

    def decode(self, features: Mapping[str, torch.Tensor], image_size: tuple[int, int]) -> MethodOutput:
        """The mean over the present modalities of each one's decoded logits."""
        self.check_subset(list(features))
        present = [m for m in self.modalities if m in features]  # a fixed order
        stacked = torch.cat([features[m] for m in present])  # one decoder pass for all
        logits = self.decode_logits(stacked)
        logits = logits.reshape(len(present), -1, *logits.shape[1:])  # (M, B, K, 4h, 4w)
        # bilinear upsampling is linear: averaging at stride 4 and upsampling once is the mean
        # of the upsampled per-modality logits
        logits = upsample_logits(logits.mean(0), image_size)
        embedding = torch.stack([features[m] for m in present]).mean(0)
        return MethodOutput(logits=logits, embedding=embedding)

    def loss(self, output: MethodOutput, target: torch.Tensor) -> torch.Tensor:
        if self.config.recipe == "reference":  # the reference's nn.CrossEntropyLoss (models/sam.py l. 157-164)
            return F.cross_entropy(output.logits.float(), target, ignore_index=self.info.ignore_index)
        return ohem_cross_entropy(output.logits, target, self.info.ignore_index)

    def training_defaults(self) -> dict[str, Any]:
        return recipe_defaults(self.train_defaults(self.preset), self.config.recipe, REFERENCE_RECIPE, self.preset)

    # --- bookkeeping ----------------------------------------------------------------------------
    def parameter_groups(self) -> dict[str, Any]:
        groups: dict[str, Any] = {}
        for key in self.adapters:
            groups[f"adapters.{key}"] = self.adapters[key]
            groups[f"prompt_generator.{key}"] = self.prompt_generators[key]
        groups["decoder"] = self.mask_decoder
        groups["no_mask_embed"] = self.prompt_encoder.no_mask_embed
        return groups

    def config_dict(self) -> dict[str, Any]:
        config = dataclasses.asdict(self.config)
        config.pop("sam_checkpoint")  # where the frozen weights came from is run metadata
        config["global_attn_indexes"] = list(config["global_attn_indexes"])
        return config

    def load_pretrained(self, path: str | Path) -> dict[str, Any]:
        """Load SAM weights (segment_anything's checkpoint format) strictly; returns a summary.

        Loaded (each must be present, with the same shape): the whole ``image_encoder``, the
        prompt encoder's ``pe_layer`` and ``no_mask_embed``, and the SAM parts of the mask decoder
        (transformer, IoU token, mask tokens, output upscaling, hypernetwork MLP 0). Fresh: the
        adapters, the prompt generators and ``mask_decoder.cls_upscaling``. Ignored by name: the
        SAM parts CWSAM does not use (point/mask prompt embeddings, the IoU head, hypernetwork
        MLPs 1-3). Anything else is an error naming the keys.
        """
        state, digest = read_weights(Path(path), "SAM checkpoint"), sha256(Path(path))
        own = self.state_dict()
        wanted = {k: v for k, v in own.items() if k.startswith(_SAM_PREFIXES) and not k.startswith(_FRESH)}
        copy_strict(wanted, state, [k for k in state if k not in wanted and _ignored(k)], path, "SAM checkpoint",
                    "this CWSAM", "is it a segment_anything checkpoint of the preset's size (ViT-B for 'paper')?")
        self.frozen_source = f"sam:{digest[:16]}"
        self.sam_load_summary = {
            "sha256": digest,
            "loaded": len(wanted),
            "ignored": sorted(k for k in state if _ignored(k)),
        }
        return self.sam_load_summary


#: xypu98/CWSAM's own training (configs/fusar-sar-map*-..._lr2e4_*_e200*.yaml l. 17, 104-109;
#: train.py l. 300/356: CosineAnnealingLR(T_max=epoch_max, eta_min=lr_min), no warm-up; AdamW's
#: default weight decay 0.01). Its configs' per-class loss_weight is for their SAR classes and has
#: no counterpart on DELIVER, MUSES or MCubeS: the reference recipe's CE is unweighted.
REFERENCE_RECIPE: dict[str, dict[str, Any]] = {
    "paper": {"batch_size": 1, "lr": 2e-4, "epochs": 200, "schedule": "cosine", "min_lr": 1e-7,
              "warmup_fraction": 0.0},
    "tiny": {"schedule": "cosine", "min_lr": 5e-7, "warmup_fraction": 0.0},  # min_lr / lr = 1e-7 / 2e-4
}

_SAM_PREFIXES = ("image_encoder.", "prompt_encoder.", "mask_decoder.")
_FRESH = ("mask_decoder.cls_upscaling.",)
_IGNORED = (
    "prompt_encoder.point_embeddings.", "prompt_encoder.not_a_point_embed.", "prompt_encoder.mask_downscaling.",
    "mask_decoder.iou_prediction_head.",
)  # fmt: skip


def _ignored(key: str) -> bool:
    if key.startswith(_IGNORED):
        return True
    prefix = "mask_decoder.output_hypernetworks_mlps."
    if key.startswith(prefix):
        index = key[len(prefix) :].split(".", 1)[0]
        return index.isdigit() and int(index) >= 1
    return False
