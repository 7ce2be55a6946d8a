"""Visual prompts in the model: <vp> slots hold the last tile's vision tokens under each region."""
import copy

import numpy as np
import pytest
import torch
from mmengine.config import Config
from pycocotools import mask as mask_utils

from projects.salma.constants import IMG_CONTEXT_TOKEN, VP_END, VP_START
from projects.salma.datasets.collate import salma_collate
from projects.salma.registry import MODELS

TINY = "configs/tiny/salma_tiny.py"
# salma_tiny.py's sizes; at least 2 tiles + the thumbnail, so "the last tile" is not the only one
MODEL_SIZES = dict(image_size=128, image_seq_length=16, min_dynamic_patch=2, max_dynamic_patch=4, sam_image_size=128)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MODELS.build(copy.deepcopy(Config.fromfile(TINY).model))


@pytest.fixture(scope="module")
def osprey(build_data, data_cfgs):
    return build_data(data_cfgs["osprey_conversation"], **MODEL_SIZES)


def _capture_llm_inputs(model):
    captured = {}

    def hook(module, args, kwargs):
        captured["embeds"] = kwargs["inputs_embeds"].detach().clone()

    return captured, model.mllm.model.model.language_model.register_forward_pre_hook(hook, with_kwargs=True)


def _cells_under(segmentation, height, width, grid=4):
    """Independent region cells: pycocotools decode, then torch-'nearest' sampling by hand."""
    rle = segmentation if isinstance(segmentation, dict) and isinstance(segmentation["counts"], str) else \
        mask_utils.frPyObjects(segmentation, height, width)
    mask = mask_utils.decode(rle)
    mask = mask.max(axis=2) if mask.ndim == 3 else mask
    rows = np.floor(np.arange(grid) * height / grid).astype(int)
    cols = np.floor(np.arange(grid) * width / grid).astype(int)
    return mask[rows][:, cols].astype(bool)


def test_vp_slots_hold_the_vision_tokens_under_each_region(model, osprey, synthetic_data):
    import json
    import os

    records = json.load(open(os.path.join(synthetic_data["osprey"], "Osprey-724K", "osprey_conversation.json")))
    index = next(i for i, r in enumerate(records) if len(r["annotation"]) == 2)  # two regions
    sample, record = osprey[index], records[index]
    batch = salma_collate([sample])["data"]
    captured, handle = _capture_llm_inputs(model)
    try:
        with torch.no_grad():
            model.mllm(batch["input_ids"], batch["attention_mask"], batch["pixel_values"],
                       prompt_masks=batch["prompt_masks"])
    finally:
        handle.remove()
    embeds = captured["embeds"][0]  # (L, D)
    with torch.no_grad():
        features = model.mllm.model.model.get_image_features(pixel_values=batch["pixel_values"]).pooler_output
    n_tiles, per_tile, dim = features.shape
    assert n_tiles > 1  # the last tile is the thumbnail

    tok = model.tokenizer
    ids = batch["input_ids"][0]
    ctx = (ids == tok.convert_tokens_to_ids(IMG_CONTEXT_TOKEN)).nonzero().flatten()
    assert torch.equal(embeds[ctx[: n_tiles * per_tile]], features.flatten(0, 1))  # the tiles, in order
    starts = (ids == tok.convert_tokens_to_ids(VP_START)).nonzero().flatten().tolist()
    ends = (ids == tok.convert_tokens_to_ids(VP_END)).nonzero().flatten().tolist()
    thumbnail = features[-1].reshape(4, 4, dim)
    assert len(starts) == len(ends) == 2
    for k, (a, b) in enumerate(zip(starts, ends)):
        cells = _cells_under(record["annotation"][k]["segmentation"], record["height"], record["width"])
        expected = thumbnail[torch.from_numpy(cells)]  # (K_k, D): raster order
        assert b - a - 1 == int(cells.sum()) >= 4
        assert torch.equal(embeds[a + 1:b], expected)


def test_another_region_changes_the_answer_logits(model, osprey):
    sample = osprey[0]
    batch = salma_collate([sample])["data"]
    region = batch["prompt_masks"][0]  # (1, 4, 4)
    moved = torch.roll(region, shifts=(1, 1), dims=(1, 2))  # as many cells, elsewhere
    assert int(moved.sum()) == int(region.sum()) and not torch.equal(moved, region)
    answer = batch["labels"][0, 1:] != -100

    def answer_logits(regions):
        with torch.no_grad():
            hidden, _ = model.mllm(batch["input_ids"], batch["attention_mask"], batch["pixel_values"],
                                   prompt_masks=[regions])
            return model.mllm.model.lm_head(hidden[0, :-1][answer])

    same = answer_logits(region)
    assert torch.equal(same, answer_logits(region.clone()))
    assert (answer_logits(moved) - same).abs().max() > 1e-4


def test_mixed_batch_trains_one_step_with_every_trainable_module_getting_grad(model, osprey, build_data, data_cfgs):
    model = copy.deepcopy(model).train()
    with torch.no_grad():
        model.grounding_encoder.cma.gamma_attn.fill_(0.5)
    seg = build_data(data_cfgs["refcoco_train"], **MODEL_SIZES)[0]
    chat = build_data(data_cfgs["llava"], **MODEL_SIZES)[3]
    assert chat["pixel_values"] is None and seg["masks"] is not None
    batch = salma_collate([osprey[1], seg, chat])["data"]
    losses = model(batch, mode="loss")
    assert {"loss_llm", "loss_mask", "loss_dice"} <= set(losses)
    sum(losses.values()).backward()
    params = dict(model.named_parameters())
    assert [n for n, p in params.items() if p.requires_grad and p.grad is None] == []
    assert [n for n, p in params.items() if not p.requires_grad and p.grad is not None] == []
    assert params["text_hidden_fcs.0.weight"].grad.abs().sum() > 0
    assert any(p.grad.abs().sum() > 0 for n, p in params.items() if "lora_B" in n)


def test_region_errors(model, osprey):
    batch = salma_collate([osprey[0]])["data"]
    wrong_grid = torch.zeros(1, 8, 8, dtype=torch.bool)
    wrong_grid.view(-1)[: int(batch["prompt_masks"][0].sum())] = True  # as many cells, on an 8x8 grid
    with pytest.raises(ValueError, match=r"regions on a \(8, 8\) grid, the tiles' vision tokens form a \(4, 4\) grid"):
        model.mllm(batch["input_ids"], batch["attention_mask"], batch["pixel_values"], prompt_masks=[wrong_grid])
    with pytest.raises(ValueError, match="not a whole number of 16-token tiles"):
        model.mllm(batch["input_ids"], batch["attention_mask"], batch["pixel_values"], prompt_masks=None)
