"""transformers' SAM-2 video model as SALMA's tracker runs it: the video config a grounding runner
implies, and the override that makes a conditioning mask the frame's output (Meta's behaviour).
What the names below mean for propagation: :mod:`.predictor`.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F
from transformers import Sam2VideoConfig, Sam2VideoModel
from transformers.models.sam2_video.configuration_sam2_video import (
    Sam2VideoMaskDecoderConfig,
    Sam2VideoPromptEncoderConfig,
)
from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoImageSegmentationOutput

from ..grounding import SAM2GroundingRunner

FrameSource = Union[torch.Tensor, Sequence[torch.Tensor]]  # (N, 3, S, S), or N lazily read (3, S, S)
PROPAGATION_MODES = ("memory", "decode_all")
TRACKER_DECODERS = ("shared", "original")
RANDOM_MEMORY = "random"


def video_config_from_image(runner: SAM2GroundingRunner) -> Sam2VideoConfig:
    """A ``Sam2VideoConfig`` whose image part equals the runner's SAM-2 and whose memory modules
    have the image model's width (Meta's video modules are 256 wide because SAM-2's FPN is)."""
    config = runner.sam2.config
    width = config.vision_config.fpn_hidden_size
    lowest = [int(s) for s in config.vision_config.backbone_feature_sizes[-1]]
    return Sam2VideoConfig(
        vision_config=config.vision_config,
        prompt_encoder_config=Sam2VideoPromptEncoderConfig(**config.prompt_encoder_config.to_dict()),
        mask_decoder_config=Sam2VideoMaskDecoderConfig(**config.mask_decoder_config.to_dict()),
        image_size=runner.image_size,
        memory_attention_rope_feat_sizes=lowest,
        memory_attention_hidden_size=width,
        memory_encoder_hidden_size=width,
        mask_downsampler_embed_dim=width,
        memory_fuser_embed_dim=width,
    )


class MetaMaskPromptSam2VideoModel(Sam2VideoModel):
    """``Sam2VideoModel`` whose mask-prompted (conditioning) frames compute what Meta's
    ``SAM2VideoPredictor.add_new_mask`` + ``propagate_in_video`` compute.

    transformers 5.17's ``_use_mask_as_output`` differs from Meta's predictor in two places, and
    every tracked frame inherits the difference through memory attention and object pointers
    (up to 1.8e-2 in mask logits on a small random model: ``tests/test_video_meta_parity.py``):

    1. the object pointer: Meta decodes the mask prompt single-mask (``multimask_output=False``,
       mask token 0); transformers calls ``_single_frame_forward`` with its default
       ``multimask_output=True`` (the best of tokens 1-3 by predicted IoU);
    2. the memory: Meta's predictor encodes a prompted frame's memory from its low-resolution
       output upsampled to the input size (``propagate_in_video_preflight``), transformers from
       the full-resolution prompt (their binarised masks differ along the object's boundary).
    """

    @classmethod
    def adopt(cls, video: Sam2VideoModel) -> "MetaMaskPromptSam2VideoModel":
        """The same module (same tensors, same config) with this class's mask-prompt step."""
        if not isinstance(video, Sam2VideoModel):
            raise TypeError(f"expected a Sam2VideoModel, got {type(video).__name__}")
        video.__class__ = cls  # only a method differs: no state to add
        return video

    def _use_mask_as_output(
        self,
        backbone_features: torch.Tensor,
        high_res_features: list[torch.Tensor],
        mask_inputs: torch.Tensor,
    ) -> Sam2VideoImageSegmentationOutput:
        """backbone_features (B, C, h, w); mask_inputs (B, 1, S, S) {0, 1} -> the prompt as output."""
        out_scale, out_bias = 20.0, -10.0  # logits -10 / +10 for background / object
        dtype = backbone_features.dtype
        masks = mask_inputs.to(dtype)
        prompt_logits = masks * out_scale + out_bias  # (B, 1, S, S)
        low_res = F.interpolate(prompt_logits.float(), size=self.prompt_encoder.mask_input_size, mode="bilinear",
                                align_corners=False, antialias=True).to(dtype)  # (B, 1, S/4, S/4)
        object_pointer = self._single_frame_forward(
            input_masks=self.mask_downsample(masks),
            image_embeddings=high_res_features + [backbone_features],
            multimask_output=False,
        ).object_pointer  # (B, C)
        appearing = torch.any(mask_inputs.flatten(1) > 0, dim=1)[:, None].to(dtype)  # (B, 1)
        object_pointer = appearing * object_pointer + (1 - appearing) * self.no_object_pointer
        for_memory = F.interpolate(low_res.float(), size=(self.image_size, self.image_size), mode="bilinear",
                                   align_corners=False).to(dtype)  # what the memory encoder reads
        return Sam2VideoImageSegmentationOutput(
            iou_scores=mask_inputs.new_ones(mask_inputs.shape[0], 1).to(dtype),
            pred_masks=low_res,
            high_res_masks=for_memory,
            object_pointer=object_pointer,
            object_score_logits=(out_scale * appearing + out_bias).unsqueeze(-1),
            image_embeddings=high_res_features + [backbone_features],
        )
