"""The contract every segmentation method implements: what the suite asks of a method.

The suite defines it; the built-in methods (``methods/``) and any plugin implement it and
register a builder with :func:`mlebench.registry.register_method`. The engine only ever talks to
this interface, so no code of the suite branches on a method's name or imports a method.

Data flow::

    encode(modality, x)            -> features of ONE modality (independent of the others,
                                      so an evaluator can cache them per sample)
    decode({modality: features})   -> MethodOutput(logits, aux_logits, embedding)
    forward(batch, modalities)     =  decode({m: encode(m, batch[m]) for m in modalities})
    loss(output, target)           -> scalar training loss

Methods whose encoder mixes modalities early (CMNeXt) set ``separable_encoder = False``; the
evaluator then calls ``forward`` per evaluation case instead of caching ``encode`` results.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mlebench.data.base import DatasetInfo
from mlebench.errors import ConfigError


@dataclass
class MethodOutput:
    """What ``decode`` returns.

    ``logits`` (B, K, H, W) at the input resolution: the prediction. ``main_logits`` the main
    pathway's own logits where the prediction combines several (``None``: same as ``logits``);
    ``aux_logits`` the auxiliary head's, or ``None`` (methods may leave both out in eval mode,
    where only the prediction is needed); ``embedding`` (B, C, h, w) the fused
    feature map the decoder starts from (for t-SNE of features).
    """

    logits: torch.Tensor
    embedding: torch.Tensor
    aux_logits: torch.Tensor | None = None
    main_logits: torch.Tensor | None = None


_CHANNELS_LAST_UPSAMPLING = [True]


def upsample_logits(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear upsampling of (B, K, h, w) class logits to ``size`` (align_corners=False), in
    channels-last memory: PyTorch's channels-last bilinear kernel and the argmax over its
    output are each about twice as fast on CPU as the contiguous ones, and the predictions are
    the same (``mlebench bench decode``; tests/test_registry.py). Inside
    :func:`contiguous_upsampling` the plain contiguous kernel runs instead (for comparisons)."""
    memory_format = torch.channels_last if _CHANNELS_LAST_UPSAMPLING[0] else torch.contiguous_format
    logits = logits.contiguous(memory_format=memory_format)
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


@contextlib.contextmanager
def contiguous_upsampling() -> Iterator[None]:
    """Within: :func:`upsample_logits` upsamples contiguous logits (the reference path)."""
    _CHANNELS_LAST_UPSAMPLING[0] = False
    try:
        yield
    finally:
        _CHANNELS_LAST_UPSAMPLING[0] = True


@dataclass(frozen=True)
class StandIn:
    """The tiny preset's pre-trained stand-in for a method's backbone (real checkpoints cannot be
    downloaded here). One stand-in per backbone: methods sharing a backbone share the file.

    ``name`` the backbone ("sam-vit-tiny"); ``path`` the shipped file, in the format the
    method's weights option reads; ``trained_by`` the registered method whose model
    ``mlebench pretrain`` trains (its :meth:`SegmentationMethod.prepare_pretraining` and
    :meth:`SegmentationMethod.stand_in_state` say what is trained and what is written);
    ``seed_option`` the option of ``trained_by``'s builder that seeds the random initialisation
    of what the weights file would otherwise fill (None: the builder has none, and the
    pre-training seed reaches it through ``torch.manual_seed`` alone).
    """

    name: str
    path: Path
    trained_by: str
    seed_option: str | None = "init_seed"


class SegmentationMethod(nn.Module, ABC):
    """Base class of every method. Subclasses are built by a registered builder."""

    #: registry name, set by :func:`mlebench.registry.build_method`
    method_name: str = ""
    #: False for methods that cannot encode modalities independently (early fusion)
    separable_encoder: bool = True
    #: True when a missing modality can be dropped from fusion (otherwise zero-filled)
    supports_missing_modalities: bool = True
    #: input height and width must be multiples of this (the evaluator pads, then crops)
    size_multiple: int = 1
    #: which configuration of the method this is (ablation variants differ here)
    variant: str = "default"
    #: where frozen weights come from ("seed:N", "sam2:<sha256 prefix>", ...); checkpoints of
    #: trainable weights are only valid on top of the same frozen weights
    frozen_source: str = "none"

    def __init__(self, info: DatasetInfo, modalities: Sequence[str], preset: str) -> None:
        super().__init__()
        modalities = tuple(modalities)
        if not modalities:
            raise ConfigError("a method needs at least one training modality")
        for name in modalities:
            info.modality(name)
        self.info = info
        self.modalities = modalities
        self.preset = preset
        self.num_classes = info.num_classes

    # --- the interface ------------------------------------------------------------------
    @abstractmethod
    def encode(self, modality: str, x: torch.Tensor) -> Any:
        """Features of one (normalised) modality batch ``x`` (B, C, H, W)."""

    @abstractmethod
    def decode(self, features: Mapping[str, Any], image_size: tuple[int, int]) -> MethodOutput:
        """Logits from the features of any non-empty subset of the training modalities."""

    @abstractmethod
    def loss(self, output: MethodOutput, target: torch.Tensor) -> torch.Tensor:
        """Scalar training loss against ``target`` (B, H, W), 255 = ignore."""

    def encode_many(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        """Encode several modalities; methods may override with a batched path."""
        return {m: self.encode(m, x) for m, x in inputs.items()}

    def forward(
        self, batch: Mapping[str, torch.Tensor], modalities: Sequence[str] | None = None
    ) -> MethodOutput:
        """``decode(encode(...))`` over ``modalities`` (default: all training modalities)."""
        modalities = tuple(modalities) if modalities is not None else self.modalities
        self.check_subset(modalities)
        inputs = {m: batch[m] for m in modalities}
        size = tuple(next(iter(inputs.values())).shape[-2:])
        return self.decode(self.encode_many(inputs), size)

    def check_subset(self, modalities: Sequence[str]) -> None:
        if not modalities:
            raise ConfigError(f"{self.method_name}: at least one modality must be present")
        extra = [m for m in modalities if m not in self.modalities]
        if extra:
            raise ConfigError(
                f"{self.method_name}: modalities {extra} were not trained; "
                f"trained: {', '.join(self.modalities)}"
            )

    # --- the method's recipe (the engine asks; it never names a method's parts) -------------
    #: packages whose versions the method's checkpoints and runs record
    versioned_packages: tuple[str, ...] = ()

    @classmethod
    def train_defaults(cls, preset: str) -> dict[str, Any]:
        """Training options per preset (``TrainConfig`` fields, plus ``epochs`` where the
        recipe counts epochs). Methods override with their own recipe. ``paper``: the paper's
        common recipe (appendix: batch 6, AdamW, weight decay 0.01, 100 epochs, warm-up poly with
        power 0.9 over 10 warm-up epochs from ratio 0.1; lr 1e-4 is our choice, the paper's value
        is not in its text)."""
        if preset == "paper":
            return {"batch_size": 6, "crop_size": 1024, "base_size": 1024, "lr": 1e-4, "amp": True, "epochs": 100}
        return {"steps": 500, "batch_size": 8, "crop_size": 128, "base_size": 256, "lr": 1e-3}

    def training_defaults(self) -> dict[str, Any]:
        """The training options this model trains with: its preset's ``train_defaults``, changed
        by any recipe option the method has (e.g. a baseline's ``recipe: reference``)."""
        return dict(self.train_defaults(self.preset))

    @classmethod
    def eval_size(cls, preset: str) -> int | None:
        """Short side every sample is resized to before evaluation (None: as stored). The
        DELIVER reference evaluates at 1024."""
        return 1024 if preset == "paper" else None

    def optimizer_groups(self, lr: float) -> list[dict[str, Any]]:
        """AdamW parameter groups (default: every trainable parameter at ``lr``)."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]

    # --- the tiny preset's pre-trained stand-in (``mlebench pretrain``) ------------------------
    def prepare_pretraining(self) -> None:
        """Make the parts the stand-in holds trainable (called on a model built without
        weights, on RGB only, by the ``trained_by`` method)."""
        raise ConfigError(f"method {self.method_name!r} has no stand-in pre-training recipe")

    def stand_in_state(self) -> dict[str, torch.Tensor]:
        """The pre-trained parts as a state dict in the format the weights option reads."""
        raise ConfigError(f"method {self.method_name!r} has no stand-in pre-training recipe")

    # --- parameters and checkpoints -------------------------------------------------------
    def parameter_groups(self) -> dict[str, nn.Module | Sequence[nn.Parameter]]:
        """Named parts for the parameter report; override to split the model meaningfully."""
        return {"model": self}

    def parameter_report(self) -> dict[str, Any]:
        """Trainable parameters by part, total trainable, frozen and total."""
        parts: dict[str, int] = {}
        for name, part in self.parameter_groups().items():
            params = part.parameters() if isinstance(part, nn.Module) else part
            parts[name] = sum(p.numel() for p in params if p.requires_grad)
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in self.parameters() if not p.requires_grad)
        return {
            "method": self.method_name,
            "preset": self.preset,
            "modalities": list(self.modalities),
            "parts": parts,
            "trainable": trainable,
            "frozen": frozen,
            "total": trainable + frozen,
        }

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """What training changes (what a checkpoint stores): trainable parameters and the
        buffers of modules that own trainable parameters (e.g. BatchNorm running statistics)."""
        keep = {n for n, p in self.named_parameters() if p.requires_grad}
        for prefix, module in self.named_modules():
            if any(p.requires_grad for p in module.parameters(recurse=False)):
                keep |= {f"{prefix}.{b}" if prefix else b for b, _ in module.named_buffers(recurse=False)}
        return {k: v.detach().clone() for k, v in self.state_dict().items() if k in keep}

    def config_dict(self) -> dict[str, Any]:
        """The method's configuration, stored with checkpoints (override to add more)."""
        return {}
