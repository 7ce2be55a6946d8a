"""Visual prompts (Sa2VA / Osprey ``<vp>`` tokens): a region of the image given to the LLM as the
vision tokens under it.

A region is a binary mask (H, W) of the image (a box is first turned into one). It is resized
(nearest, as Sa2VA does) to the vision-token grid of the image's **last tile** (g x g, g**2 =
``image_seq_length``: 16 x 16 for 448 px tiles after pixel shuffle); the region's tokens are that
tile's vision tokens under the resized mask, in raster order (K_i of them, one per mask cell).
The last tile is the thumbnail (several tiles) or the only tile: the whole image. Without a
thumbnail and with several tiles it is the bottom-right crop, and the mask is cropped with it.
A region with fewer than ``MIN_REGION_CELLS`` cells is refused (Sa2VA drops such samples).

The first question then starts, after the image tokens::

    There are N part regions in the picture: region1<vp><IMG_CONTEXT> x K_1</vp>, ..., regionN<vp>...</vp>.\\n

and ``<regionI>`` in the text becomes ``regionI``. The readers put the resized masks in the
sample's ``prompt_masks`` (bool (N, g, g)); the model fills the ``<vp>`` slots with the gathered
tokens (``models.mllm.InternVLMLLM.embed_inputs``).
"""
from __future__ import annotations

import math
import re
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..constants import IMG_CONTEXT_TOKEN, VP_END, VP_START
from .errors import DataError
from .transforms import closest_grid

MIN_REGION_CELLS = 4
_REGION_TAG = re.compile(r"<(region\d+)>")
_REGION_NAME = re.compile(r"\bregion(\d+)\b")


def token_grid(image_seq_length: int) -> int:
    """Side g of a tile's vision-token grid (``image_seq_length`` = g**2)."""
    g = math.isqrt(image_seq_length)
    if g * g != image_seq_length:
        raise ValueError(f"image_seq_length {image_seq_length} is not a square token grid")
    return g


def last_tile_layout(width: int, height: int, *, n_tiles: int, use_thumbnail: bool, min_num: int, max_num: int,
                     image_size: int) -> tuple[int, int]:
    """(columns, rows) of the tiling the last tile is a cell of: (1, 1) when it is the whole image."""
    if n_tiles == 1 or use_thumbnail:
        return 1, 1
    return closest_grid(width, height, min_num=min_num, max_num=max_num, image_size=image_size)


def region_cells(masks: np.ndarray | torch.Tensor, *, grid: int, layout: tuple[int, int] = (1, 1)) -> torch.Tensor:
    """Binary masks (N, H, W) -> bool (N, grid, grid): the last tile's token cells under each mask.

    Nearest resize of the whole mask to the tiling (``layout`` = (cols, rows), (1, 1) = the whole
    image), then the bottom-right ``grid`` x ``grid`` block (the last tile).
    """
    masks = torch.as_tensor(np.asarray(masks) if isinstance(masks, np.ndarray) else masks)
    if masks.ndim != 3:
        raise ValueError(f"region masks must be (N, H, W), got {tuple(masks.shape)}")
    cols, rows = layout
    if masks.shape[0] == 0:
        return torch.zeros(0, grid, grid, dtype=torch.bool)
    resized = F.interpolate(masks[None].float(), size=(rows * grid, cols * grid), mode="nearest")[0]
    return resized[:, -grid:, -grid:] > 0  # (N, grid, grid)


def check_region_cells(cells: torch.Tensor, *, source: str) -> list[int]:
    """Cells per region (K_i); DataError when a region has fewer than ``MIN_REGION_CELLS``."""
    counts = [int(c) for c in cells.flatten(1).sum(1)]
    for i, k in enumerate(counts):
        if k < MIN_REGION_CELLS:
            grid = cells.shape[-1]
            raise DataError(f"{source}: region{i + 1} covers {k} of the {grid}x{grid} vision-token cells of the "
                            f"last tile (at least {MIN_REGION_CELLS} needed)", reason="region_too_small")
    return counts


def region_prompt(counts: Sequence[int]) -> str:
    """The region list that follows the image tokens in the first question (see module doc)."""
    if not counts:
        raise ValueError("a region prompt needs at least one region")
    parts = [f"region{i + 1}{VP_START}{IMG_CONTEXT_TOKEN * int(k)}{VP_END}" for i, k in enumerate(counts)]
    return f"There are {len(counts)} part regions in the picture: " + ", ".join(parts) + ".\n"


def untag_regions(text: str) -> str:
    """``<region1>`` -> ``region1`` (the text names regions without brackets)."""
    return _REGION_TAG.sub(r"\1", text)


def named_regions(text: str) -> set[int]:
    """Region numbers a text mentions (``region2`` -> 2)."""
    return {int(n) for n in _REGION_NAME.findall(untag_regions(text))}


def box_to_mask(box: Sequence[float], height: int, width: int) -> np.ndarray:
    """A box (x0, y0, x1, y1) in pixels (x1, y1 exclusive) -> uint8 (H, W) mask of the pixels it covers."""
    if len(box) != 4:
        raise ValueError(f"a box is (x0, y0, x1, y1), got {tuple(box)}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError(f"box {tuple(box)} must satisfy 0 <= x0 < x1 <= {width} and 0 <= y0 < y1 <= {height}")
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[int(math.floor(y0)):int(math.ceil(y1)), int(math.floor(x0)):int(math.ceil(x1))] = 1
    return mask
