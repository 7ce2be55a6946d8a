"""Referring-video reader (MeViS / ReVOS / Ref-YouTube-VOS / Ref-DAVIS layouts) on synthetic data."""
import json
import os
import pickle
import shutil

import numpy as np
import pytest
import torch

from projects.salma.constants import IGNORE_INDEX, IMG_CONTEXT_TOKEN, SEG_TOKEN
from projects.salma.datasets.masks import decode_rle, encode_mask
from projects.salma.datasets.ref_vos import sample_frame_indices


def test_frame_sampling():
    rng = np.random.default_rng(0)
    for _ in range(20):
        idx = sample_frame_indices(8, 5, "random", rng)
        assert len(set(idx)) == 5 and idx == sorted(idx) and all(0 <= i < 8 for i in idx)
    assert sample_frame_indices(9, 5, "uniform", rng) == [0, 2, 4, 6, 8]
    assert sample_frame_indices(8, 5, "first", rng) == [0, 1, 2, 3, 4]
    short = sample_frame_indices(3, 5, "random", rng)  # too short: all frames, then repeats
    assert len(short) == 5 and set(short) == {0, 1, 2}
    with pytest.raises(ValueError):
        sample_frame_indices(8, 5, "middle", rng)


def test_train_item(build_data, data_cfgs, tiny_tokenizer, synthetic_data):
    ds = build_data(data_cfgs["mevis_train"], num_frames=5, num_expressions_per_sample=3)
    assert len(ds) == 6
    with open(os.path.join(synthetic_data["mevis_train"], "mask_dict.json")) as f:
        mask_dict = json.load(f)
    for i in range(len(ds)):
        s = ds[i]
        meta = s["meta"]
        n_obj = s["masks"].shape[0]
        assert s["pixel_values"].shape == (5, 3, 64, 64) and s["g_pixel_values"].shape == (5, 3, 128, 128)
        assert s["masks"].shape == (n_obj, 5, 96, 128) and s["masks"].dtype == torch.uint8
        assert len(set(meta["frame_indices"])) == 5 and meta["frame_indices"] == sorted(meta["frame_indices"])
        assert len(set(meta["exp_ids"])) == n_obj == len(meta["expressions"]) <= 3
        ids = s["input_ids"]
        assert int((ids == tiny_tokenizer.convert_tokens_to_ids(SEG_TOKEN)).sum()) == n_obj
        assert int((ids == tiny_tokenizer.convert_tokens_to_ids(IMG_CONTEXT_TOKEN)).sum()) == 5 * 16
        text = tiny_tokenizer.decode(ids)
        assert all(f"Frame{t + 1}: <img>" in text for t in range(5))
        answers = tiny_tokenizer.decode(s["labels"][s["labels"] != IGNORE_INDEX])
        assert "<img>" not in answers and answers.count(SEG_TOKEN) == n_obj
        for k, (exp, anno_ids) in enumerate(zip(meta["expressions"], meta["anno_ids"])):
            assert tiny_tokenizer.decode(ids[s["expr_ids"] == k]).strip() == exp
            for t, f in enumerate(meta["frame_indices"]):
                gt = decode_rle(mask_dict[str(anno_ids[0])][f], 96, 128)
                np.testing.assert_array_equal(s["masks"][k, t].numpy(), gt)


def test_eval_item_and_full_gt(build_data, data_cfgs, tiny_tokenizer):
    ds = build_data(data_cfgs["mevis_valid_u"])
    s = ds[0]
    meta = s["meta"]
    assert len(meta["all_frame_paths"]) == 8 and all(os.path.exists(p) for p in meta["all_frame_paths"])
    assert meta["frame_indices"] == [0, 2, 4, 5, 7]  # uniform over 8 frames
    n_exp = len(ds.items[0]["exps"])
    assert s["masks"].shape == (n_exp, 5, 96, 128) and len(meta["prompts"]) == n_exp
    gt = ds.load_gt_masks(0)
    assert gt.shape == (n_exp, 8, 96, 128)
    np.testing.assert_array_equal(gt[:, meta["frame_indices"]], s["masks"].numpy())
    assert meta["type_ids"] == [None] * n_exp
    full = build_data(data_cfgs["mevis_valid_u"], sam_all_frames=True)[0]
    assert full["g_pixel_values"].shape == (8, 3, 128, 128) and full["pixel_values"].shape[0] == 5
    np.testing.assert_array_equal(full["masks"].numpy(), gt)


@pytest.fixture
def revos_like(tmp_path, synthetic_data):
    """A ReVOS-style copy of the valid_u split: two-object expression, type_id, .pkl, foreground."""
    root = tmp_path / "revos"
    shutil.copytree(synthetic_data["mevis_valid_u"], root)
    meta = json.loads((root / "meta_expressions.json").read_text())
    masks = json.loads((root / "mask_dict.json").read_text())
    vid = sorted(meta["videos"])[0]
    exps = meta["videos"][vid]["expressions"]
    a, b = exps["0"]["anno_id"][0], exps[str(len(exps) - 1)]["anno_id"][0]
    exps["0"]["type_id"] = 0
    exps["99"] = {"exp": "which shapes are there?", "obj_id": [0, 1], "anno_id": [a, b], "type_id": 1}
    (root / "meta_expressions.json").write_text(json.dumps(meta))
    with open(root / "mask_dict.pkl", "wb") as f:
        pickle.dump(masks, f)
    frames = meta["videos"][vid]["frames"]
    fg = {vid: {"masks_rle": [encode_mask(np.ones((96, 128), np.uint8)) for _ in frames]}}
    (root / "mask_dict_foreground.json").write_text(json.dumps(fg))
    return root, vid, masks, a, b


def test_union_over_anno_ids_type_id_pkl_foreground(build_data, data_cfgs, revos_like, tiny_tokenizer):
    root, vid, masks, a, b = revos_like
    ds = build_data(data_cfgs["mevis_valid_u"], data_root=str(root), mask_file="mask_dict.pkl",
                    foreground_file="mask_dict_foreground.json")
    s = ds[0]
    meta = s["meta"]
    k = meta["exp_ids"].index("99")
    assert meta["type_ids"][0] == 0 and meta["type_ids"][k] == 1 and meta["anno_ids"][k] == [a, b]
    for t, f in enumerate(meta["frame_indices"]):
        union = decode_rle(masks[str(a)][f], 96, 128) | decode_rle(masks[str(b)][f], 96, 128)
        np.testing.assert_array_equal(s["masks"][k, t].numpy(), union)
    # a reasoning question is asked as is; its expression span is the whole question
    assert tiny_tokenizer.decode(s["input_ids"][s["expr_ids"] == k]).strip() == "which shapes are there?"
    fg = ds.load_foreground_masks(0)
    assert fg.shape == (8, 96, 128) and fg.all()
