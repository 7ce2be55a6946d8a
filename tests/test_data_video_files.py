"""Readers of video files: Chat-UniVi video QA, SA-V pseudo-label videos, Ref-SAV evaluation."""
import json
import os
import shutil

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from projects.salma.constants import IGNORE_INDEX, IM_END, SEG_TOKEN
from projects.salma.datasets.errors import DataError
from projects.salma.datasets.transforms import stack_normalized
from projects.salma.datasets.video_qa import segment_frame_indices

cv2 = pytest.importorskip("cv2")  # installed with mmengine


def decode_all(path):
    """Every frame of a video, decoded independently of the readers (OpenCV read loop)."""
    from PIL import Image

    capture, frames = cv2.VideoCapture(str(path)), []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        frames.append(Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
    capture.release()
    return frames


def test_segment_sampling():
    rng = np.random.default_rng(0)
    picks = segment_frame_indices(32, 5, rng)
    bounds = [0, 6, 12, 19, 25, 32]
    assert all(a <= p < b for p, a, b in zip(picks, bounds, bounds[1:]))
    assert segment_frame_indices(32, 5, None) == [2, 8, 15, 21, 28]
    assert segment_frame_indices(3, 5, rng) == [0, 1, 2]


def test_video_qa(build_data, data_cfgs, tiny_tokenizer, synthetic_data):
    ds = build_data(data_cfgs["video_qa"])
    records = json.load(open(os.path.join(synthetic_data["video_qa"], "video_chat.json")))
    assert len(ds) == len(records) == 3 and records[2]["video"].endswith(".mkv")
    for i in (0, 2):
        s = ds[i]
        path = s["meta"]["video_path"]
        assert path.endswith(records[i]["video"][:-4] + ".mp4")  # '.mkv' names find the '.mp4' file
        frames = decode_all(path)
        indices = s["meta"]["frame_indices"]
        assert len(indices) == 5 and s["meta"]["num_video_frames"] == len(frames) == 32
        assert torch.equal(s["pixel_values"], stack_normalized([frames[t] for t in indices], 64))
        text = tiny_tokenizer.decode(s["input_ids"])
        assert "<video>" not in text and text.count("Frame") == 5
        answers = [m["value"] for m in records[i]["conversations"][1::2]]
        assert tiny_tokenizer.decode(s["labels"][s["labels"] != IGNORE_INDEX]) == "".join(a + IM_END for a in answers)
        assert s["masks"] is None and s["g_pixel_values"] is None
    assert build_data(data_cfgs["video_qa"], mode="eval")[0]["meta"]["frame_indices"] == [2, 8, 15, 21, 28]


def test_video_qa_bad_input(tmp_path, build_data, data_cfgs, synthetic_data):
    root = tmp_path / "vqa"
    shutil.copytree(synthetic_data["video_qa"], root)
    records = json.loads((root / "video_chat.json").read_text())
    os.remove(root / "videos" / records[0]["video"])
    (root / "videos" / records[1]["video"]).write_bytes(b"not a video")
    records[2]["conversations"][0]["value"] = "<video>"
    (root / "video_chat.json").write_text(json.dumps(records))
    cfg = dict(data_cfgs["video_qa"], data_root=str(root))
    with pytest.raises(DataError, match=r"video_chat.json: record 2 .*only a placeholder"):
        build_data(cfg)
    ds = build_data(cfg, on_error="skip", mode="eval")
    assert ds.index_skip_counts == {"empty_expression": 1}
    with pytest.raises(DataError, match=rf"{records[0]['video']}: video file not found \(tried "):
        ds[0]
    with pytest.raises(DataError, match=rf"{records[1]['video']}: OpenCV cannot open this video"):
        ds[1]


@pytest.mark.parametrize("expression", ["long", "short"])
def test_sav_training_items(build_data, data_cfgs, tiny_tokenizer, synthetic_data, expression):
    ds = build_data(data_cfgs["sav"], expression=expression)
    spec = json.load(open(os.path.join(synthetic_data["sav"], "sav_expressions.json")))
    assert len(ds) == len(spec) == 2
    s = ds[1]
    vid = s["meta"]["video_id"]
    folder = os.path.join(synthetic_data["sav"], "sav_train")
    masklet = json.load(open(os.path.join(folder, spec[vid]["anno_path"])))["masklet"]
    frames = decode_all(os.path.join(folder, spec[vid]["video_path"]))
    assert len(frames[::4]) == len(masklet)  # SA-V: annotations at 6 fps, the video at 24 fps
    t_idx = s["meta"]["frame_indices"]
    assert s["meta"]["video_frame_indices"] == [4 * t for t in t_idx] and len(t_idx) == 3
    assert torch.equal(s["pixel_values"], stack_normalized([frames[4 * t] for t in t_idx], 64))
    objects = s["meta"]["obj_ids"]
    assert sorted(objects) == sorted(int(k) for k in spec[vid]["objects"])  # <= 5 objects: all of them
    expected = np.stack([np.stack([mask_utils.decode(masklet[t][o]) for t in t_idx]) for o in objects])
    assert s["masks"].shape == (len(objects), 3, 96, 128) and np.array_equal(s["masks"].numpy(), expected)
    assert int((s["input_ids"] == tiny_tokenizer.convert_tokens_to_ids(SEG_TOKEN)).sum()) == len(objects)
    for o, question in zip(objects, s["meta"]["questions"]):
        info = spec[vid]["objects"][str(o)]
        if expression == "long":
            assert question == "Please segment the object according to the description: " + info["formated"][:-1]
        else:
            assert any(cap in question for cap in info["short_caps"]) and "video" in question


def test_sav_bad_input(tmp_path, build_data, data_cfgs, synthetic_data):
    root = tmp_path / "sav"
    shutil.copytree(synthetic_data["sav"], root)
    spec = json.loads((root / "sav_expressions.json").read_text())
    v0, v1 = sorted(spec)
    anno = root / "sav_train" / spec[v0]["anno_path"]
    manual = json.loads(anno.read_text())
    manual["masklet"][0][0]["size"] = [10, 10]
    manual["masklet"] = [[{"size": [10, 10], "counts": "d1"}] * len(f) for f in manual["masklet"]]
    anno.write_text(json.dumps(manual))
    video = root / "sav_train" / spec[v1]["video_path"]
    frames = decode_all(video)
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 24, frames[0].size)
    for frame in frames[:5]:  # 5 frames, but the masklet annotates frames 0, 4, ..., 28
        writer.write(cv2.cvtColor(np.asarray(frame), cv2.COLOR_RGB2BGR))
    writer.release()
    spec[v0]["objects"]["0"]["formated"] = "  "
    (root / "sav_expressions.json").write_text(json.dumps(spec))
    cfg = dict(data_cfgs["sav"], data_root=str(root), frame_sampling="uniform")
    with pytest.raises(DataError, match=rf"sav_expressions.json: video {v0} object 0: empty formated"):
        build_data(cfg)
    ds = build_data(cfg, on_error="skip", mode="eval")
    assert ds.index_skip_counts == {"empty_expression": 1}
    with pytest.raises(DataError, match=rf"{v0}_manual.json: masklet frame 0 object 1: RLE size \[10, 10\] disagrees"):
        ds[0]
    with pytest.raises(DataError, match=rf"{v1}.mp4: 5 frames, but .*{v1}_manual.json annotates 8 "):
        ds[1]


def test_ref_sav_eval_items(build_data, data_cfgs, synthetic_data):
    ds = build_data(data_cfgs["ref_sav"], sam_all_frames=True)
    meta_file = os.path.join(synthetic_data["sav"], "ref_sav_valid", "meta_expressions_valid.json")
    videos = json.load(open(meta_file))["videos"]
    assert len(ds) == len(videos) == 2
    s = ds[0]
    vid = s["meta"]["video_id"]
    names = videos[vid]["frames"]
    frames = decode_all(os.path.join(synthetic_data["sav"], "sav_train", vid[:7], vid + ".mp4"))
    assert names[1] == "00004" and len(names) == 8
    assert torch.equal(s["g_pixel_values"], torch.stack([stack_normalized([frames[int(n)]], 128)[0] for n in names]))
    llm = s["meta"]["frame_indices"]
    assert torch.equal(s["pixel_values"], stack_normalized([frames[int(names[t])] for t in llm], 64))
    assert s["meta"]["type_ids"] == [e["type_id"] for e in videos[vid]["expressions"].values()] and \
        set(s["meta"]["type_ids"]) == {0, 1}
    assert all(q.startswith("Please segment the object according to the description: ") for q in s["meta"]["questions"])
    gt = ds.load_gt_masks(0)
    assert gt.shape == (len(videos[vid]["expressions"]), 8, 96, 128) and torch.equal(s["masks"], torch.from_numpy(gt))
    assert s["meta"]["all_frame_paths"][1].endswith(f"{vid}.mp4#4")


@pytest.mark.parametrize("name,key", [("video_qa", "data_file"), ("sav", "expression_file"),
                                      ("osprey_conversation", "data_file"), ("flickr", "data_file")])
def test_missing_annotation_file_is_named(build_data, data_cfgs, tmp_path, name, key):
    with pytest.raises(DataError, match=r"no_such.json: file not found") as err:
        build_data(data_cfgs[name], **{key: str(tmp_path / "no_such.json")})
    assert err.value.reason == "missing_file"


def test_ref_sav_missing_video(build_data, data_cfgs, tmp_path):
    ds = build_data(data_cfgs["ref_sav"], video_folder=str(tmp_path))
    with pytest.raises(DataError, match=rf"{ds.items[0]['vid']}.mp4: video file not found"):
        ds[0]
