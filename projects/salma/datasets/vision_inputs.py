"""The LLM side's image inputs, one scheme per MLLM family: pixels, and the tokens that hold them.

A reader asks its scheme for the inputs of one image or of a video's frames and gets a
:class:`VisionInput`: the pixel tensor the family's vision tower reads, the prompt prefix with the
family's placeholder tokens (the LLM's vision features replace them), and how many there are.

* ``internvl`` (InternVL2.5 / 3 / 3.5): 448-px tiles (:func:`transforms.dynamic_preprocess`, a
  thumbnail when there is more than one), ``image_seq_length`` ``<IMG_CONTEXT>`` per tile; a
  video frame is one tile. ImageNet statistics.
* ``qwen_vl`` (Qwen2.5-VL / Qwen3-VL): dynamic resolution. The image is resized (bicubic) to a
  multiple of ``patch_size * merge_size`` keeping its aspect ratio, with its pixel count in
  ``[min_pixels, max_pixels]`` (:func:`smart_resize`); cut in ``patch_size`` patches, each
  repeated ``temporal_patch_size`` times, flattened in the tower's 2x2-merge order (rows of
  ``C * temporal_patch_size * patch_size**2`` values); ``grid_thw`` = (1, h / p, w / p); one
  ``<|image_pad|>`` per merged 2x2 group, inside ``<|vision_start|> ... <|vision_end|>``. Video
  frames are separate images with their own pixel bounds, as Sa2VA feeds them
  (``projects/sa2va/datasets/base.py``: ``min/max_pixels_multi`` = 128 / 512 x 28**2).
  Qwen2.5-VL: patch 14, CLIP statistics; Qwen3-VL: patch 16, statistics 0.5.

Written here from the families' published rules (nothing fetched); ``tests/test_vision_inputs.py``
compares them with transformers' own processors on the same images.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from ..constants import IMG_CONTEXT_TOKEN, QWEN_IMAGE_PAD, QWEN_VISION_END, QWEN_VISION_START
from .templates import image_token_string, video_token_string
from .transforms import dynamic_preprocess, num_tiles, stack_normalized

VISION_FAMILIES = ("internvl", "qwen_vl")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class VisionInput:
    """One image's (or one video's) LLM-side input.

    pixel_values: internvl (n_tiles, 3, S, S); qwen_vl (n_patches, 3 * temporal * p * p).
    grid_thw: qwen_vl (n_images, 3) int64 patch grid of each image (a video: one row per frame);
        None for internvl. prefix: the prompt text holding the placeholders; num_tokens: how many.
    """

    pixel_values: torch.Tensor
    grid_thw: torch.Tensor | None
    prefix: str
    num_tokens: int


class InternVLTiles:
    """InternVL's inputs (see the module docstring); the reader's tiling arguments."""

    family = "internvl"
    context_token = IMG_CONTEXT_TOKEN
    regions_supported = True

    def __init__(self, *, image_size: int = 448, image_seq_length: int = 256, min_dynamic_patch: int = 1,
                 max_dynamic_patch: int = 12, use_thumbnail: bool = True) -> None:
        self.image_size = image_size
        self.image_seq_length = image_seq_length
        self.min_dynamic_patch = min_dynamic_patch
        self.max_dynamic_patch = max_dynamic_patch
        self.use_thumbnail = use_thumbnail

    def image(self, image: Image.Image) -> VisionInput:
        tiles = dynamic_preprocess(image, min_num=self.min_dynamic_patch, max_num=self.max_dynamic_patch,
                                   image_size=self.image_size, use_thumbnail=self.use_thumbnail)
        return VisionInput(stack_normalized(tiles, self.image_size), None,
                           image_token_string(len(tiles), self.image_seq_length), len(tiles) * self.image_seq_length)

    def video(self, frames: Sequence[Image.Image]) -> VisionInput:
        """One tile per frame (a direct resize), ``Frame{i}:`` lines."""
        return VisionInput(stack_normalized(list(frames), self.image_size), None,
                           video_token_string(len(frames), self.image_seq_length), len(frames) * self.image_seq_length)

    def image_tokens(self, width: int | None = None, height: int | None = None) -> int:
        """Placeholders of an image of that size (the largest tiling when the size is unknown)."""
        if width is None or height is None:
            tiles = self.max_dynamic_patch + int(self.use_thumbnail and self.max_dynamic_patch > 1)
        else:
            tiles = num_tiles(width, height, min_num=self.min_dynamic_patch, max_num=self.max_dynamic_patch,
                              image_size=self.image_size, use_thumbnail=self.use_thumbnail)
        return tiles * self.image_seq_length

    def frame_tokens(self) -> int:
        return self.image_seq_length


def smart_resize(height: int, width: int, *, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """(height, width), multiples of ``factor``, the pixel count within [min_pixels, max_pixels],
    the aspect ratio kept as closely as those allow (Qwen2-VL's rule; aspect ratios > 200 refused)."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio {max(height, width) / min(height, width):.0f} of a {width}x{height} image is "
                         "over 200, which the Qwen-VL resize refuses")
    h, w = round(height / factor) * factor, round(width / factor) * factor
    if h * w > max_pixels:
        scale = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / scale / factor) * factor)
        w = max(factor, math.floor(width / scale / factor) * factor)
    elif h * w < min_pixels:
        scale = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * scale / factor) * factor, math.ceil(width * scale / factor) * factor
    return h, w


class QwenVLPatches:
    """Qwen-VL's inputs (see the module docstring).

    Args:
        patch_size / merge_size / temporal_patch_size: the vision tower's (14 / 2 / 2 for
            Qwen2.5-VL, 16 / 2 / 2 for Qwen3-VL).
        min_pixels / max_pixels: pixel bounds of an image (Sa2VA: 512 / 2048 x 28**2).
        video_min_pixels / video_max_pixels: of each video frame (Sa2VA: 128 / 512 x 28**2).
        image_mean / image_std: 'clip' (Qwen2.5-VL), 'half' (0.5, Qwen3-VL) or 3 numbers.
    """

    family = "qwen_vl"
    context_token = QWEN_IMAGE_PAD
    regions_supported = False

    def __init__(self, *, patch_size: int = 14, merge_size: int = 2, temporal_patch_size: int = 2,
                 min_pixels: int = 512 * 28 * 28, max_pixels: int = 2048 * 28 * 28,
                 video_min_pixels: int = 128 * 28 * 28, video_max_pixels: int = 512 * 28 * 28,
                 image_mean: str | Sequence[float] = "clip", image_std: str | Sequence[float] = "clip") -> None:
        self.patch_size, self.merge_size, self.temporal_patch_size = patch_size, merge_size, temporal_patch_size
        self.min_pixels, self.max_pixels = min_pixels, max_pixels
        self.video_min_pixels, self.video_max_pixels = video_min_pixels, video_max_pixels
        mean, std = _stats(image_mean, CLIP_MEAN), _stats(image_std, CLIP_STD)
        # (x / 255 - mean) / std as x * scale - offset, per channel
        self._scale = (1.0 / (255.0 * np.asarray(std, dtype=np.float64))).astype(np.float32).reshape(3, 1, 1)
        self._offset = (np.asarray(mean, dtype=np.float64) / np.asarray(std, dtype=np.float64)).astype(
            np.float32).reshape(3, 1, 1)

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size

    def _patches(self, image: Image.Image, min_pixels: int, max_pixels: int) -> tuple[torch.Tensor, list[int]]:
        """One image -> (n_patches, 3 * temporal * p * p) and its (1, h / p, w / p) grid."""
        width, height = image.size
        h, w = smart_resize(height, width, factor=self.factor, min_pixels=min_pixels, max_pixels=max_pixels)
        if (w, h) != image.size:
            image = image.resize((w, h), Image.Resampling.BICUBIC)
        pixels = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32)  # (3, h, w)
        pixels = (pixels * self._scale - self._offset).astype(np.float32)
        p, m, t = self.patch_size, self.merge_size, self.temporal_patch_size
        gh, gw = h // p, w // p
        # (3, gh/m, m, p, gw/m, m, p) -> (gh/m, gw/m, m, m, 3, p, p): merge groups, raster order
        grid = pixels.reshape(3, gh // m, m, p, gw // m, m, p).transpose(1, 4, 2, 5, 0, 3, 6)
        # an image is one temporal step repeated: (..., 3, t, p, p)
        grid = np.broadcast_to(grid[:, :, :, :, :, None], (*grid.shape[:5], t, p, p))
        return torch.from_numpy(np.ascontiguousarray(grid).reshape(gh * gw, 3 * t * p * p)), [1, gh, gw]

    def _input(self, images: Sequence[Image.Image], min_pixels: int, max_pixels: int, *, video: bool) -> VisionInput:
        parts = [self._patches(image, min_pixels, max_pixels) for image in images]
        grid = torch.tensor([g for _, g in parts], dtype=torch.long)  # (n_images, 3)
        counts = [int(np.prod(g)) // self.merge_size ** 2 for _, g in parts]
        blocks = [f"{QWEN_VISION_START}{QWEN_IMAGE_PAD * n}{QWEN_VISION_END}\n" for n in counts]
        prefix = "".join(f"Frame{i + 1}: {b}" for i, b in enumerate(blocks)) if video else "".join(blocks)
        return VisionInput(torch.cat([x for x, _ in parts]), grid, prefix, sum(counts))

    def image(self, image: Image.Image) -> VisionInput:
        return self._input([image], self.min_pixels, self.max_pixels, video=False)

    def video(self, frames: Sequence[Image.Image]) -> VisionInput:
        """Each frame an image under the video pixel bounds, ``Frame{i}:`` lines as for InternVL."""
        return self._input(list(frames), self.video_min_pixels, self.video_max_pixels, video=True)

    def image_tokens(self, width: int | None = None, height: int | None = None) -> int:
        if width is None or height is None:
            return self.max_pixels // self.factor ** 2
        h, w = smart_resize(height, width, factor=self.factor, min_pixels=self.min_pixels, max_pixels=self.max_pixels)
        return (h // self.factor) * (w // self.factor)

    def frame_tokens(self) -> int:
        return self.video_max_pixels // self.factor ** 2


def _stats(value: str | Sequence[float], clip: tuple[float, ...]) -> tuple[float, ...]:
    named = {"clip": clip, "half": (0.5, 0.5, 0.5), "imagenet": None}
    if isinstance(value, str):
        if value not in named or named[value] is None:
            raise ValueError(f"image statistics must be 'clip', 'half' or 3 numbers, got {value!r}")
        return named[value]
    if len(value) != 3:
        raise ValueError(f"image statistics need 3 numbers (RGB), got {list(value)}")
    return tuple(float(v) for v in value)


def build_vision_inputs(vision: dict | None, **internvl_args) -> InternVLTiles | QwenVLPatches:
    """A reader's scheme: ``vision=None`` or ``dict(family='internvl')`` is InternVL's tiles with
    the reader's tiling arguments; ``dict(family='qwen_vl', **QwenVLPatches arguments)``."""
    vision = dict(vision or {})
    family = vision.pop("family", "internvl")
    if family == "internvl":
        return InternVLTiles(**{**internvl_args, **vision})
    if family == "qwen_vl":
        return QwenVLPatches(**vision)
    raise ValueError(f"vision.family must be one of {VISION_FAMILIES}, got {family!r}")


__all__ = ["VISION_FAMILIES", "InternVLTiles", "QwenVLPatches", "VisionInput", "build_vision_inputs", "smart_resize"]
