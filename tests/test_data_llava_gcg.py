"""LLaVA conversations (image and text-only) and grounded captions (GranD-f layout)."""
import json
import os

import numpy as np
import pytest

from projects.salma.constants import IGNORE_INDEX, IM_END, IMG_CONTEXT_TOKEN, SEG_TOKEN
from projects.salma.datasets.errors import DataError
from projects.salma.datasets.gcg import tag_caption


def test_llava_image_and_text_only(build_data, data_cfgs, tiny_tokenizer, synthetic_data):
    ds = build_data(data_cfgs["llava"])
    records = json.load(open(synthetic_data["llava"]))
    assert len(ds) == len(records) == 8
    assert [n > 0 for n in ds.modality_lengths] == ["image" in r for r in records]
    img = ds[0]
    assert img["masks"] is None and img["g_pixel_values"] is None and img["pixel_values"].shape[1:] == (3, 64, 64)
    n_ctx = int((img["input_ids"] == tiny_tokenizer.convert_tokens_to_ids(IMG_CONTEXT_TOKEN)).sum())
    assert n_ctx == img["pixel_values"].shape[0] * 16
    text = tiny_tokenizer.decode(img["input_ids"])
    assert "<image>" not in text and text.index("</img>") < text.index("How many shapes")
    answers = [c["value"] for c in records[0]["conversations"][1::2]]
    assert tiny_tokenizer.decode(img["labels"][img["labels"] != IGNORE_INDEX]) == "".join(a + IM_END for a in answers)
    txt = ds[3]
    assert txt["pixel_values"] is None and txt["masks"] is None and txt["meta"]["image_paths"] == []
    assert (txt["expr_ids"] == -1).all()


def test_llava_bad_records(tmp_path, build_data, data_cfgs):
    path = tmp_path / "llava.json"
    path.write_text(json.dumps([
        {"id": "a", "conversations": [{"from": "gpt", "value": "hi"}]},
        {"id": "b", "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "x"}]},
        {"id": "c", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]},
    ]))
    with pytest.raises(DataError, match=r"llava.json: record 0 \(id a\).*alternate"):
        build_data(data_cfgs["llava"], data_file=str(path))
    ds = build_data(data_cfgs["llava"], data_file=str(path), on_error="skip")
    assert len(ds) == 1 and ds.skip_counts == {"bad_conversation": 2}


def test_tag_caption():
    answer, spans = tag_caption("A red circle and two squares.", [(2, 12), (17, 28)])
    assert answer == f"A <p> red circle </p> {SEG_TOKEN} and <p> two squares </p> {SEG_TOKEN}."
    assert [answer[s.start:s.end] for s in spans] == ["red circle", "two squares"]


def test_gcg_item(build_data, data_cfgs, tiny_tokenizer, synthetic_data):
    ds = build_data(data_cfgs["gcg"])
    records = json.load(open(synthetic_data["gcg"]))
    assert len(ds) == len(records) == 6
    for i in range(len(ds)):
        s = ds[i]
        rec = records[i]
        phrases = sorted(rec["groundings"], key=lambda p: rec["groundings"][p]["token_positives"][0])
        n = len(phrases)
        assert s["masks"].shape == (n, 1, 96, 128) and set(s["masks"].unique().tolist()) <= {0, 1}
        ids = s["input_ids"]
        assert int((ids == tiny_tokenizer.convert_tokens_to_ids(SEG_TOKEN)).sum()) == n
        for k, phrase in enumerate(phrases):
            assert tiny_tokenizer.decode(ids[s["expr_ids"] == k]).strip() == phrase
            assert (s["labels"][s["expr_ids"] == k] != IGNORE_INDEX).all()  # phrases are in the answer
            # a phrase naming several shapes has the union of their masks
            n_parts = len(rec["groundings"][phrase]["rle_masks"])
            assert s["masks"][k].sum() > 0 and (n_parts == 1 or phrase.split()[0] in ("two", "three", "four"))
        answer = tiny_tokenizer.decode(s["labels"][s["labels"] != IGNORE_INDEX])
        assert answer.count("<p>") == n and answer.endswith(IM_END)
    ev = build_data(data_cfgs["gcg"], mode="eval")[0]
    assert len(ev["meta"]["prompts"]) == 1 and ev["meta"]["prompt_objects"] == [list(range(ev["masks"].shape[0]))]


def test_gcg_bad_groundings(tmp_path, build_data, data_cfgs, synthetic_data):
    rec = json.load(open(synthetic_data["gcg"]))[0]
    bad = dict(rec, groundings={p: dict(g, token_positives=[0, 500]) for p, g in rec["groundings"].items()})
    path = tmp_path / "gcg.json"
    path.write_text(json.dumps([rec, bad]))
    with pytest.raises(DataError, match=r"gcg.json: record 1 .*grounding"):
        build_data(data_cfgs["gcg"], data_file=str(path))
    ds = build_data(data_cfgs["gcg"], data_file=str(path), on_error="skip")
    assert len(ds) == 1 and ds.skip_counts == {"bad_grounding": 1}


def test_refcocog_gcg_conversion(tmp_path, build_data, data_cfgs, synthetic_data):
    from projects.salma.datasets.gcg import convert_refcocog_gcg

    name = sorted(os.listdir(synthetic_data["refcoco_images"]))[0]
    square = [[10, 10, 40, 10, 40, 40, 10, 40]]
    src = [{"x": {"img_file_name": name, "caption": "\"A Red box next to a blue box.\"", "refs": [
        {"sentence": "a blue box", "segmentation": [[60, 10, 90, 10, 90, 40, 60, 40]]},
        {"sentence": "a red box", "segmentation": square},
        {"sentence": "red", "segmentation": square},  # overlaps "A Red box"
        {"sentence": "a green box", "segmentation": square},  # not in the caption
    ]}}, {"y": {"img_file_name": name, "caption": "Nothing.", "refs": []}}]
    records, dropped = convert_refcocog_gcg(src)
    assert dropped == {"phrase_not_in_caption": 1, "overlapping_phrase": 1, "record_without_phrase": 1}
    assert records[0]["caption"] == "A Red box next to a blue box."
    assert list(records[0]["groundings"]) == ["A Red box", "a blue box"]
    path = tmp_path / "gcg.json"
    path.write_text(json.dumps(records))
    s = build_data(data_cfgs["gcg"], data_file=str(path))[0]
    assert s["masks"].shape == (2, 1, 96, 128) and int(s["masks"][1].sum()) == 30 * 30


def test_psg_drops_ungrounded_phrases_and_counts_them(build_data, data_cfgs, tiny_tokenizer, synthetic_data):
    ds = build_data(data_cfgs["psg"])
    records = json.load(open(synthetic_data["psg"]))
    assert len(ds) == len(records) == 4 and all(r["groundings"]["picture"] is None for r in records)
    assert ds.filtered == {"ungrounded_phrase": 4} and ds.index_skip_counts == {}
    s = ds[0]
    phrases = [p for p, g in records[0]["groundings"].items() if g is not None]
    assert s["meta"]["phrases"] == sorted(phrases, key=lambda p: records[0]["groundings"][p]["token_positives"][0])
    assert s["masks"].shape[0] == len(phrases) == int((s["input_ids"] == tiny_tokenizer.convert_tokens_to_ids(SEG_TOKEN)).sum())


def test_flickr_coco_layout(tmp_path, build_data, data_cfgs, synthetic_data, tiny_tokenizer):
    from pycocotools import mask as mask_utils

    coco = json.load(open(synthetic_data["flickr"]))
    ds = build_data(data_cfgs["flickr"])
    assert len(ds) == len(coco["images"]) == 4 and ds.filtered == {}
    image = coco["images"][0]
    anns = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
    s = ds[0]
    assert s["meta"]["phrases"] == [image["caption"][slice(*a["tokens_positive"][0])] for a in anns]
    assert np.array_equal(s["masks"][:, 0].numpy(), np.stack([mask_utils.decode(a["sam_mask"]) for a in anns]))

    # GLaMM's filters, counted; two boxes of one phrase are one [SEG] with the union of their masks
    anns[1] = dict(anns[1], tokens_positive=anns[0]["tokens_positive"])
    anns.append(dict(anns[0], id=999, ignore=True))
    anns.append(dict(anns[0], id=998, bbox=[0, 0, 0, 5]))
    short = dict(coco["images"][1], caption="Two shapes")
    empty = dict(coco["images"][2], id=77)  # no annotation left: an error
    quoted = dict(coco["images"][3], caption=' "' + coco["images"][3]["caption"] + '"')  # spans index this text
    quoted_anns = [dict(a, tokens_positive=[[b + 2 for b in a["tokens_positive"][0]]]) for a in coco["annotations"]
                   if a["image_id"] == quoted["id"]]
    path = tmp_path / "flickr.json"
    path.write_text(json.dumps({"images": [image, short, empty, quoted], "annotations": anns + quoted_anns}))
    with pytest.raises(DataError, match=r"flickr.json: record 1 .*no grounded phrase"):
        build_data(data_cfgs["flickr"], data_file=str(path))
    ds = build_data(data_cfgs["flickr"], data_file=str(path), on_error="skip")
    assert ds.filtered == {"short_caption": 1, "ignored_box": 1, "degenerate_box": 1}
    assert ds.index_skip_counts == {"empty_expression": 1} and len(ds) == 2
    q = ds[1]  # the phrases tagged in the answer are the annotated ones
    assert [tiny_tokenizer.decode(q["input_ids"][q["expr_ids"] == k]).strip() for k in range(len(quoted_anns))] == \
        [quoted["caption"][slice(*a["tokens_positive"][0])] for a in quoted_anns]
    s = ds[0]
    union = mask_utils.decode(anns[0]["sam_mask"]) | mask_utils.decode(anns[1]["sam_mask"])
    assert s["masks"].shape[0] == len(anns) - 3 and np.array_equal(s["masks"][0, 0].numpy(), union)
