"""Sizes in an exported ``config.json`` checked against ``model.safetensors`` before any weight
is allocated.

A config saying ``vocab_size = 2**31`` would otherwise make the allocator ask for a TiB before the
weights are compared. The model is built on PyTorch's ``meta`` device (shapes, no storage) and
its tensor shapes compared with those the safetensors header lists (read without the data).
"""
from __future__ import annotations

from typing import Callable

import torch
from safetensors import SafetensorError, safe_open


def header_shapes(path: str) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, from the safetensors header only; ValueError names a damaged file."""
    try:
        with safe_open(path, framework="pt") as f:
            return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path}: not a readable safetensors file ({err}); it is truncated or damaged: copy or "
                         "export it again") from err


def check_shapes_before_building(build_state: Callable[[], dict[str, torch.Tensor]], weights_path: str, *,
                                 config_path: str) -> None:
    """``build_state()`` (run on the meta device) gives the tensors the config makes; ValueError
    naming both files lists those whose shape differs from the file's (missing / extra keys are
    left to the key check after loading, which names them)."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in build_state().items()}
    found = header_shapes(weights_path)
    wrong = [f"{k}: the config makes {expected[k]}, the file holds {found[k]}"
             for k in sorted(set(expected) & set(found)) if expected[k] != found[k]]
    if wrong:
        raise ValueError(f"{config_path}: sizes disagree with {weights_path} ({len(wrong)} tensors): "
                         + "; ".join(wrong[:5]) + ("; ..." if len(wrong) > 5 else ""))
