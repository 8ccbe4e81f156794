"""The dual-pathway decoder (paper Sec. III-E).

Pathway 1 is sam2's own ``MaskDecoder`` (TwoWayTransformer, output upscaling, hypernetwork
MLPs) extended to K classes: ``num_multimask_outputs = K - 1`` gives K mask tokens and K
hypernetwork MLPs, one per class. It runs with no prompt, the fused SFM as image embedding and
the fused IFP and FFP as its high-resolution features, and yields logits at stride 4.

"No prompt" follows SAM2's own path by default (``no_prompt="sam2"``): given no points,
``SAM2Base._forward_sam_heads`` passes one point at (0, 0) labelled -1, and the prompt encoder
pads a second one because there is no box; a label -1 embeds as ``not_a_point_embed`` alone, so
the two-way transformer sees two "not a point" tokens next to the output tokens, as in SAM2's
training. ``no_prompt="empty"`` passes no sparse token at all (this suite's behaviour before).
The dense embedding is the prompt encoder's no-mask embedding either way, as in SAM2. We call
``MaskDecoder.predict_masks`` directly: ``SAM2Base._forward_sam_heads`` assumes a 64x64 image
embedding and, in the 2.1 configs, overwrites masks by the object score.

Pathway 2, the auxiliary head: one per-pixel MLP (a 1x1 conv) per level bringing SFM, IFP and
FFP to a common width, bilinear upsampling to the FFP resolution, concatenation, dropout, a
linear fusion (1x1 conv + BN + ReLU) and a linear prediction layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sam2.modeling.sam.mask_decoder import MaskDecoder
from sam2.modeling.sam.prompt_encoder import PromptEncoder
from sam2.modeling.sam.transformer import TwoWayTransformer
from torch import nn


def build_sam_heads(
    num_classes: int, d_model: int, decoder_depth: int, decoder_heads: int, decoder_mlp_dim: int,
    image_embedding_size: int, image_size: int,
) -> tuple[PromptEncoder, MaskDecoder]:
    """sam2's prompt encoder and a K-class mask decoder, configured as ``SAM2Base`` does."""
    prompt_encoder = PromptEncoder(
        embed_dim=d_model,
        image_embedding_size=(image_embedding_size, image_embedding_size),
        input_image_size=(image_size, image_size),
        mask_in_chans=16,
    )
    mask_decoder = MaskDecoder(
        num_multimask_outputs=num_classes - 1,  # + the "single mask" token = K tokens
        transformer=TwoWayTransformer(
            depth=decoder_depth, embedding_dim=d_model, mlp_dim=decoder_mlp_dim, num_heads=decoder_heads
        ),
        transformer_dim=d_model,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
        use_high_res_features=True,
        iou_prediction_use_sigmoid=True,
        pred_obj_scores=False,
    )
    return prompt_encoder, mask_decoder


#: how the decoder is prompted when there is no prompt (see the module docstring)
NO_PROMPT_MODES = ("sam2", "empty")
#: SAM2Base's no-prompt point plus the prompt encoder's padding point
SAM2_NO_PROMPT_TOKENS = 2


def no_prompt_tokens(prompt_encoder: PromptEncoder, batch: int, mode: str = "sam2",
                     dtype: torch.dtype | None = None) -> torch.Tensor:
    """The sparse prompt embedding (B, N, C) for an image without prompts.

    ``"sam2"``: what ``prompt_encoder(points=(zeros(B, 1, 2), -ones(B, 1)), boxes=None,
    masks=None)`` returns, as ``SAM2Base`` calls it without points: two ``not_a_point_embed``
    tokens (a label -1 replaces the point's positional encoding). ``"empty"``: (B, 0, C).
    """
    weight = prompt_encoder.not_a_point_embed.weight  # (1, C)
    dtype = dtype or weight.dtype
    if mode == "empty":
        return weight.new_zeros(batch, 0, weight.shape[1], dtype=dtype)
    if mode != "sam2":
        raise ValueError(f"unknown no-prompt mode {mode!r}; known: {', '.join(NO_PROMPT_MODES)}")
    return weight.to(dtype).expand(batch, SAM2_NO_PROMPT_TOKENS, -1)


def semantic_mask_logits(
    prompt_encoder: PromptEncoder,
    mask_decoder: MaskDecoder,
    sfm: torch.Tensor,
    ifp: torch.Tensor,
    ffp: torch.Tensor,
    no_prompt: str = "sam2",
) -> torch.Tensor:
    """K-class logits at stride 4 from fused SFM (stride 16), IFP (8) and FFP (4)."""
    b, c, h, w = sfm.shape
    sparse = no_prompt_tokens(prompt_encoder, b, no_prompt, sfm.dtype)
    dense = prompt_encoder.no_mask_embed.weight.reshape(1, c, 1, 1).expand(b, c, h, w)
    # The dense positional encoding for this embedding size (any size, not only 64x64).
    image_pe = prompt_encoder.pe_layer((h, w)).unsqueeze(0).to(sfm.dtype)
    masks, _, _, _ = mask_decoder.predict_masks(
        image_embeddings=sfm,
        image_pe=image_pe,
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense.to(sfm.dtype),
        repeat_image=False,
        high_res_features=[ffp, ifp],
    )
    return masks  # (B, K, 4h, 4w)


class AuxiliaryHead(nn.Module):
    """Pathway 2: per-level MLPs, upsample, concatenate, dropout, linear fusion, prediction."""

    def __init__(self, in_channels: tuple[int, int, int], embed_dim: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.mlps = nn.ModuleList([nn.Conv2d(c, embed_dim, kernel_size=1) for c in in_channels])
        self.dropout = nn.Dropout2d(dropout)
        self.fuse = nn.Sequential(
            nn.Conv2d(len(in_channels) * embed_dim, embed_dim, kernel_size=1, bias=False),
            nn.BatchNorm2d(embed_dim),
            nn.ReLU(inplace=True),
        )
        self.predict = nn.Conv2d(embed_dim, num_classes, kernel_size=1)

    def forward(self, sfm: torch.Tensor, ifp: torch.Tensor, ffp: torch.Tensor) -> torch.Tensor:
        size = ffp.shape[-2:]
        maps = [
            F.interpolate(mlp(x), size=size, mode="bilinear", align_corners=False)
            for mlp, x in zip(self.mlps, (sfm, ifp, ffp))
        ]
        return self.predict(self.fuse(self.dropout(torch.cat(maps, dim=1))))  # (B, K, H/4, W/4)
