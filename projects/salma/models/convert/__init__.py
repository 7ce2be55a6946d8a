"""Readers for the published checkpoints in their original layouts (no hub, no remote code):
Meta's SAM-2 ``.pt`` -> ``Sam2Model`` / ``Sam2VideoModel``. Every source key is mapped or reported."""
from .common import CheckpointMismatchError
from .sam2 import (
    convert_sam2_checkpoint,
    convert_sam2_state_dict,
    infer_sam2_variant,
    load_sam2,
    load_sam2_from_hf,
    load_sam2_from_meta,
    sam2_config_for,
    sam2_video_config_for,
)

__all__ = [
    "CheckpointMismatchError",
    "convert_sam2_checkpoint",
    "convert_sam2_state_dict",
    "infer_sam2_variant",
    "load_sam2",
    "load_sam2_from_hf",
    "load_sam2_from_meta",
    "sam2_config_for",
    "sam2_video_config_for",
]
