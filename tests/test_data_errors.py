"""Bad input: a clear DataError naming the file and key, or with on_error='skip' a counted skip."""
import json
import os
import pickle
import shutil

import pytest

from projects.salma.datasets.errors import DataError
from projects.salma.datasets.hooks import DataSkipLoggerHook


@pytest.fixture
def refcoco_copy(tmp_path, synthetic_data):
    root = tmp_path / "refcoco"
    shutil.copytree(synthetic_data["refcoco"], root)
    return root


@pytest.fixture
def mevis_copy(tmp_path, synthetic_data):
    root = tmp_path / "mevis"
    shutil.copytree(synthetic_data["mevis_valid_u"], root)
    return root


def _refcoco(build_data, data_cfgs, root, **kw):
    return build_data(data_cfgs["refcoco_val"], data_root=str(root), image_folder=str(root / "images"), **kw)


def _mevis(build_data, data_cfgs, root, **kw):
    return build_data(data_cfgs["mevis_valid_u"], data_root=str(root), **kw)


def _edit_json(path, fn):
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def test_missing_and_corrupt_image(build_data, data_cfgs, refcoco_copy):
    ds = _refcoco(build_data, data_cfgs, refcoco_copy)
    name0 = ds.images[ds.items[0][0]]["file_name"]
    name1 = ds.images[ds.items[1][0]]["file_name"]
    os.remove(refcoco_copy / "images" / name0)
    data = (refcoco_copy / "images" / name1).read_bytes()
    (refcoco_copy / "images" / name1).write_bytes(data[: len(data) // 3])  # truncated JPEG
    with pytest.raises(DataError, match=f"{name0}: image file not found"):
        ds[0]
    with pytest.raises(DataError, match=f"{name1}: cannot decode image"):
        ds[1]
    skip = _refcoco(build_data, data_cfgs, refcoco_copy, on_error="skip", mode="train")
    s = skip[0]  # items 0 and 1 are bad: the next valid index, deterministically
    assert s["meta"]["index"] == 2 and s["meta"]["skipped"] == {"missing_image": 1, "corrupt_image": 1}
    assert skip.skip_counts == {"missing_image": 1, "corrupt_image": 1}
    assert skip[2]["meta"]["skipped"] == {}
    # an evaluation item is never replaced by another one: 'skip' acts at index build only
    with pytest.raises(DataError, match=name0):
        _refcoco(build_data, data_cfgs, refcoco_copy, on_error="skip")[0]


def test_skips_are_bounded(build_data, data_cfgs, refcoco_copy):
    shutil.rmtree(refcoco_copy / "images")
    ds = _refcoco(build_data, data_cfgs, refcoco_copy, on_error="skip", max_skip_attempts=3, mode="train")
    with pytest.raises(DataError, match="4 consecutive items from index 0 are bad") as err:
        ds[0]
    assert err.value.reason == "too_many_skips" and ds.skip_counts == {"missing_image": 4}


def test_refcoco_rle_size_and_dangling_ann(build_data, data_cfgs, refcoco_copy):
    ds = _refcoco(build_data, data_cfgs, refcoco_copy)
    image_id, refs = ds.items[0]
    rle_ann = next(r["ann_id"] for r in refs if isinstance(ds.annotations[r["ann_id"]], dict))

    def shrink(d):
        for a in d["annotations"]:
            if a["id"] == rle_ann:
                a["segmentation"]["size"] = [48, 64]
    _edit_json(refcoco_copy / "instances.json", shrink)
    with pytest.raises(DataError, match=rf"instances.json: ann_id {rle_ann} .*RLE size \[48, 64\] disagrees"):
        _refcoco(build_data, data_cfgs, refcoco_copy)[0]
    refs_path = refcoco_copy / "refs(unc).p"
    refs_list = pickle.loads(refs_path.read_bytes())
    bad = next(r for r in refs_list if r["split"] == "val")
    bad["ann_id"] = 10 ** 6
    refs_path.write_bytes(pickle.dumps(refs_list))
    with pytest.raises(DataError, match=rf"refs\(unc\).p: ref_id {bad['ref_id']}: ann_id 1000000 not in .*instances"):
        _refcoco(build_data, data_cfgs, refcoco_copy)
    skip = _refcoco(build_data, data_cfgs, refcoco_copy, on_error="skip")
    assert skip.index_skip_counts == {"missing_ann": 1}


def test_video_index_errors(build_data, data_cfgs, mevis_copy):
    meta_path = mevis_copy / "meta_expressions.json"
    videos = json.loads(meta_path.read_text())["videos"]
    v0, v1, v2 = sorted(videos)

    def damage(d):
        d["videos"][v0]["expressions"]["0"]["anno_id"] = [999999]  # absent from the mask dict
        d["videos"][v1]["expressions"]["0"]["anno_id"] = []  # no object
        d["videos"][v1]["expressions"]["0"]["obj_id"] = []
        d["videos"][v2]["frames"] = []  # empty video
    _edit_json(meta_path, damage)
    with pytest.raises(DataError, match=rf"mask_dict.json: anno_id 999999 \(video {v0}, exp 0\) not in the mask dict"):
        _mevis(build_data, data_cfgs, mevis_copy)
    ds = _mevis(build_data, data_cfgs, mevis_copy, on_error="skip")
    assert ds.index_skip_counts == {"missing_anno": 1, "empty_expression": 1, "empty_video": 1}
    assert [item["vid"] for item in ds.items] == [v0, v1]
    assert "0" not in [e["exp_id"] for e in ds.items[0]["exps"]]

    def only_empty_expr(d):
        d["videos"][v0]["expressions"]["0"]["anno_id"] = []
    meta_path.write_text(json.dumps({"videos": videos}))
    _edit_json(meta_path, only_empty_expr)
    with pytest.raises(DataError, match=rf"meta_expressions.json: video {v0} exp 0: expression has no object"):
        _mevis(build_data, data_cfgs, mevis_copy)

    def empty_video(d):
        d["videos"][v0]["expressions"]["0"]["anno_id"] = videos[v0]["expressions"]["0"]["anno_id"]
        d["videos"][v2]["frames"] = []
    _edit_json(meta_path, empty_video)
    with pytest.raises(DataError, match=rf"meta_expressions.json: video {v2} has no frames"):
        _mevis(build_data, data_cfgs, mevis_copy)


def test_video_rle_size_and_missing_frame(build_data, data_cfgs, mevis_copy):
    masks_path = mevis_copy / "mask_dict.json"
    ds = _mevis(build_data, data_cfgs, mevis_copy)
    anno = ds.items[0]["exps"][0]["anno_ids"][0]
    frame = ds[0]["meta"]["frame_indices"][0]
    masks = json.loads(masks_path.read_text())
    masks[str(anno)] = [{"size": [10, 10], "counts": "d1"}] * len(masks[str(anno)])  # every frame
    masks_path.write_text(json.dumps(masks))
    with pytest.raises(DataError, match=rf"mask_dict.json: anno_id {anno} frame {frame} .*disagrees"):
        _mevis(build_data, data_cfgs, mevis_copy)[0]
    vid = ds.items[1]["vid"]
    os.remove(mevis_copy / "JPEGImages" / vid / "00000.jpg")
    with pytest.raises(DataError, match=f"{vid}/00000.jpg: image file not found"):
        ds[1]
    skip = _mevis(build_data, data_cfgs, mevis_copy, on_error="skip", mode="train")
    assert skip[0]["meta"]["skipped"] == {"rle_size": 1, "missing_image": 1} and skip[0]["meta"]["index"] == 2


def test_skip_hook_counts_and_logs(build_data, data_cfgs, refcoco_copy):
    ds = _refcoco(build_data, data_cfgs, refcoco_copy, on_error="skip", mode="train")
    os.remove(refcoco_copy / "images" / ds.images[ds.items[0][0]]["file_name"])
    sample = ds[0]

    class Logger:
        lines = []

        def info(self, msg):
            self.lines.append(msg)

    class Hub:
        scalars = {}

        def update_scalar(self, k, v):
            self.scalars[k] = v

    class Runner:
        epoch = 0
        logger, message_hub = Logger(), Hub()
        train_dataloader = type("DL", (), {"dataset": ds})()

    hook = DataSkipLoggerHook()
    hook.before_train_epoch(Runner)
    hook.after_train_iter(Runner, 0, {"data": {"meta": [sample["meta"]]}, "data_samples": None})
    hook.after_train_epoch(Runner)
    assert "RefCOCODataset/missing_image" in Runner.logger.lines[-1]
    assert Runner.message_hub.scalars == {"data_skips/getitem/RefCOCODataset/missing_image": 1}
