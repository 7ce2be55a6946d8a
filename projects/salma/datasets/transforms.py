"""Image inputs of the two encoders, and the mask resize the model uses.

* InternVL2.5: dynamic tiling (``dynamic_preprocess``: the grid with ``min_num..max_num`` tiles whose
  aspect ratio is closest to the image's, tiles of ``image_size`` px, plus a thumbnail when there is
  more than one tile); video frames are one tile each (the 1x1 grid, i.e. a direct resize).
* SAM-2: a direct resize to ``size`` x ``size`` without keeping the aspect ratio (Sa2VA's
  DirectResize), as the SAM-2 encoder was fine-tuned on.
Both normalise with the ImageNet statistics. SAM-2's input has a second convention,
``sam_pixel_stats='sa2va_release'``: what Sa2VA's released HF code computes (``preprocess_image``
holds the statistics as bfloat16 tensors, 0.484375 for 0.485, ...), used where a published Sa2VA
folder is scored or loaded as its authors run it. PIL/numpy/torch only (no torchvision).
"""
from __future__ import annotations

from collections import Counter
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..constants import IMAGENET_MEAN, IMAGENET_STD
from .errors import DataError
from .image_policy import check_pixels, decode_errors, open_image

# (x / 255 - mean) / std as one multiply-subtract: x * _SCALE - _OFFSET.
_SCALE = (1.0 / (255.0 * torch.tensor(IMAGENET_STD, dtype=torch.float32))).view(3, 1, 1)
_OFFSET = (torch.tensor(IMAGENET_MEAN, dtype=torch.float32) / torch.tensor(IMAGENET_STD, dtype=torch.float32)).view(3, 1, 1)
# Sa2VA's released inference (hf/models/sam2.py ``preprocess_image``): image / 255, then -= mean and
# /= std with both held as bfloat16 tensors, the arithmetic in the image's float32.
_SA2VA_MEAN = torch.tensor(IMAGENET_MEAN, dtype=torch.bfloat16).float().view(3, 1, 1)
_SA2VA_STD = torch.tensor(IMAGENET_STD, dtype=torch.bfloat16).float().view(3, 1, 1)
SAM_PIXEL_STATS = ("imagenet", "sa2va_release")


def check_sam_pixel_stats(stats: str) -> str:
    if stats not in SAM_PIXEL_STATS:
        raise ValueError(f"sam_pixel_stats must be one of {SAM_PIXEL_STATS}, got {stats!r}")
    return stats


def load_image(path: str, *, orient: bool = False) -> Image.Image:
    """Open an image fully (so a truncated file fails here) as 8-bit RGB, under the pixel budget
    (:mod:`.image_policy`; ``orient``: upright by EXIF, for inference inputs); DataError names the file."""
    return open_image(path, orient=orient)


def image_size(path: str) -> tuple[int, int]:
    """(width, height) of an image file from its header, without decoding the pixels; the same
    DataErrors as :func:`load_image` for a missing or unreadable file."""
    with decode_errors(path), Image.open(path) as image:
        check_pixels(*image.size, path)
        return image.size


def common_frame_size(sizes: Mapping[str, tuple[int, int]], *, context: str = "") -> tuple[int, int]:
    """The (width, height) all frames of a video share, from ``{frame label: size}``.

    The reference is the size most frames have (a tie: the first frame's), so a DataError blames
    the frame that differs and names one that has the reference size, never the odd frame's
    neighbour. ``context`` ends the message (e.g. ``" (video v)"``).
    """
    reference = Counter(sizes.values()).most_common(1)[0][0]  # stable: ties keep the first frame's
    for label, size in sizes.items():
        if size != reference:
            example = next(k for k, v in sizes.items() if v == reference)
            raise DataError(f"{label}: size {size[0]}x{size[1]} differs from {reference[0]}x{reference[1]} of the "
                            f"video's other frames (e.g. {example}){context}", reason="size_mismatch")
    return reference


def _target_grids(min_num: int, max_num: int) -> list[tuple[int, int]]:
    # Same candidate order as InternVL2.5 (sorted by tile count), which decides ties below.
    grids = {(i, j) for n in range(min_num, max_num + 1) for i in range(1, n + 1) for j in range(1, n + 1)
             if min_num <= i * j <= max_num}
    return sorted(grids, key=lambda g: g[0] * g[1])


def closest_grid(width: int, height: int, *, min_num: int = 1, max_num: int = 12,
                 image_size: int = 448) -> tuple[int, int]:
    """(columns, rows) of the tile grid InternVL2.5 picks for a ``width`` x ``height`` image.

    Closest aspect ratio wins; on a tie the larger grid wins when the image has more than half
    the grid's pixel area (so large images get more tiles).
    """
    aspect = width / height
    best, best_diff = (1, 1), float("inf")
    for cols, rows in _target_grids(min_num, max_num):
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and width * height > 0.5 * image_size * image_size * cols * rows:
            best = (cols, rows)
    return best


def num_tiles(width: int, height: int, *, min_num: int = 1, max_num: int = 12, image_size: int = 448,
              use_thumbnail: bool = True) -> int:
    """Number of tiles ``dynamic_preprocess`` gives, without touching pixels (for length estimates)."""
    cols, rows = closest_grid(width, height, min_num=min_num, max_num=max_num, image_size=image_size)
    return cols * rows + int(use_thumbnail and cols * rows > 1)


def dynamic_preprocess(image: Image.Image, *, min_num: int = 1, max_num: int = 12, image_size: int = 448,
                       use_thumbnail: bool = True) -> list[Image.Image]:
    """Split ``image`` into the InternVL2.5 tiles (row-major), thumbnail last when tiles > 1."""
    cols, rows = closest_grid(*image.size, min_num=min_num, max_num=max_num, image_size=image_size)
    resized = image.resize((cols * image_size, rows * image_size), Image.Resampling.BICUBIC)
    tiles = [
        resized.crop((c * image_size, r * image_size, (c + 1) * image_size, (r + 1) * image_size))
        for r in range(rows) for c in range(cols)
    ]
    if use_thumbnail and len(tiles) > 1:
        tiles.append(image.resize((image_size, image_size), Image.Resampling.BICUBIC))
    return tiles


def to_normalized_tensor(image: Image.Image, size: int, out: torch.Tensor | None = None, *,
                         stats: str = "imagenet") -> torch.Tensor:
    """PIL RGB -> float32 (3, size, size), direct bicubic resize, ImageNet normalisation.

    ``out``: a (3, size, size) float32 tensor to write into (saves a copy when stacking frames).
    ``stats``: ``'imagenet'`` (float32 statistics) or ``'sa2va_release'`` (Sa2VA's HF inference:
    the statistics rounded to bfloat16, its order of operations).
    """
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)  # (3, S, S) uint8 view
    out = torch.empty(3, size, size) if out is None else out
    out.copy_(pixels)
    if check_sam_pixel_stats(stats) == "sa2va_release":
        return out.div_(255.0).sub_(_SA2VA_MEAN).div_(_SA2VA_STD)
    return out.mul_(_SCALE).sub_(_OFFSET)


def stack_normalized(images: list[Image.Image], size: int, *, stats: str = "imagenet") -> torch.Tensor:
    """Several images -> float32 (N, 3, size, size), each as :func:`to_normalized_tensor`."""
    out = torch.empty(len(images), 3, size, size)
    for i, image in enumerate(images):
        to_normalized_tensor(image, size, out=out[i], stats=stats)
    return out


def internvl_pixel_values(image: Image.Image, *, image_size: int = 448, min_num: int = 1, max_num: int = 12,
                          use_thumbnail: bool = True) -> torch.Tensor:
    """InternVL2.5 input of one image: (n_tiles, 3, image_size, image_size)."""
    tiles = dynamic_preprocess(image, min_num=min_num, max_num=max_num, image_size=image_size,
                               use_thumbnail=use_thumbnail)
    return stack_normalized(tiles, image_size)


def sam_pixel_values(image: Image.Image, *, size: int = 1024, stats: str = "imagenet") -> torch.Tensor:
    """SAM-2 input of one image or frame: (3, size, size), aspect ratio not kept."""
    return to_normalized_tensor(image, size, stats=stats)


def resize_masks(masks: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Resize binary masks (..., H, W) to ``size``: bilinear, then > 0.5; keeps the input dtype."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    lead = masks.shape[:-2]
    flat = masks.reshape(-1, 1, *masks.shape[-2:]).float()  # (N, 1, H, W)
    if flat.shape[0] == 0:
        return masks.new_zeros(*lead, *size)
    out = F.interpolate(flat, size=size, mode="bilinear", align_corners=False) > 0.5
    return out.reshape(*lead, *size).to(masks.dtype)
