"""Batch mixed image / video / text-only samples into the model's input contract.

Returns ``{"data": batch, "data_samples": None}`` (mmengine ``BaseModel.forward(data, data_samples,
mode)``), where ``batch`` is::

    input_ids       LongTensor (B, L), right-padded with pad_token_id
    attention_mask  BoolTensor (B, L)
    labels          LongTensor (B, L), IGNORE_INDEX on non-answer tokens and padding (not shifted)
    expr_ids        LongTensor (B, L), -1 padded
    pixel_values    FloatTensor (N_tiles_total, 3, S, S): every sample's InternVL tiles in batch
                    order, or None when no sample has an image. Qwen-VL: (N_patches_total, D_p),
                    every sample's patch rows in batch order (``datasets.vision_inputs``)
    image_grid_thw  Qwen-VL: LongTensor (N_images_total, 3), each image's patch grid in batch order
                    (a video: one row per frame); None for InternVL and without images
    g_pixel_values  list (B) of FloatTensor (T_b, 3, G, G) | None (samples without masks)
    masks           list (B) of uint8 Tensor (n_obj_b, T_b, H_b, W_b) | None
    prompt_masks    list (B) of BoolTensor (n_regions_b, g, g) | None: visual prompts (issue 12). The
                    regions of sample b on the vision-token grid of its LAST tile; its input_ids
                    hold, after the tiles' <IMG_CONTEXT> tokens, one <IMG_CONTEXT> per True cell
                    inside "regionI<vp>...</vp>" (region by region, raster order), which the model
                    fills with that tile's vision tokens (``models.mllm.InternVLMLLM.embed_inputs``).
                    A row's tile count is therefore (#<IMG_CONTEXT> - prompt_masks[b].sum()) / g**2.
    meta            list (B) of dicts

Evaluation items (``mode='eval'``) go through ``salma_eval_collate`` instead: one generation prompt
per sentence / expression, the form ``VideoLLaVASAMModel.predict`` takes.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..constants import IGNORE_INDEX
from ..registry import FUNCTIONS


def _pad(rows: Sequence[torch.Tensor], value: int) -> torch.Tensor:
    out = torch.full((len(rows), max(len(r) for r in rows)), value, dtype=torch.long)
    for b, row in enumerate(rows):
        out[b, : len(row)] = row
    return out


@FUNCTIONS.register_module()
def salma_collate(instances: Sequence[dict], pad_token_id: int | None = None) -> dict:
    """Collate SALMA samples (see module docstring).

    Args:
        pad_token_id: the tokenizer's pad id; default: the one each sample's reader recorded in
            ``meta['pad_token_id']``.
    """
    if pad_token_id is None:
        pad_token_id = instances[0]["meta"]["pad_token_id"]
    input_ids = _pad([x["input_ids"] for x in instances], pad_token_id)
    lengths = torch.tensor([len(x["input_ids"]) for x in instances])
    attention_mask = torch.arange(input_ids.shape[1])[None, :] < lengths[:, None]
    tiles = [x["pixel_values"] for x in instances if x["pixel_values"] is not None]
    grids = [x["image_grid_thw"] for x in instances if x.get("image_grid_thw") is not None]
    batch = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": _pad([x["labels"] for x in instances], IGNORE_INDEX),
        "expr_ids": _pad([x["expr_ids"] for x in instances], -1),
        "pixel_values": torch.cat(tiles) if tiles else None,
        "image_grid_thw": torch.cat(grids) if grids else None,
        "g_pixel_values": [x["g_pixel_values"] for x in instances],
        "masks": [x["masks"] for x in instances],
        "prompt_masks": [x.get("prompt_masks") for x in instances],
        "meta": [x["meta"] for x in instances],
    }
    return {"data": batch, "data_samples": None}


def expand_eval_sample(sample: dict) -> list[dict]:
    """An evaluation item -> one generation-prompt sample per entry of ``meta['prompts']``.

    Each has the item's images (same tensors, not copies), ``input_ids`` / ``expr_ids`` of its
    prompt, no labels, ``masks=None`` (a prompt has no ``[SEG]`` yet) and its GT in
    ``meta['gt_masks']`` (uint8 (n, T, H, W) or None), ``meta['prompt_index']`` = k: index k of
    the item's per-sentence lists (``sent_ids``, ``exp_ids``, ...).
    """
    meta = {k: v for k, v in sample["meta"].items() if k not in ("prompts", "prompt_objects")}
    out = []
    for k, (prompt, objects) in enumerate(zip(sample["meta"]["prompts"], sample["meta"]["prompt_objects"])):
        gt = None if sample["masks"] is None else sample["masks"][objects]
        out.append({
            "input_ids": prompt["input_ids"],
            "labels": torch.full_like(prompt["input_ids"], IGNORE_INDEX),
            "expr_ids": prompt["expr_ids"],
            "pixel_values": sample["pixel_values"],
            "image_grid_thw": sample.get("image_grid_thw"),
            "g_pixel_values": sample["g_pixel_values"],
            "masks": None,
            "prompt_masks": sample.get("prompt_masks"),
            "meta": {**meta, "prompt_index": k, "gt_masks": gt},
        })
    return out


@FUNCTIONS.register_module()
def salma_eval_collate(instances: Sequence[dict], pad_token_id: int | None = None) -> dict:
    """Collate evaluation items as generation prompts: one row per sentence / expression."""
    return salma_collate([p for x in instances for p in expand_eval_sample(x)], pad_token_id)
