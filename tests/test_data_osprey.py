"""Osprey-724K reader: regions become <vp> tokens of the last tile's grid; bad input is named or counted."""
import json
import os
import shutil

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from projects.salma.constants import IGNORE_INDEX, IM_END, IMG_CONTEXT_TOKEN, VP_END, VP_START
from projects.salma.datasets.errors import DataError
from projects.salma.datasets.templates import SHORT_ANSWER_SUFFIX
from projects.salma.datasets.visual_prompts import box_to_mask, region_cells

KINDS = ("conversation", "detail_description", "short_form", "part_level", "lvis_positive_negative")
GRID = 4  # tiny readers: 64 px tiles, 16 tokens per tile


def coco_mask(segm, h, w):
    """Independent decode (pycocotools only)."""
    rle = mask_utils.frPyObjects(segm, h, w) if isinstance(segm, list) or isinstance(segm.get("counts"), list) else segm
    m = mask_utils.decode(rle)
    return (m.max(axis=2) if m.ndim == 3 else m).astype(bool)


def nearest_cells(mask, grid):
    """torch 'nearest': output cell i reads input row floor(i * H / grid)."""
    h, w = mask.shape
    rows = np.floor(np.arange(grid) * h / grid).astype(int)
    cols = np.floor(np.arange(grid) * w / grid).astype(int)
    return mask[rows][:, cols]


@pytest.mark.parametrize("kind", KINDS)
def test_osprey_kinds(build_data, data_cfgs, tiny_tokenizer, synthetic_data, kind):
    ds = build_data(data_cfgs[f"osprey_{kind}"])
    records = json.load(open(os.path.join(synthetic_data["osprey"], "Osprey-724K", f"osprey_{kind}.json")))
    assert len(ds) == len(records) == 6 and all(n > 0 for n in ds.modality_lengths)
    ctx = tiny_tokenizer.convert_tokens_to_ids(IMG_CONTEXT_TOKEN)
    for i in (0, 1):
        s, rec = ds[i], records[i]
        assert s["masks"] is None and s["g_pixel_values"] is None
        expected = np.stack([nearest_cells(coco_mask(a["segmentation"], rec["height"], rec["width"]), GRID)
                             for a in rec["annotation"]])  # the last tile: the thumbnail, the whole image
        n_tiles = s["pixel_values"].shape[0]
        assert n_tiles > 1 and torch.equal(s["prompt_masks"], torch.from_numpy(expected))
        counts = expected.reshape(len(expected), -1).sum(1)
        assert int((s["input_ids"] == ctx).sum()) == 16 * n_tiles + counts.sum()
        text = tiny_tokenizer.decode(s["input_ids"])
        regions = ", ".join(f"region{k + 1}{VP_START}{IMG_CONTEXT_TOKEN * c}{VP_END}" for k, c in enumerate(counts))
        assert f"</img>\nThere are {len(counts)} part regions in the picture: {regions}.\n" in text
        assert "<region" not in text
        answers = tiny_tokenizer.decode(s["labels"][s["labels"] != IGNORE_INDEX])
        if kind == "detail_description":
            assert answers == "".join(d.replace("<region", "region").replace(">:", ":") + IM_END for d in rec["description"])
        else:
            assert answers == "".join(m["value"] + IM_END for m in rec["conversations"][1::2])
            questions = s["meta"]["questions"]
            assert all(q.endswith(SHORT_ANSWER_SUFFIX) == (kind == "short_form") for q in questions)


def test_last_tile_is_the_thumbnail_or_the_bottom_right_crop():
    mask = np.zeros((60, 90), dtype=np.uint8)
    mask[30:, 60:] = 1  # the bottom-right third
    whole = region_cells(mask[None], grid=4)
    assert torch.equal(whole[0], torch.from_numpy(nearest_cells(mask.astype(bool), 4)))
    crop = region_cells(mask[None], grid=4, layout=(3, 2))  # 3x2 tiles, no thumbnail: the last is bottom-right
    assert crop.all()
    assert torch.equal(torch.from_numpy(box_to_mask((60, 30, 90, 60), 60, 90)), torch.from_numpy(mask))
    with pytest.raises(ValueError, match="0 <= x0 < x1"):
        box_to_mask((10, 5, 10, 20), 60, 90)


@pytest.fixture
def osprey_copy(tmp_path, synthetic_data):
    root = tmp_path / "osprey"
    shutil.copytree(synthetic_data["osprey"], root)
    return root


def test_osprey_bad_input(build_data, data_cfgs, osprey_copy):
    path = osprey_copy / "Osprey-724K" / "osprey_conversation.json"
    records = json.loads(path.read_text())
    h, w = records[0]["height"], records[0]["width"]
    tiny = np.zeros((h, w), dtype=np.uint8)
    tiny[2:6, 2:6] = 1  # between the sampled pixels (rows 0, 24, ...): no cell of the 4x4 grid
    records[0]["annotation"][0]["segmentation"] = {"size": [h, w], "counts": mask_utils.encode(
        np.asfortranarray(tiny))["counts"].decode()}
    records[1]["annotation"][0]["segmentation"] = {"size": [h // 2, w], "counts": [0, h // 2 * w]}
    os.remove(next(osprey_copy.glob(f"images/*/{records[2]['file_name']}")))
    records[3]["conversations"][1]["value"] = " "
    path.write_text(json.dumps(records))
    cfg = dict(data_cfgs["osprey_conversation"], data_root=str(osprey_copy))

    with pytest.raises(DataError, match=r"osprey_conversation.json: record 3 .*message 1 is empty"):
        build_data(cfg)
    ds = build_data(cfg, on_error="skip")
    assert ds.index_skip_counts == {"empty_expression": 1} and len(ds) == 5
    eval_ds = build_data(cfg, on_error="skip", mode="eval")
    with pytest.raises(DataError, match=r"record 0 .*region1 covers 0 of the 4x4 vision-token cells .*at least 4"):
        eval_ds[0]
    with pytest.raises(DataError, match=r"record 1 .*region1: RLE size \[48, 128\] disagrees"):
        eval_ds[1]
    with pytest.raises(DataError, match=rf"{records[2]['file_name']}: image file not found in .*train2017, .*val2017"):
        eval_ds[2]
    sample = ds[0]  # training: the three bad items are skipped and counted
    assert sample["meta"]["index"] == 3
    assert sample["meta"]["skipped"] == {"region_too_small": 1, "rle_size": 1, "missing_image": 1}
