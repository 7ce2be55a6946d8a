"""Fixed position embeddings for randomly initialised vision towers (tiny models).

transformers initialises InternViT's absolute position embeddings and SAM-2 Hiera's windowed ones
to zeros. A pretrained checkpoint brings learned ones; a random tower that stays frozen (the tiny
CPU model) never learns any, so its features are a bag of patches and nothing downstream can
resolve "the circle on the left". A fixed 2D sine-cosine table (MAE's) stands in for the learned
embeddings. Checkpoints are never touched: these run only on random initialisation.
"""
from __future__ import annotations

import math

import torch
from torch import nn

POSITION_INITS = ("sincos", "zeros")


def sincos_position_table(grid: int | tuple[int, int], dim: int) -> torch.Tensor:
    """(rows * cols, dim) fixed 2D sine-cosine position embeddings, raster order: the first half of
    the channels encodes the row, the second half the column, each as sin / cos pairs at
    frequencies 1 / 10000^(k / (dim / 4)). ``grid``: side of a square grid, or (rows, cols)."""
    if dim % 4:
        raise ValueError(f"a 2D sine-cosine table needs a width divisible by 4, got {dim}")
    n_rows, n_cols = (grid, grid) if isinstance(grid, int) else grid
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))  # (dim/4,)
    rows, cols = torch.meshgrid(torch.arange(n_rows, dtype=torch.float64), torch.arange(n_cols, dtype=torch.float64),
                                indexing="ij")  # (rows, cols) each

    def encode(pos: torch.Tensor) -> torch.Tensor:
        angles = pos.reshape(-1, 1) * omega  # (rows*cols, dim/4)
        return torch.cat([angles.sin(), angles.cos()], dim=1)  # (rows*cols, dim/2)

    return torch.cat([encode(rows), encode(cols)], dim=1).float()  # (rows*cols, dim)


def check_position_init(position_init: str, key: str) -> None:
    if position_init not in POSITION_INITS:
        raise ValueError(f"{key} must be one of {POSITION_INITS}, got {position_init!r}")


def init_internvit_positions(vision_tower: nn.Module) -> None:
    """InternViT's patch position embeddings (1, 1 + N, D) from the table; the class token's entry
    stays zero. Without it a linear probe reads a token's column from the tiny model's image tokens
    with R^2 ~ 0.1 (0.83 with it)."""
    table = vision_tower.embeddings.position_embeddings  # (1, 1 + N, D)
    if table is None:
        return
    grid = math.isqrt(table.shape[1] - 1)
    if grid * grid != table.shape[1] - 1:
        raise ValueError(f"vision position table of {table.shape[1] - 1} patches is not a square grid")
    with torch.no_grad():
        table[0, 1:] = sincos_position_table(grid, table.shape[2]).to(table.dtype)


def init_hiera_positions(hiera: nn.Module) -> None:
    """SAM-2 Hiera's background position embedding (1, C, h, w) from the table (transformers
    interpolates it to the first stage's grid and adds the tiled window embedding, left at zero).
    Without it the frozen random encoder gives two identical shapes identical features wherever they
    are, and SAM-2's decoder can tell them apart only through its prompt-to-image attention."""
    background = hiera.pos_embed  # (1, C, h, w)
    _, dim, height, width = background.shape
    with torch.no_grad():
        table = sincos_position_table((height, width), dim)  # (h*w, C)
        background.copy_(table.T.reshape(1, dim, height, width).to(background.dtype))
