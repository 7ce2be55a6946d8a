"""Converters (datasets/convert) on synthetic sets in the official layouts (datasets/synthetic_raw):
the converted sets are read by the readers, every mask equals the source PNG's object (read here
with PIL, not with the converter's code), ids are Sa2VA's counter, and bad inputs are named."""
import json
import os
import pickle
import shutil

import numpy as np
import pytest
from PIL import Image

from projects.salma.datasets.convert import ConversionError, convert_own_data, convert_ref_davis17, convert_ref_ytvos
from projects.salma.datasets.convert.common import Expression, Video, sa2va_anno_ids
from projects.salma.datasets.masks import decode_rle, decode_segmentation
from projects.salma.datasets.synthetic_raw import write_davis17_raw, write_own_raw, write_ref_ytvos_raw
from projects.salma.evaluation.metrics import aggregate_refvos
from projects.salma.evaluation.ref_vos import score_expression

READER = dict(tokenizer=dict(type="build_tiny_tokenizer"), image_size=64, image_seq_length=16, min_dynamic_patch=1,
              max_dynamic_patch=1, sam_image_size=128, max_length=2048)


def png_ids(path):
    return np.asarray(Image.open(path))


def read(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("raw"))
    return {"ytvos": write_ref_ytvos_raw(out), **write_davis17_raw(out), "own": write_own_raw(out), "out": out}


def copy_of(src, tmp_path):
    dst = str(tmp_path / os.path.basename(src))
    shutil.copytree(src, dst, symlinks=True)
    return dst


# ------------------------------------------------------------------ numbering
def test_anno_ids_are_sa2vas_counter_over_sorted_videos_and_string_sorted_exp_ids():
    videos = {"b": Video(["0"], {str(k): Expression("x", 1) for k in range(12)}),
              "a": Video(["0"], {"0": Expression("x", 1), "1": Expression("y", 1)})}
    ids = sa2va_anno_ids(videos)
    assert ids[("a", "0")] == 0 and ids[("a", "1")] == 1  # 'a' sorts first
    # in 'b': '0', '1', '10', '11', '2', ... '9' (Sa2VA sorts the keys as strings)
    assert [ids[("b", e)] for e in ("0", "1", "10", "11", "2", "9")] == [2, 3, 4, 5, 6, 13]


# ------------------------------------------------------------------ Ref-YouTube-VOS
def test_ref_ytvos_train_masks_equal_the_palette_pngs_and_the_reader_reads_them(raw, tmp_path, build_data):
    report = convert_ref_ytvos(raw["ytvos"], str(tmp_path / "out"), progress=False)
    assert {k: report["train"][k] for k in ("videos", "expressions", "frames")} == {"videos": 3, "expressions": 20,
                                                                                   "frames": 12}
    assert report["valid"]["masks"] == 0 and report["valid"]["videos"] == 2
    src = read(os.path.join(raw["ytvos"], "meta_expressions", "train", "meta_expressions.json"))["videos"]
    meta = read(str(tmp_path / "out" / "train" / "meta_expressions.json"))["videos"]
    masks = read(str(tmp_path / "out" / "train" / "mask_dict.json"))
    counter = 0
    for vid in sorted(src):
        assert meta[vid]["frames"] == sorted(src[vid]["frames"])
        for exp_id in sorted(src[vid]["expressions"]):  # string order: the hand-made counter
            exp, ours = src[vid]["expressions"][exp_id], meta[vid]["expressions"][exp_id]
            assert ours == {"exp": exp["exp"], "obj_id": [int(exp["obj_id"])], "anno_id": [counter]}
            for t, frame in enumerate(meta[vid]["frames"]):
                ids = png_ids(os.path.join(raw["ytvos"], "train", "Annotations", vid, frame + ".png"))
                want = (ids == int(exp["obj_id"])).astype(np.uint8)
                np.testing.assert_array_equal(decode_rle(masks[str(counter)][t], *ids.shape), want)
                assert (masks[str(counter)][t] is None) == (not want.any())
            counter += 1
    assert len(masks) == counter == 20
    twelve = next(v for v in meta if len(meta[v]["expressions"]) == 12)
    first = meta[twelve]["expressions"]["0"]["anno_id"][0]
    assert meta[twelve]["expressions"]["10"]["anno_id"] == [first + 2]  # '10' right after '1'
    train = build_data(dict(type="RefVOSDataset", data_root=str(tmp_path / "out" / "train"), mode="train",
                            expression_file="meta_expressions.json", image_folder="JPEGImages",
                            mask_file="mask_dict.json", num_frames=2, **READER))
    assert len(train) == 3 and train[0]["masks"].shape[-2:] == (96, 128)
    valid = build_data(dict(type="RefVOSDataset", data_root=str(tmp_path / "out" / "valid"), mode="eval",
                            expression_file="meta_expressions.json", image_folder="JPEGImages", num_frames=2,
                            **READER))
    assert len(valid) == 2 and valid[0]["masks"] is None


def test_ref_ytvos_bad_inputs_are_named_together(raw, tmp_path):
    root = copy_of(raw["ytvos"], tmp_path)
    meta_path = os.path.join(root, "meta_expressions", "train", "meta_expressions.json")
    meta = read(meta_path)
    vids = sorted(meta["videos"])
    meta["videos"][vids[0]]["expressions"]["0"]["obj_id"] = "7"  # a palette id in no frame
    meta["videos"][vids[1]]["expressions"]["0"]["exp"] = "  "
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    frame = meta["videos"][vids[2]]["frames"][1]
    os.remove(os.path.join(root, "train", "Annotations", vids[2], frame + ".png"))  # a frame without annotation
    with pytest.raises(ConversionError) as err:
        convert_ref_ytvos(root, str(tmp_path / "out"), splits=("train",), progress=False)
    text = str(err.value)
    assert "3 bad record(s)" in text
    assert f"video {vids[0]} exp 0: obj_id 7 (palette index) is in none of the 4 annotation PNGs" in text
    assert f"video {vids[1]} exp 0: empty expression" in text
    assert f"Annotations/{vids[2]}/{frame}.png: frame {frame} has no annotation PNG" in text
    assert not os.path.exists(tmp_path / "out" / "train" / "meta_expressions.json")  # nothing written
    report = convert_ref_ytvos(root, str(tmp_path / "out"), splits=("train",), on_error="skip", progress=False)
    assert report["train"]["videos"] == 2 and len(report["train"]["skipped"]) == 3
    assert report["train"]["expressions"] == 20 - 2 - len(meta["videos"][vids[2]]["expressions"])


# ------------------------------------------------------------------ Ref-DAVIS17
def test_ref_davis17_four_expressions_per_object_in_referformers_order(raw, tmp_path, build_data):
    report = convert_ref_davis17(raw["davis"], raw["text"], str(tmp_path / "out"), splits=("train", "valid"),
                                 progress=False)
    valid = read(str(tmp_path / "out" / "valid" / "meta_expressions.json"))["videos"]
    assert sorted(valid) == ["classic-car", "dogs-scale"]  # the text files' 'clasic-car', 'dog-scale' fixed
    masks = read(str(tmp_path / "out" / "valid" / "mask_dict.json"))
    counter = 0
    for vid in sorted(valid):
        exps = valid[vid]["expressions"]
        n_obj = len(exps) // 4
        assert len(exps) == 4 * n_obj and n_obj >= 2
        for exp_id in sorted(exps):
            k = int(exp_id) // 4
            exp = exps[exp_id]
            assert exp["obj_id"] == [k + 1] and exp["anno_id"] == [counter]
            for t, frame in enumerate(valid[vid]["frames"]):
                ids = png_ids(os.path.join(raw["davis"], "Annotations", "480p", vid, frame + ".png"))
                np.testing.assert_array_equal(decode_rle(masks[str(counter)][t], *ids.shape),
                                              (ids == k + 1).astype(np.uint8))
            counter += 1
        assert exps["2"]["exp"].endswith("très visible")  # annotator 2's Latin-1 file decoded
        assert "moving around" in exps["1"]["exp"] and "that is" in exps["3"]["exp"]
    assert report["valid"]["expressions"] == counter == len(masks)
    assert report["train"]["videos"] == 1
    dataset = build_data(dict(type="RefVOSDataset", data_root=str(tmp_path / "out" / "valid"), mode="eval",
                              expression_file="meta_expressions.json", image_folder="JPEGImages",
                              mask_file="mask_dict.json", num_frames=2, **READER))
    assert len(dataset) == 2 and dataset[0]["meta"]["exp_ids"] == sorted(valid["classic-car"]["expressions"],
                                                                           key=int)


def test_ref_davis17_protocol_weights_every_expression_of_both_annotators_alike(raw, tmp_path, build_data):
    """Hand-computed: perfect masks for annotator 1's sentences and empty ones for annotator 2's
    give J = F = 50 (all four sentences per object count, none is chosen); annotator 1 alone: 100."""
    convert_ref_davis17(raw["davis"], raw["text"], str(tmp_path / "out"), progress=False)
    dataset = build_data(dict(type="RefVOSDataset", data_root=str(tmp_path / "out" / "valid"), mode="eval",
                              expression_file="meta_expressions.json", image_folder="JPEGImages",
                              mask_file="mask_dict.json", num_frames=2, **READER))
    records, annotator1 = [], []
    for index in range(len(dataset)):
        gt = dataset.load_gt_masks(index)  # (n_exp, T, H, W)
        for exp_id, g in zip(dataset.items[index]["exps"], gt):
            assert g.any(axis=(1, 2)).all()  # every object is in every frame of this set: J, F are 0 or 1
            first_annotator = int(exp_id["exp_id"]) % 4 < 2
            rec = score_expression(g, g.astype(bool) if first_annotator else None, None, revos=False)
            records.append(rec)
            if first_annotator:
                annotator1.append(rec)
    assert len(records) == 16
    assert aggregate_refvos(records) == {"J": 50.0, "F": 50.0, "J&F": 50.0, "n": 16}
    assert aggregate_refvos(annotator1)["J&F"] == 100.0


def test_ref_davis17_bad_inputs_are_named(raw, tmp_path):
    text = copy_of(raw["text"], tmp_path)
    with open(os.path.join(text, "Davis17_annot1.txt"), "a", encoding="utf-8") as f:
        f.write('classic-car 9 "the ninth object"\n')  # a sentence for an unknown object
        f.write('unicorn 1 "a unicorn"\n')  # a video DAVIS does not have
    with pytest.raises(ConversionError) as err:
        convert_ref_davis17(raw["davis"], text, str(tmp_path / "out"), progress=False)
    message = str(err.value)
    assert "Davis17_annot1.txt:" in message and "video 'unicorn' is not in" in message
    assert "video classic-car: Davis17_annot1_full_video.txt names objects" in message  # object 9 only in one file
    davis = copy_of(raw["davis"], tmp_path)
    os.remove(os.path.join(davis, "Annotations", "480p", "dogs-scale", "00002.png"))
    with pytest.raises(ConversionError, match=r"dogs-scale/00002.png: frame 00002 has no annotation PNG"):
        convert_ref_davis17(davis, raw["text"], str(tmp_path / "out2"), progress=False)


# ------------------------------------------------------------------ own data
def test_own_data_converts_to_refcoco_and_mevis_layouts_read_by_the_readers(raw, tmp_path, build_data):
    out = str(tmp_path / "out")
    report = convert_own_data(raw["own"], out, progress=False)
    source = read(raw["own"])["items"]
    root = os.path.dirname(raw["own"])
    images = [i for i in source if "image" in i]
    assert report["res"]["train"]["images"] == 6 and report["res"]["val"]["images"] == 2
    assert report["res"]["train"]["objects"] + report["res"]["val"]["objects"] == sum(len(i["objects"]) for i in images)
    instances = read(os.path.join(out, "res", "instances.json"))
    with open(os.path.join(out, "res", "refs(unc).p"), "rb") as f:
        refs = pickle.load(f)
    anns = {a["id"]: a for a in instances["annotations"]}
    assert [im["id"] for im in instances["images"]] == list(range(1, 9))
    assert [r["ref_id"] for r in refs] == [r["ann_id"] for r in refs] == list(range(1, len(refs) + 1))
    assert [s["sent_id"] for r in refs for s in r["sentences"]] == list(range(1, 1 + sum(len(r["sentences"]) for r in refs)))
    k = 0
    for image_id, item in enumerate(images, 1):
        for obj in item["objects"]:
            ref = refs[k]
            ann = anns[ref["ann_id"]]
            assert ref["image_id"] == image_id and ann["source_id"] == f"{item['id']}/{obj['id']}"
            assert [s["sent"] for s in ref["sentences"]] == obj["sentences"]
            assert ref["split"] == item.get("split", "train")
            if "mask" in obj:  # the source PNG's object, read here
                ids = png_ids(os.path.join(root, obj["mask"]))
                want = (ids == obj["value"]) if "value" in obj else (ids != 0)
            else:
                want = decode_rle(obj["segmentation"], 96, 128)
            np.testing.assert_array_equal(decode_segmentation(ann["segmentation"], 96, 128), want.astype(np.uint8))
            k += 1
    res = build_data(dict(type="RefCOCODataset", data_root=os.path.join(out, "res"),
                          image_folder=os.path.join(out, "res", "images"), split="val", mode="eval", **READER))
    assert len(res) == 2

    meta = read(os.path.join(out, "rvos", "train", "meta_expressions.json"))["videos"]
    masks = read(os.path.join(out, "rvos", "train", "mask_dict.json"))
    assert sorted(meta) == ["clip_00", "walk_00", "walk_01"]
    walk = next(i for i in source if i["id"] == "walk_00")
    assert sorted(meta["walk_00"]["expressions"], key=int) == [str(n) for n in range(sum(len(o["sentences"]) for o in walk["objects"]))]
    offset = len(meta["clip_00"]["expressions"])  # clip_00 sorts first: its anno ids come first
    e = 0
    for k, obj in enumerate(walk["objects"]):
        for sentence in obj["sentences"]:
            exp = meta["walk_00"]["expressions"][str(e)]
            anno = sorted(meta["walk_00"]["expressions"]).index(str(e)) + offset
            assert exp == {"exp": sentence, "obj_id": [k], "anno_id": [anno]}
            for t, frame in enumerate(meta["walk_00"]["frames"]):
                ids = png_ids(os.path.join(root, obj["mask"], os.path.splitext(frame)[0] + ".png"))
                np.testing.assert_array_equal(decode_rle(masks[str(anno)][t], 96, 128),
                                              (ids == obj["value"]).astype(np.uint8))
            e += 1
    assert len(meta["clip_00"]["frames"]) == 4 and os.path.isfile(os.path.join(out, "rvos", "train", "JPEGImages",
                                                                                 "clip_00", "00000.jpg"))
    videos = build_data(dict(type="RefVOSDataset", data_root=os.path.join(out, "rvos", "train"), mode="train",
                             expression_file="meta_expressions.json", image_folder="JPEGImages",
                             mask_file="mask_dict.json", num_frames=2, **READER))
    assert len(videos) == 3 and videos[0]["masks"].shape[-2:] == (96, 128)


def test_own_data_every_bad_record_is_named(raw, tmp_path):
    data = read(raw["own"])
    items = data["items"]
    items[0]["objects"][0]["sentences"] = ["the cup", " "]  # an empty sentence
    items[1]["id"] = "../escape"  # an id that is a path
    items[2]["objects"][0].pop("value", None)
    items[2]["objects"][0]["mask"] = "masks/nowhere.png"  # a missing mask
    items[2]["objects"][0].pop("segmentation", None)
    items[3]["objects"][0]["id"] = items[3]["objects"][1]["id"]  # an object id used twice
    walk = next(i for i in items if i["id"] == "walk_01")
    walk["objects"][0]["value"] = 99  # in no frame: an empty mask
    path = os.path.join(os.path.dirname(raw["own"]), "bad_annotations.json")
    with open(path, "w") as f:
        json.dump(data, f)
    with pytest.raises(ConversionError) as err:
        convert_own_data(path, str(tmp_path / "out"), progress=False)
    message = str(err.value)
    assert "5 bad record(s)" in message
    assert f"item {items[0]['id']} object {items[0]['objects'][0]['id']}: sentences[1] is empty" in message
    assert "item id '../escape' is not a plain name" in message
    assert f"item {items[2]['id']} object {items[2]['objects'][0]['id']}: mask " in message and "nowhere.png not found" in message
    assert f"item {items[3]['id']}: object id {items[3]['objects'][1]['id']} used twice" in message
    assert "item walk_01 object 1: the mask is empty in every frame" in message
    assert not os.path.exists(tmp_path / "out")
    report = convert_own_data(path, str(tmp_path / "out"), on_error="skip", progress=False)
    assert len(report["skipped"]) == 5
    assert report["res"]["train"]["images"] + report["res"]["val"]["images"] == 8 - 4
    assert report["rvos/train"]["videos"] == 2  # walk_01 left out
