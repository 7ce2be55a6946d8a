"""SAM-2 grounding runner: image features, the structure prior, CMA injection, language decode.

One training/inference step, for F frames and M (object, frame) pairs:

1. ``encode_frames``: the (usually frozen) Hiera + FPN encoder gives three levels per frame;
   ``no_mem_embed`` is added to the lowest-resolution level (single images have no memory).
2. ``structure_prior``: one language-free decoder pass per *frame* (never per object), best of
   three masks by predicted IoU, without gradient. ``mask_source='gt'`` uses the GT mask as an
   oracle prior instead; ``'none'`` disables it.
3. ``decode``: for every pair, CMA lets the frame's lowest-resolution feature attend to that
   object's language tokens (gated by the prior), then the SAM-2 decoder decodes with the
   ``[SEG]`` embedding appended to the sparse prompt tokens and keeps one mask by the rule
   ``mask_token``, in train() and eval() alike:

   - ``'best_iou'`` (default, both originals' rule): the masks of tokens 1-3, the one with the
     highest predicted IoU kept, the gradient through that mask. pengrui-art/SALMA and
     bytedance/Sa2VA call ``_forward_sam_heads(multimask_output=_use_multimask(
     is_init_cond_frame=True, point_inputs=None))``, True with the SAM-2 config they ship.
   - ``'first'`` (ablation): mask token 0 alone (``single_mask_token``).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Sam2Config, Sam2Model

from ..registry import MODELS
from .cma import CrossModalAttention2D
from .positions import check_position_init, init_hiera_positions

MASK_SOURCES = ("pred", "gt", "none")
MASK_TOKENS = ("best_iou", "first")

# As in Sa2VA, only SAM-2's mask decoder trains (image encoder, prompt encoder and no-memory
# embedding stay as pretrained). Decoder heads that never enter a loss of the language decode stay
# frozen too: the IoU and object-score heads (the IoU only ranks the masks: argmax has no
# gradient) and the hypernetworks of the mask tokens the rule never returns. No rank then carries
# parameters without gradient, and weight decay does not shrink what the decode does not train.
UNTRAINED_DECODER_HEADS = {
    "best_iou": ("iou_prediction_head", "pred_obj_score_head", "output_hypernetworks_mlps.0"),
    "first": ("iou_prediction_head", "pred_obj_score_head", "output_hypernetworks_mlps.1",
              "output_hypernetworks_mlps.2", "output_hypernetworks_mlps.3"),
}


@contextlib.contextmanager
def single_mask_token(decoder: nn.Module):
    """Decode with mask token 0 in eval mode too, for this call only.

    With ``multimask_output=False`` transformers' SAM-2 decoder, in eval mode only, replaces an
    unstable token-0 mask by the best of tokens 1-3 (``dynamic_multimask_via_stability``, meant for
    clicks and tracking). The language decode trains token 0 with ``[SEG]``, so it must predict with
    it. Scoped to the call: SAM-2's own uses of the decoder keep Meta's behaviour.
    """
    dynamic = decoder.dynamic_multimask_via_stability
    decoder.dynamic_multimask_via_stability = False
    try:
        yield decoder
    finally:
        decoder.dynamic_multimask_via_stability = dynamic


@dataclass
class FrameFeatures:
    """SAM-2 features of F frames.

    image_embeddings: (F, C, h, w) lowest resolution, ``no_mem_embed`` added (before CMA).
    high_res: [(F, C/8, 4h, 4w), (F, C/4, 2h, 2w)] raw FPN levels (before conv_s0 / conv_s1).
    decoder_high_res: the same levels after the decoder's conv_s0 / conv_s1, computed once by
        ``SAM2GroundingRunner._high_res_for_decoder`` and read by the prior pass and the decode.
    """

    image_embeddings: torch.Tensor
    high_res: list[torch.Tensor]
    decoder_high_res: list[torch.Tensor] | None = None


def best_by_iou(masks: torch.Tensor, iou: torch.Tensor) -> torch.Tensor:
    """masks (B, 3, h, w), iou (B, 3) -> (B, 1, h, w): each row's mask with the highest predicted
    IoU (the first on a tie, as ``torch.argmax`` and Meta's ``_forward_sam_heads``)."""
    best = iou.argmax(dim=1)  # (B,)
    return masks[torch.arange(masks.shape[0], device=masks.device), best].unsqueeze(1)


def check_mask_token(mask_token: str) -> str:
    if mask_token not in MASK_TOKENS:
        raise ValueError(f"grounding_encoder.mask_token must be one of {MASK_TOKENS}, got {mask_token!r}")
    return mask_token


def check_prior_settings(*, enable_cma: bool, cma: dict | None, mask_source: str) -> None:
    """Refuse prior settings that contradict each other instead of silently dropping one.

    The prior is read only by CMA's mask bias: a mask bias without a prior trains CMA without MBA,
    and a prior without a mask bias costs a decoder pass per frame for nothing.
    """
    if mask_source not in MASK_SOURCES:
        raise ValueError(f"grounding_encoder.mask_source must be one of {MASK_SOURCES}, got {mask_source!r}")
    mask_bias = bool((cma or {}).get("enable_mask_bias", False))
    if enable_cma and mask_bias and mask_source == "none":
        raise ValueError(
            "grounding_encoder.cma.enable_mask_bias=True but grounding_encoder.mask_source='none': CMA would train "
            "without its structure prior (no MBA). Set mask_source='pred' (or 'gt'), or cma.enable_mask_bias=False")
    if mask_source != "none" and not (enable_cma and mask_bias):
        unused_by = "enable_cma=False" if not enable_cma else "cma.enable_mask_bias=False"
        raise ValueError(
            f"grounding_encoder.mask_source={mask_source!r} but grounding_encoder.{unused_by}: nothing reads the "
            "structure prior. Set mask_source='none', or enable CMA with cma.enable_mask_bias=True")


def build_sam2_model(spec: dict) -> Sam2Model:
    """Build SAM-2 from ``checkpoint`` (Meta .pt, HF folder or Sa2VA release folder), ``size``
    (random weights), or ``config``. With a checkpoint in Meta's layout, ``config`` describes an
    architecture that is not a published size (tiny test models). ``position_init``: Hiera's
    position embedding on random weights, ``'sincos'`` (default, a fixed table:
    :func:`positions.init_hiera_positions`) or ``'zeros'`` (transformers' init: no position); a
    checkpoint brings its learned one."""
    spec = dict(spec)
    position_init = spec.pop("position_init", "sincos")
    check_position_init(position_init, "sam2.position_init")
    if spec.get("checkpoint"):
        from .convert.sam2 import load_sam2

        config = spec.pop("config", None)
        return load_sam2(spec.pop("checkpoint"), config=Sam2Config(**config) if config else None, **spec)
    if spec.get("size"):
        from .convert.sam2 import sam2_config_for

        model = Sam2Model(sam2_config_for(spec["size"], **{k: v for k, v in spec.items() if k in ("version",)}))
    elif spec.get("config"):
        model = Sam2Model(Sam2Config(**spec["config"]))
    else:
        raise ValueError(f"sam2 spec needs 'checkpoint', 'size' or 'config'; got keys {sorted(spec)}")
    if position_init == "sincos":
        init_hiera_positions(model.vision_encoder.backbone)
    return model


@MODELS.register_module()
class SAM2GroundingRunner(nn.Module):
    """SAM-2 with a structure-prior pre-pass and cross-modal attention on its lowest level.

    Args:
        sam2: how to build SAM-2 (see ``build_sam2_model``).
        enable_cma: add ``CrossModalAttention2D`` before the language-conditioned decode.
        cma: keyword arguments of ``CrossModalAttention2D`` (``dim`` is SAM-2's width).
        mask_source: structure prior: 'pred' (language-free pre-pass), 'gt' (oracle), 'none'.
            A prior needs CMA with ``enable_mask_bias`` and the mask bias needs a prior
            (``check_prior_settings`` refuses the other combinations).
        freeze_image_encoder: keep Hiera + FPN frozen (features computed without gradient).
        freeze_decoder: keep the mask decoder frozen too (the prompt encoder always is).
        mask_token: which mask the language decode keeps, the same in train() and eval():
            ``'best_iou'`` (the originals' rule: of tokens 1-3 the highest predicted IoU) or
            ``'first'`` (token 0, an ablation). The decoder heads that train follow the rule
            (:data:`UNTRAINED_DECODER_HEADS`).
    """

    def __init__(
        self,
        *,
        sam2: dict,
        enable_cma: bool = True,
        cma: dict | None = None,
        mask_source: str = "pred",
        freeze_image_encoder: bool = True,
        freeze_decoder: bool = False,
        mask_token: str = "best_iou",
    ) -> None:
        super().__init__()
        check_prior_settings(enable_cma=enable_cma, cma=cma, mask_source=mask_source)
        self.sam2 = build_sam2_model(sam2)
        self.hidden_dim = self.sam2.config.mask_decoder_config.hidden_size
        self.image_size = self.sam2.config.prompt_encoder_config.image_size
        self.mask_source = mask_source
        self.mask_token = check_mask_token(mask_token)
        self.cma = CrossModalAttention2D(self.hidden_dim, **(cma or {})) if enable_cma else None
        self.freeze_image_encoder = freeze_image_encoder
        self.sam2.requires_grad_(False)
        if not freeze_image_encoder:
            self.sam2.vision_encoder.requires_grad_(True)
        if not freeze_decoder:
            self.sam2.mask_decoder.requires_grad_(True)
            for name in UNTRAINED_DECODER_HEADS[mask_token]:
                self.sam2.mask_decoder.get_submodule(name).requires_grad_(False)

    # ------------------------------------------------------------------ features
    def encode_frames(self, pixel_values: torch.Tensor) -> FrameFeatures:
        """pixel_values: (F, 3, S, S) normalised SAM-2 input -> FrameFeatures."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_image_encoder):
            if self.freeze_image_encoder:
                self.sam2.vision_encoder.eval()  # frozen means frozen: no dropout / droppath
            out = self.sam2.vision_encoder(pixel_values, return_dict=True)
        levels = list(out.fpn_hidden_states)  # each (F, C, H_l, W_l), high resolution first
        image_embeddings = levels[-1] + self.sam2.no_memory_embedding.view(1, -1, 1, 1)
        return FrameFeatures(image_embeddings, levels[:-1])

    def _high_res_for_decoder(self, features: FrameFeatures) -> list[torch.Tensor]:
        """conv_s0 / conv_s1 belong to the (trainable) decoder, so they run here, with grad. Once per
        ``features``: the prior pass (detached) and the language decode share them."""
        if features.decoder_high_res is None:
            decoder = self.sam2.mask_decoder
            features.decoder_high_res = [decoder.conv_s0(features.high_res[0]), decoder.conv_s1(features.high_res[1])]
        return features.decoder_high_res

    # ------------------------------------------------------------------ decoder
    def _run_decoder(
        self,
        image_embeddings: torch.Tensor,
        high_res: list[torch.Tensor],
        extra_sparse: torch.Tensor | None,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt-less decode (one padding point, label -1) plus optional extra sparse tokens; one
        mask (token 0, never swapped: :func:`single_mask_token`) or the three multimask tokens 1-3,
        alike in train() and eval().

        image_embeddings: (B, C, h, w); extra_sparse: (B, K, C). Returns logits
        (B, n_masks, 4h, 4w) and IoU predictions (B, n_masks).
        """
        batch = image_embeddings.shape[0]
        points = torch.zeros(batch, 1, 1, 2, dtype=image_embeddings.dtype, device=image_embeddings.device)
        labels = -torch.ones(batch, 1, 1, dtype=torch.int32, device=image_embeddings.device)
        sparse, dense = self.sam2.prompt_encoder(
            input_points=points, input_labels=labels, input_boxes=None, input_masks=None
        )  # sparse (B, 1, 2, C): the padding point and its pad; dense (B, C, h, w)
        if extra_sparse is not None:
            sparse = torch.cat([sparse, extra_sparse.unsqueeze(1).to(sparse.dtype)], dim=2)
        positional = self.sam2.get_image_wide_positional_embeddings().expand(batch, -1, -1, -1)
        with single_mask_token(self.sam2.mask_decoder) as decoder:  # the same token in train() and eval()
            masks, iou, _, _ = decoder(
                image_embeddings=image_embeddings,
                image_positional_embeddings=positional.to(image_embeddings.dtype),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense.to(image_embeddings.dtype),
                multimask_output=multimask_output,
                high_resolution_features=high_res,
            )
        return masks[:, 0], iou[:, 0]

    def structure_prior(self, features: FrameFeatures) -> torch.Tensor:
        """Language-free pass, one per frame, without gradient: best of 3 masks by predicted IoU.
        -> (F, 1, 4h, 4w). The high-resolution convs run outside ``no_grad`` (in the caller's grad
        mode): the language decode reuses them and trains them."""
        high_res = [level.detach() for level in self._high_res_for_decoder(features)]
        with torch.no_grad():
            masks, iou = self._run_decoder(features.image_embeddings, high_res, None, multimask_output=True)
            return best_by_iou(masks, iou)

    def decode(
        self,
        features: FrameFeatures,
        frame_index: torch.Tensor,
        seg_embeddings: torch.Tensor,
        text_tokens: torch.Tensor | None = None,
        text_padding_mask: torch.Tensor | None = None,
        prior: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Language-conditioned decode of M (object, frame) pairs.

        Args:
            features: features of F frames (pre-CMA).
            frame_index: (M,) frame of each pair.
            seg_embeddings: (M, C) projected ``[SEG]`` embeddings.
            text_tokens: (M, N, C) CMA tokens (token 0 = ``[SEG]``), default ``seg_embeddings``.
            text_padding_mask: (M, N) True on padding.
            prior: (M, 1, h', w') prior logits per pair, or None.
        Returns:
            (M, 1, 4h, 4w) mask logits.
        """
        image_embeddings = features.image_embeddings[frame_index]
        if self.cma is not None:
            tokens = seg_embeddings[:, None] if text_tokens is None else text_tokens
            image_embeddings = self.cma(image_embeddings, tokens, prior, text_padding_mask)
        # conv_s0 / conv_s1 once per frame, then gathered per pair (objects share their frames)
        high_res = [level[frame_index] for level in self._high_res_for_decoder(features)]
        return self.decode_masks(image_embeddings, high_res, seg_embeddings[:, None])

    def decode_masks(self, image_embeddings: torch.Tensor, high_res: list[torch.Tensor],
                     prompts: torch.Tensor) -> torch.Tensor:
        """The decoder with ``prompts`` (B, K, C) appended to the sparse tokens, one mask per row
        by the ``mask_token`` rule -> (B, 1, 4h, 4w) logits."""
        if self.mask_token == "first":
            masks, _ = self._run_decoder(image_embeddings, high_res, prompts, multimask_output=False)
            return masks[:, :1]
        masks, iou = self._run_decoder(image_embeddings, high_res, prompts, multimask_output=True)
        return best_by_iou(masks, iou)

    def prior_for_pairs(
        self, features: FrameFeatures, frame_index: torch.Tensor, gt_masks: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """The prior of each pair: the frame's pre-pass ('pred'), the GT ('gt'), or None."""
        if self.mask_source == "none":
            return None
        if self.mask_source == "gt":
            if gt_masks is None:
                raise ValueError("mask_source='gt' needs GT masks (an oracle prior cannot run at inference)")
            return (gt_masks.unsqueeze(1).float() * 2 - 1) * 10.0  # {0,1} -> logits ±10
        return self.structure_prior(features)[frame_index]

    def set_cma_warmup_scale(self, scale: float) -> None:
        if self.cma is not None:
            self.cma.set_warmup_scale(scale)

    def low_res_size(self) -> tuple[int, int]:
        """Spatial size of the decoder's logits (256² for 1024² input)."""
        h, w = self.sam2.config.vision_config.backbone_feature_sizes[0]
        return int(h), int(w)

    def resize_to(self, logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Bilinear resize of (M, 1, h, w) logits to an original frame size (H, W)."""
        return F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)
