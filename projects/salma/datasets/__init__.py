"""Data pipeline: readers (one per on-disk format), templates, encode, transforms, collate, sampling.

Importing this package registers the readers (``DATASETS``), the samplers (``DATA_SAMPLERS``), the
collate function and tokenizer builders (``FUNCTIONS``) and the skip-logging hook (``HOOKS``).
"""
from .base import SalmaDataset
from .chat import DEFAULT_SYSTEM, INTERNVL_SYSTEM, ExprSpan, Turn, build_prompt, render_conversation
from .collate import expand_eval_sample, salma_collate, salma_eval_collate
from .encode import EncodedConversation, encode_conversation, encode_prompt
from .errors import DataError
from .gcg import FlickrGCGDataset, GCGDataset
from .hooks import DataSkipLoggerHook
from .llava import LLaVADataset
from .masks import decode_rle, decode_segmentation, encode_mask
from .mix import DatasetMix
from .osprey import OSPREY_KINDS, OspreyDataset
from .ref_vos import RefVOSDataset, sample_frame_indices
from .refcoco import RefCOCODataset
from .samplers import LengthGroupedSampler, ResumableDefaultSampler
from .sav import RefSAVDataset, SAVDataset
from .tokenizer import build_tiny_tokenizer, build_tokenizer, load_pretrained_tokenizer
from .transforms import (closest_grid, dynamic_preprocess, internvl_pixel_values, load_image, num_tiles,
                         resize_masks, sam_pixel_values)
from .video_qa import VideoQADataset

__all__ = [
    "SalmaDataset", "RefCOCODataset", "RefVOSDataset", "LLaVADataset", "GCGDataset", "DatasetMix",
    "OspreyDataset", "OSPREY_KINDS", "VideoQADataset", "SAVDataset", "RefSAVDataset", "FlickrGCGDataset",
    "LengthGroupedSampler", "ResumableDefaultSampler", "salma_collate", "salma_eval_collate", "expand_eval_sample",
    "DataSkipLoggerHook", "DataError",
    "DEFAULT_SYSTEM", "INTERNVL_SYSTEM", "ExprSpan", "Turn", "build_prompt", "render_conversation",
    "EncodedConversation", "encode_conversation", "encode_prompt",
    "decode_rle", "decode_segmentation", "encode_mask", "sample_frame_indices",
    "build_tiny_tokenizer", "build_tokenizer", "load_pretrained_tokenizer",
    "closest_grid", "dynamic_preprocess", "internvl_pixel_values", "load_image", "num_tiles",
    "resize_masks", "sam_pixel_values",
]
