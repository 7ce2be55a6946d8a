"""Readers for the published checkpoints in their original layouts (no hub, no remote code).

- SAM-2: Meta's ``sam2[.1]_hiera_*.pt`` -> transformers ``Sam2Model`` / ``Sam2VideoModel``
  (:func:`load_sam2` also reads HF-format folders).
- InternVL2.5: the remote-code ``InternVLChatModel`` layout -> ``InternVLForConditionalGeneration``
  (:func:`load_internvl` also reads native folders).
- Sa2VA releases (``Sa2VAChatModel`` folders): split into their InternVL, SAM-2 and
  ``text_hidden_fcs`` parts, each read by the converters above (:mod:`.sa2va`).

Every source key is mapped, listed as ignorable with its reason, or reported in a
:class:`CheckpointMismatchError`.
"""
from .common import CheckpointMismatchError
from .internvl import (
    convert_internvl_checkpoint,
    convert_internvl_state_dict,
    convert_internvl_state_dict_to_original,
    find_image_token_id,
    internvl_config_from_original,
    internvl_config_to_original,
    load_internvl,
    save_internvl_original_layout,
)
from .sa2va import (
    check_release_tokens,
    is_sa2va_folder,
    load_text_hidden_fcs,
    read_sa2va_part,
    save_sa2va_layout,
)
from .sam2 import (
    convert_sam2_checkpoint,
    convert_sam2_state_dict,
    infer_sam2_variant,
    load_sam2,
    load_sam2_from_hf,
    load_sam2_from_meta,
    sam2_config_for,
    sam2_config_from_json,
    sam2_video_config_for,
)

__all__ = [
    "CheckpointMismatchError",
    "check_release_tokens",
    "is_sa2va_folder",
    "load_text_hidden_fcs",
    "read_sa2va_part",
    "save_sa2va_layout",
    "convert_internvl_checkpoint",
    "convert_internvl_state_dict",
    "convert_internvl_state_dict_to_original",
    "convert_sam2_checkpoint",
    "convert_sam2_state_dict",
    "find_image_token_id",
    "infer_sam2_variant",
    "internvl_config_from_original",
    "internvl_config_to_original",
    "load_internvl",
    "load_sam2",
    "load_sam2_from_hf",
    "load_sam2_from_meta",
    "sam2_config_for",
    "sam2_config_from_json",
    "sam2_video_config_for",
    "save_internvl_original_layout",
]
