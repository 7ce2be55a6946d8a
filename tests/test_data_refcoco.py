"""RefCOCO reader on the synthetic RefCOCO-format set."""
import json
import os
import pickle

import numpy as np
import torch

from projects.salma.constants import IGNORE_INDEX, IM_END, IMG_CONTEXT_TOKEN, SEG_TOKEN
from projects.salma.datasets.collate import expand_eval_sample, salma_eval_collate
from projects.salma.datasets.masks import decode_segmentation


def _check_common(s, tok, n_tiles_expected=None):
    ids, labels, expr = s["input_ids"], s["labels"], s["expr_ids"]
    assert ids.dtype == labels.dtype == expr.dtype == torch.long and ids.shape == labels.shape == expr.shape
    masks = s["masks"]
    assert masks.dtype == torch.uint8 and set(masks.unique().tolist()) <= {0, 1}
    n_seg = int((ids == tok.convert_tokens_to_ids(SEG_TOKEN)).sum())
    assert n_seg == masks.shape[0] and set(expr.tolist()) == set(range(-1, n_seg))
    n_img = int((ids == tok.convert_tokens_to_ids(IMG_CONTEXT_TOKEN)).sum())
    assert n_img == s["pixel_values"].shape[0] * 16
    assert s["pixel_values"].dtype == s["g_pixel_values"].dtype == torch.float32
    assert s["g_pixel_values"].shape[1:] == (3, 128, 128) and s["pixel_values"].shape[1:] == (3, 64, 64)
    assert masks.shape[1] == s["g_pixel_values"].shape[0]
    assert tuple(masks.shape[2:]) == s["meta"]["orig_size"]


def test_train_item(build_data, data_cfgs, tiny_tokenizer, synthetic_data):
    ds = build_data(data_cfgs["refcoco_train"])
    assert len(ds) == 24 and len(ds.modality_lengths) == 24 and all(n > 0 for n in ds.modality_lengths)
    s = ds[0]
    _check_common(s, tiny_tokenizer)
    meta = s["meta"]
    assert s["masks"].shape == (3, 1, 96, 128) and s["pixel_values"].shape == (5, 3, 64, 64)
    assert len(set(meta["ref_ids"])) == 3  # refs drawn without replacement
    # labels: exactly the answers + <|im_end|>
    answer_text = tiny_tokenizer.decode(s["labels"][s["labels"] != IGNORE_INDEX])
    assert answer_text.count(IM_END) == 3 and answer_text.count(SEG_TOKEN) == 3
    # expressions: exactly the chosen sentences, in [SEG] order
    for k, sent in enumerate(meta["sentences"]):
        assert tiny_tokenizer.decode(s["input_ids"][s["expr_ids"] == k]).strip() == sent
    # masks: the referred annotations, decoded with pycocotools
    with open(os.path.join(synthetic_data["refcoco"], "instances.json")) as f:
        anns = {a["id"]: a for a in json.load(f)["annotations"]}
    for k, ann_id in enumerate(meta["ann_ids"]):
        np.testing.assert_array_equal(s["masks"][k, 0].numpy(), decode_segmentation(anns[ann_id]["segmentation"], 96, 128))
        assert int(s["masks"][k].sum()) == anns[ann_id]["area"]


def test_sampling_is_seeded_per_index_and_repeat(build_data, data_cfgs):
    ds = build_data(data_cfgs["refcoco_train"], num_classes_per_sample=2)
    a, b = ds.get_sample(3), ds.get_sample(3)
    assert torch.equal(a["input_ids"], b["input_ids"]) and a["meta"]["ref_ids"] == b["meta"]["ref_ids"]
    assert len(a["meta"]["ref_ids"]) == 2
    variants = {tuple(ds.get_sample(3, repeat=r)["input_ids"].tolist()) for r in range(6)}
    assert len(variants) > 1  # repeats of a mix draw other refs / sentences / templates


def test_eval_item_holds_every_sentence(build_data, data_cfgs, tiny_tokenizer, synthetic_data):
    ds = build_data(data_cfgs["refcoco_val"])
    with open(os.path.join(synthetic_data["refcoco"], "refs(unc).p"), "rb") as f:
        refs = [r for r in pickle.load(f) if r["split"] == "val"]
    assert len(ds) == 8
    seen = []
    for i in range(len(ds)):
        s = ds[i]
        _check_common(s, tiny_tokenizer)
        meta = s["meta"]
        seen += meta["sent_ids"]
        assert len(meta["sent_ids"]) == len(meta["sentences"]) == len(meta["ref_ids"]) == s["masks"].shape[0]
        assert len(meta["prompts"]) == s["masks"].shape[0]
    assert sorted(seen) == sorted(sid for r in refs for sid in r["sent_ids"])
    s = ds[0]
    # each sentence also as a stand-alone generation prompt, as inference asks it
    rows = expand_eval_sample(s)
    for k, row in enumerate(rows):
        assert (row["input_ids"] == tiny_tokenizer.convert_tokens_to_ids(SEG_TOKEN)).sum() == 0
        assert tiny_tokenizer.decode(row["input_ids"][row["expr_ids"] == 0]).strip() == s["meta"]["sentences"][k]
        assert tiny_tokenizer.decode(row["input_ids"]).endswith("<|im_start|>assistant\n")
        assert torch.equal(row["meta"]["gt_masks"], s["masks"][k:k + 1])
    batch = salma_eval_collate([s])["data"]
    assert batch["input_ids"].shape[0] == len(rows) and batch["masks"] == [None] * len(rows)
    assert batch["pixel_values"].shape[0] == len(rows) * s["pixel_values"].shape[0]
    assert (batch["labels"] == IGNORE_INDEX).all()
