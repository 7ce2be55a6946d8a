"""Fault injection (issue 11): nothing silently wrong.

Each fault is built on a copy of the synthetic data (real on-disk formats) or of a tiny exported
folder, and its outcome asserted: an error naming the file and the record (``DataError`` in the
readers), a counted skip where ``on_error='skip'`` allows it, or a recomputation that is reported.
The cases follow the issue: silent wrong results, untrusted files, errors that name nothing.
"""
import ast
import json
import os
import pickle
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image

from projects.salma.datasets.errors import DataError
from projects.salma.datasets.inference import InferenceReader, read_video
from projects.salma.datasets.masks import encode_mask
from projects.salma.datasets.tokenizer import build_tiny_tokenizer, load_pretrained_tokenizer
from projects.salma.evaluation.visualize import draw_video_record
from projects.salma.evaluation.writers import ResultStore, write_submission_zip
from projects.salma.salma_model import SALMAConfig, SALMAModel
from projects.salma.testing import forced_answer
# Fixtures and helpers of the suites that build the same things (imported, not copied).
from test_data_errors import _edit_json, _mevis, _refcoco, mevis_copy, refcoco_copy  # noqa: F401
from test_eval_e2e import metrics_of, read_records, run_tool
from test_export import config_path, export_data_cfgs, exported, load_tool, trained  # noqa: F401

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _reason(err: pytest.ExceptionInfo) -> str:
    return err.value.reason


def _first_val_refs(ds):
    """(image file, [ann ids]) of the first item of a RefCOCO reader."""
    image_id, refs = ds.items[0]
    return ds.images[image_id]["file_name"], [r["ann_id"] for r in refs]


def _copied(cfg: dict, tmp_path):
    """(the reader config on a copy of its data, the copy: its data root, or its data file)."""
    cfg = dict(cfg)
    if "data_root" in cfg:
        shutil.copytree(cfg["data_root"], tmp_path / "d")
        cfg["data_root"] = str(tmp_path / "d")
        return cfg, tmp_path / "d"
    path = tmp_path / os.path.basename(cfg["data_file"])
    shutil.copy(cfg["data_file"], path)
    cfg["data_file"] = str(path)
    return cfg, path


def _edit(relpath: str, fn):
    """A fault: ``fn`` edits the JSON at ``relpath`` of a copied data root ('': the copied file
    itself); what ``fn`` returns fills ``{vid}`` in the expected message."""
    def damage(copy):
        path = copy / relpath if relpath else copy
        data = json.loads(path.read_text(encoding="utf-8"))
        out = fn(data)
        path.write_text(json.dumps(data), encoding="utf-8")
        return out
    return damage


OSPREY_CONV, OSPREY_DESC = "Osprey-724K/osprey_conversation.json", "Osprey-724K/osprey_detail_description.json"
SAV_EXPRESSIONS, REF_SAV_META = "sav_expressions.json", "ref_sav_valid/meta_expressions_valid.json"


# ================================================================== silent wrong results
# ------------------------------------------------------------------ RLE counts that do not add up to H*W
BAD_RLES = {
    # right size, counts short of H*W: pycocotools fills the rest from uninitialised memory
    "short_compressed": lambda rle: {**rle, "counts": "0"},
    "short_uncompressed": lambda rle: {"size": rle["size"], "counts": [100, 50]},
    # not the COCO alphabet ('0'..'o'), or cut inside a number: pycocotools raises a bare ValueError
    "garbled": lambda rle: {**rle, "counts": "!!" + rle["counts"]},
    "unterminated": lambda rle: {**rle, "counts": rle["counts"] + "`"},
}


@pytest.mark.parametrize("fault", sorted(BAD_RLES))
def test_bad_rle_counts_in_refcoco_name_file_ann_and_are_skippable(fault, build_data, data_cfgs, refcoco_copy):
    ds = _refcoco(build_data, data_cfgs, refcoco_copy)
    file_name, ann_ids = _first_val_refs(ds)
    good = encode_mask(np.ones((96, 128), np.uint8))

    def damage(d):  # every annotation of the first image, so a training draw always meets one
        for a in d["annotations"]:
            if a["id"] in ann_ids:
                a["segmentation"] = BAD_RLES[fault](good)
    _edit_json(refcoco_copy / "instances.json", damage)
    with pytest.raises(DataError, match=rf"instances.json: ann_id {ann_ids[0]} \(image {file_name}\): RLE counts") \
            as err:
        _refcoco(build_data, data_cfgs, refcoco_copy)[0]
    assert _reason(err) == "rle_counts"
    skip = _refcoco(build_data, data_cfgs, refcoco_copy, on_error="skip", mode="train")
    sample = skip[0]
    assert sample["meta"]["index"] == 1 and sample["meta"]["skipped"] == {"rle_counts": 1}


@pytest.mark.parametrize("fault", sorted(BAD_RLES))
def test_bad_rle_counts_in_a_mask_dict_name_file_anno_and_frame(fault, build_data, data_cfgs, mevis_copy):
    ds = _mevis(build_data, data_cfgs, mevis_copy)
    item = ds.items[0]
    anno = item["exps"][0]["anno_ids"][0]
    frame = ds[0]["meta"]["frame_indices"][1]
    masks = json.loads((mevis_copy / "mask_dict.json").read_text())
    good = encode_mask(np.ones((96, 128), np.uint8))
    masks[str(anno)][frame] = BAD_RLES[fault](good)
    (mevis_copy / "mask_dict.json").write_text(json.dumps(masks))
    with pytest.raises(DataError, match=rf"mask_dict.json: anno_id {anno} frame {frame} \(video {item['vid']}\): "
                                        r"RLE counts") as err:
        _mevis(build_data, data_cfgs, mevis_copy)[0]
    assert _reason(err) == "rle_counts"
    for a in (a for e in item["exps"] for a in e["anno_ids"]):  # every frame of every object of video 0
        masks[str(a)] = [BAD_RLES[fault](good)] * len(masks[str(a)])
    (mevis_copy / "mask_dict.json").write_text(json.dumps(masks))
    sample = _mevis(build_data, data_cfgs, mevis_copy, on_error="skip", mode="train")[0]
    assert sample["meta"]["index"] == 1 and sample["meta"]["skipped"] == {"rle_counts": 1}


# ------------------------------------------------------------------ evaluation resume and stale results
EVAL_CONFIG = """
_base_ = [{base!r}]
test_datasets = dict(refcoco=dict(task="res", dataset=dict(
    type="RefCOCODataset", data_root={root!r}, image_folder={images!r}, split="val", max_dynamic_patch=1)))
"""


def _eval_config(tmp_path, root) -> str:
    path = tmp_path / "eval_refcoco.py"
    path.write_text(EVAL_CONFIG.format(base=os.path.join(ROOT, "configs/tiny/salma_tiny.py"), root=str(root),
                                       images=str(root / "images")))
    return str(path)


@pytest.fixture(scope="module")
def two_checkpoints():
    """Two different trainable-weight states of the tiny model (the projection into SAM-2 differs)."""
    from projects.salma.build import build_model

    model = build_model(Config.fromfile(os.path.join(ROOT, "configs/tiny/salma_tiny.py")), "none",
                        torch.device("cpu"))
    first = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    second = {n: v.clone() for n, v in first.items()}
    generator = torch.Generator().manual_seed(7)
    for name in (n for n in second if n.startswith("text_hidden_fcs.")):
        second[name] += torch.randn(second[name].shape, generator=generator)
    return first, second


@pytest.fixture
def always_seg():
    """The real generation, answering 'Sure, [SEG].' (the random tiny LLM rarely emits [SEG])."""
    with forced_answer("Sure, [SEG]."):
        yield


@pytest.mark.slow
def test_rerun_after_replacing_the_checkpoint_recomputes_every_item(tmp_path, refcoco_copy, two_checkpoints,
                                                                    always_seg):
    config = _eval_config(tmp_path, refcoco_copy)
    ckpt = tmp_path / "iter_1.pth"
    args = [config, "--checkpoint", ckpt, "--max-items", 2]
    torch.save({"state_dict": two_checkpoints[0]}, ckpt)
    first = run_tool(*args, "--work-dir", tmp_path / "wd")["refcoco"]
    assert (first["computed"], first["reused"], first["recomputed"]) == (2, 0, 0)
    torch.save({"state_dict": two_checkpoints[1]}, ckpt)  # another checkpoint at the same path
    second = run_tool(*args, "--work-dir", tmp_path / "wd")["refcoco"]
    assert (second["computed"], second["reused"], second["recomputed"]) == (2, 0, 2)
    fresh = run_tool(*args, "--work-dir", tmp_path / "fresh")["refcoco"]  # the new checkpoint, no old results
    assert second["metrics"] == fresh["metrics"] and second["metrics"] != first["metrics"]
    summary = json.loads((tmp_path / "wd" / "summary.json").read_text())["refcoco"]
    assert summary["metrics"] == fresh["metrics"] and summary["recomputed"] == 2
    third = run_tool(*args, "--work-dir", tmp_path / "wd")["refcoco"]  # the new results are reused now
    assert (third["computed"], third["reused"], third["recomputed"]) == (0, 2, 0)
    assert third["metrics"] == fresh["metrics"]
    assert [len(v) for v in ResultStore(str(tmp_path / "wd" / "refcoco")).load().values()] == [2, 2]


@pytest.mark.slow
def test_edited_inputs_recompute_only_their_items(tmp_path, refcoco_copy, two_checkpoints, always_seg):
    ckpt = tmp_path / "iter_1.pth"
    torch.save({"state_dict": two_checkpoints[0]}, ckpt)
    args = [_eval_config(tmp_path, refcoco_copy), "--checkpoint", ckpt, "--max-items", 2, "--work-dir", tmp_path]
    first = run_tool(*args)["refcoco"]
    assert (first["computed"], first["n_items"]) == (2, 2)
    records = read_records(str(tmp_path / "refcoco"))
    image = records[1]["image_path"]
    stat = os.stat(image)
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10 ** 9))  # the image file changed
    second = run_tool(*args)["refcoco"]
    assert (second["computed"], second["reused"], second["recomputed"]) == (1, 1, 1)
    refs_path = refcoco_copy / "refs(unc).p"
    refs = pickle.loads(refs_path.read_bytes())
    ref = next(r for r in refs if r["image_id"] == records[0]["image_id"])
    edited = ref["sentences"][0]["sent"] = "the " + ref["sentences"][0]["sent"]  # an annotation record changed
    refs_path.write_bytes(pickle.dumps(refs, protocol=2))
    third = run_tool(*args)["refcoco"]
    assert (third["computed"], third["reused"], third["recomputed"]) == (1, 1, 1)
    latest = {r["key"]: r for r in read_records(str(tmp_path / "refcoco"))}  # file order: the recomputed one last
    assert edited in [s["sentence"] for s in latest[records[0]["key"]]["sentences"]]
    assert metrics_of(str(tmp_path))["refcoco"] == third["metrics"]


@pytest.mark.parametrize("name, content", [("run_meta.json", "{not json"), ("summary.json", "[1, 2"),
                                           ("run_meta.json", "[]")])
def test_corrupt_run_meta_or_summary_fails_naming_the_file_before_any_work(name, content, tmp_path, refcoco_copy,
                                                                           monkeypatch):
    from projects.salma.evaluation import runner

    def no_work(*args, **kwargs):
        raise AssertionError("the model was built before the work dir was checked")
    monkeypatch.setattr(runner, "build_model", no_work)
    path = tmp_path / "wd" / ("refcoco" if name == "run_meta.json" else "") / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    with pytest.raises(ValueError, match=re.escape(f"{path}: ")):
        run_tool(_eval_config(tmp_path, refcoco_copy), "--checkpoint", "none", "--work-dir", tmp_path / "wd")


# ------------------------------------------------------------------ exported config.json that disagrees with itself
def _config(folder) -> dict:
    return json.loads(open(os.path.join(folder, "config.json"), encoding="utf-8").read())


def _at(data: dict, dotted: str) -> dict:
    for part in dotted.split("."):
        data = data[part]
    return data


UNKNOWN_KEYS = ["internvl", "internvl.vision_config", "internvl.text_config", "sam2", "sam2.vision_config",
                "sam2.vision_config.backbone_config", "sam2.mask_decoder_config", "grounding", "grounding.cma",
                "inputs", "video", "tracker", "tracker.prompt_encoder_config"]


@pytest.mark.parametrize("section", UNKNOWN_KEYS)
def test_unknown_key_in_an_exported_config_is_named(section, exported):
    data = _config(exported[1])
    _at(data, section)["hiden_size_typo"] = 1
    with pytest.raises(ValueError, match=rf"config.json: unknown key '{section}.hiden_size_typo'"):
        SALMAConfig.from_dict(data, source="config.json")


INCONSISTENT = {
    # LLM would see 0 tiles of image tokens: (image_size / patch_size * downsample_ratio)^2 = (128/16*0.5)^2 = 16
    "image_seq_length": (lambda d: d["inputs"].update(image_seq_length=9),
                         r"inputs.image_seq_length 9 .* 16 .*internvl.vision_config"),
    "internvl_image_seq_length": (lambda d: d["internvl"].update(image_seq_length=64),
                                  r"internvl.image_seq_length 64 .* 16"),
    "downsample_ratio": (lambda d: d["internvl"].update(downsample_ratio=0.25), r"inputs.image_seq_length 16 .* 4 "),
    "image_size": (lambda d: d["inputs"].update(image_size=64), r"inputs.image_size 64 .* 128"),
    "sam_image_size": (lambda d: d["inputs"].update(sam_image_size=256),
                       r"inputs.sam_image_size 256 .*sam2.prompt_encoder_config.image_size 128"),
    "tracker_image_size": (lambda d: d["tracker"].update(image_size=1024), r"tracker.image_size 1024 .* 128"),
    "tracker_vision": (lambda d: d["tracker"]["vision_config"].update(fpn_hidden_size=64),
                       r"tracker.vision_config .*sam2.vision_config"),
    "memory_without_tracker": (lambda d: d.update(tracker=None), r"video.propagation 'memory' needs .*tracker"),
    "propagation": (lambda d: d["video"].update(propagation="nearest"), r"video.propagation 'nearest'"),
    "frame_sampling": (lambda d: d["video"].update(llm_frame_sampling="last"), r"video.llm_frame_sampling 'last'"),
    "num_llm_frames": (lambda d: d["video"].update(num_llm_frames=0), r"video.num_llm_frames 0"),
    "llm_frame_masks": (lambda d: d["video"].update(llm_frame_masks="both"), r"video.llm_frame_masks 'both'"),
    "dynamic_patch": (lambda d: d["inputs"].update(min_dynamic_patch=6, max_dynamic_patch=4),
                      r"inputs.min_dynamic_patch 6 .*max_dynamic_patch 4"),
    "missing_input": (lambda d: d["inputs"].pop("max_length"), r"inputs: missing key 'max_length'"),
}


@pytest.mark.parametrize("fault", sorted(INCONSISTENT))
def test_inconsistent_exported_config_is_an_error(fault, exported):
    data = _config(exported[1])
    edit, match = INCONSISTENT[fault]
    edit(data)
    with pytest.raises(ValueError, match=r"config.json: (.*; )?" + match):
        SALMAConfig.from_dict(data, source="config.json")


def test_from_pretrained_validates_the_config(exported, tmp_path):
    folder = tmp_path / "export"
    shutil.copytree(exported[1], folder)
    data = _config(folder)
    data["internvl"]["vision_config"]["patch_size_"] = [14, 14]
    (folder / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=re.escape(f"{folder / 'config.json'}: unknown key "
                                                   "'internvl.vision_config.patch_size_'")):
        SALMAModel.from_pretrained(str(folder), device="cpu")


# ------------------------------------------------------------------ weight files: flipped bytes, truncated, empty
def test_flipped_bytes_in_the_weights_are_detected_at_load(exported, tmp_path):
    folder = tmp_path / "export"
    shutil.copytree(exported[1], folder)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    for k in range(16):  # inside the tensor data (the header is at the start)
        data[len(data) - 1000 - 64 * k] ^= 0x40
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=re.escape(str(weights)) + r": content hash .* does not match .*config.json"):
        SALMAModel.from_pretrained(str(folder), device="cpu")
    unverified = SALMAModel.from_pretrained(str(folder), device="cpu", verify_weights=False)  # the explicit opt-out
    ours, theirs = exported[0].state_to_save(), unverified.state_to_save()
    assert [k for k in ours if not torch.equal(ours[k], theirs[k])]  # the flipped bytes did change weights


@pytest.mark.parametrize("size", ["truncated", "empty"])
def test_truncated_or_empty_weight_file_is_named(size, exported, tmp_path):
    folder = tmp_path / "export"
    shutil.copytree(exported[1], folder)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if size == "truncated" else b"")
    for verify in (True, False):
        with pytest.raises(ValueError, match=re.escape(str(weights)) + r": .*(truncated|empty)"):
            SALMAModel.from_pretrained(str(folder), device="cpu", verify_weights=verify)


# ------------------------------------------------------------------ empty sentences are counted; duplicate frame stems
def _empty_refcoco(root):
    refs = pickle.loads((root / "refs(unc).p").read_bytes())
    ref = next(r for r in refs if r["split"] == "val")
    ref["sentences"][1]["sent"] = " . "  # empty once cleaned
    (root / "refs(unc).p").write_bytes(pickle.dumps(refs))
    return rf"refs\(unc\).p: ref_id {ref['ref_id']} sent_id {ref['sentences'][1]['sent_id']}: empty sentence"


def _empty_mevis(root):
    meta = json.loads((root / "meta_expressions.json").read_text())
    vid = sorted(meta["videos"])[0]
    meta["videos"][vid]["expressions"]["0"]["exp"] = ""
    (root / "meta_expressions.json").write_text(json.dumps(meta))
    return rf"meta_expressions.json: video {vid} exp 0: empty expression"


def _empty_llava(path):
    records = json.loads(path.read_text())
    records[0]["conversations"][2]["value"] = "  "
    path.write_text(json.dumps(records))
    return rf"llava.json: record 0 \(id {records[0]['id']}\): turn 2 .*empty"


def _empty_gcg(path):
    records = json.loads(path.read_text())
    records[1]["caption"] = ""
    path.write_text(json.dumps(records))
    return r"gcg.json: record 1 .*empty caption"


def _empty_osprey_message(records):
    records[3]["conversations"][1]["value"] = " "
    return r"osprey_conversation.json: record 3 \(000000000004.jpg\): message 1 is empty"


def _empty_osprey_description(records):
    records[0]["description"][0] = "  "
    return r"osprey_detail_description.json: record 0 \(000000000001.jpg\): description 0 is empty"


def _empty_video_question(records):
    records[2]["conversations"][0]["value"] = "<video>"
    return r"video_chat.json: record 2 \(id activity_0002\): a question is only a placeholder"


def _empty_sav_text(videos):
    videos["sav_000001"]["objects"]["0"]["formated"] = "  "
    return r"sav_expressions.json: video sav_000001 object 0: empty formated"


COUNT = {  # sentences (refcoco), expressions (mevis), objects (sav) or records a reader kept
    "refcoco": lambda ds: sum(len(r["sentences"]) for _, refs in ds.items for r in refs),
    "mevis": lambda ds: sum(len(item["exps"]) for item in ds.items),
    "sav": lambda ds: sum(len(item["objects"]) for item in ds.items),
}
EMPTY = {"refcoco": ("refcoco_val", _empty_refcoco), "mevis": ("mevis_valid_u", _empty_mevis),
         "llava": ("llava", _empty_llava), "gcg": ("gcg", _empty_gcg),
         "osprey_message": ("osprey_conversation", _edit(OSPREY_CONV, _empty_osprey_message)),
         "osprey_description": ("osprey_detail_description", _edit(OSPREY_DESC, _empty_osprey_description)),
         "video_qa": ("video_qa", _edit("video_chat.json", _empty_video_question)),
         "sav": ("sav", _edit(SAV_EXPRESSIONS, _empty_sav_text))}


@pytest.mark.parametrize("reader", sorted(EMPTY))
def test_empty_sentence_is_an_error_or_a_counted_skip(reader, build_data, data_cfgs, tmp_path):
    cfg_name, damage = EMPTY[reader]
    cfg, copy = _copied(data_cfgs[cfg_name], tmp_path)
    match = damage(copy)
    with pytest.raises(DataError, match=match) as err:
        build_data(cfg)
    assert _reason(err) == "empty_expression"
    good = build_data(dict(data_cfgs[cfg_name]))
    skip = build_data(cfg, on_error="skip")
    assert skip.index_skip_counts == {"empty_expression": 1}
    count = COUNT.get(reader, len)
    assert count(skip) == count(good) - 1  # that sentence only (a RefCOCO ref keeps its other one)


def _frames_with_duplicate_stem(folder):
    folder.mkdir()
    for t, ext in ((0, "jpg"), (1, "jpg"), (1, "png"), (2, "jpg")):
        Image.fromarray(np.full((24, 32, 3), 40 * t, np.uint8)).save(folder / f"{t:05d}.{ext}")
    return folder


def test_duplicate_frame_stems_are_refused(tmp_path, exported, build_data, data_cfgs, mevis_copy):
    meta = json.loads((mevis_copy / "meta_expressions.json").read_text())
    vid = sorted(meta["videos"])[0]
    meta["videos"][vid]["frames"][1] = "00000.jpg"  # the same file (and submission PNG) as '00000'
    (mevis_copy / "meta_expressions.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=rf"video {vid}: frames '00000' and '00000.jpg' are the same frame"):
        _mevis(build_data, data_cfgs, mevis_copy)
    assert _mevis(build_data, data_cfgs, mevis_copy, on_error="skip").index_skip_counts == {"duplicate_frame": 1}

    folder = _frames_with_duplicate_stem(tmp_path / "frames")
    with pytest.raises(DataError, match=r"frames/00001.jpg and .*frames/00001.png: two frames named '00001'") as err:
        read_video(folder)
    assert _reason(err) == "duplicate_frame"
    with pytest.raises(DataError, match="two frames named '00001'"):  # tools/infer.py stops before writing
        load_tool("infer").main(["--model", exported[1], "--video", str(folder), "--text", "the circle",
                                 "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert not (tmp_path / "out" / "masks").exists()


# ================================================================== untrusted files
class WritesAFile:
    """A pickle payload: unpickling it calls ``open(path, 'w')``, creating the file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


@pytest.mark.parametrize("target", ["refs", "mask_dict"])
def test_crafted_pickle_does_not_run(target, build_data, data_cfgs, refcoco_copy, mevis_copy, tmp_path):
    marker = tmp_path / "pwned"
    if target == "refs":
        path = refcoco_copy / "refs(unc).p"
        refs = pickle.loads(path.read_bytes())
        refs[0]["sentences"][0]["sent"] = WritesAFile(marker)
        path.write_bytes(pickle.dumps(refs, protocol=2))
        build = lambda **kw: _refcoco(build_data, data_cfgs, refcoco_copy, **kw)  # noqa: E731
    else:
        masks = json.loads((mevis_copy / "mask_dict.json").read_text())
        masks["1"] = [WritesAFile(marker)] + masks["1"][1:]
        path = mevis_copy / "mask_dict.pkl"
        path.write_bytes(pickle.dumps(masks))
        build = lambda **kw: _mevis(build_data, data_cfgs, mevis_copy, mask_file="mask_dict.pkl", **kw)  # noqa: E731
    for on_error in ("raise", "skip"):  # a file that cannot be trusted is never skipped over
        with pytest.raises(DataError, match=re.escape(path.name) + r": forbidden object (io|builtins).open"):
            build(on_error=on_error)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_plain_pickles_of_every_protocol_still_load(protocol, build_data, data_cfgs, refcoco_copy, mevis_copy):
    """Real refer files are Python 2 pickles (protocol 0-2) of dicts and lists; bytes RLE counts use
    protocol 2's ``_codecs.encode`` path."""
    path = refcoco_copy / "refs(unc).p"
    path.write_bytes(pickle.dumps(pickle.loads(path.read_bytes()), protocol=protocol))
    assert _refcoco(build_data, data_cfgs, refcoco_copy).items == build_data(data_cfgs["refcoco_val"]).items
    masks = json.loads((mevis_copy / "mask_dict.json").read_text())
    as_bytes = {k: [None if r is None else {**r, "counts": r["counts"].encode()} for r in v] for k, v in masks.items()}
    (mevis_copy / "mask_dict.pkl").write_bytes(pickle.dumps(as_bytes, protocol=protocol))
    from_pickle = _mevis(build_data, data_cfgs, mevis_copy, mask_file="mask_dict.pkl")
    from_json = _mevis(build_data, data_cfgs, mevis_copy)
    assert torch.equal(from_pickle[0]["masks"], from_json[0]["masks"]) and from_json[0]["masks"].any()


def test_tokenizer_folders_never_run_their_code(tmp_path, monkeypatch):
    """A folder whose tokenizer names custom code: transformers would ask '[y/N]' and run it on 'y'."""
    folder = tmp_path / "tok"
    build_tiny_tokenizer().save_pretrained(folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.update(tokenizer_class="EvilTokenizer", auto_map={"AutoTokenizer": ["evil.EvilTokenizer", None]})
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    marker = tmp_path / "ran"
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n"
                                    "from transformers import PreTrainedTokenizerFast as EvilTokenizer\n")
    asked = []
    monkeypatch.setattr("builtins.input", lambda prompt="": asked.append(prompt) or "y")
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_pretrained_tokenizer(str(folder))
    assert not marker.exists() and asked == []


def test_every_transformers_folder_load_refuses_remote_code():
    """Each ``X.from_pretrained(...)`` of a transformers class in projects/ and tools/ passes
    ``trust_remote_code=False`` (SALMAModel's own loader reads no code: it is not a transformers call)."""
    calls = []
    for base in ("projects", "tools"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, base)):
            for name in (f for f in files if f.endswith(".py")):
                path = os.path.join(dirpath, name)
                for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
                    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                            and node.func.attr == "from_pretrained" and not (
                                isinstance(node.func.value, ast.Name) and node.func.value.id in ("SALMAModel", "cls")):
                        kw = {k.arg: k.value for k in node.keywords}
                        ok = isinstance(kw.get("trust_remote_code"), ast.Constant) and \
                            kw["trust_remote_code"].value is False
                        calls.append((os.path.relpath(path, ROOT), node.lineno, ok))
    assert len(calls) >= 3 and [c for c in calls if not c[2]] == []


UNSAFE_IDS = {
    "video": (lambda meta, vid: meta["videos"].update({"../evil": meta["videos"].pop(vid)}), r"video id '../evil'"),
    "expression": (lambda meta, vid: meta["videos"][vid]["expressions"].update(
        {"a/b": meta["videos"][vid]["expressions"].pop("0")}), r"exp id 'a/b'"),
    "frame": (lambda meta, vid: meta["videos"][vid]["frames"].__setitem__(0, "../../../x"), r"frame '../../../x'"),
}


@pytest.mark.parametrize("fault", sorted(UNSAFE_IDS))
def test_ids_that_are_paths_are_rejected_at_index_build(fault, build_data, data_cfgs, mevis_copy):
    edit, match = UNSAFE_IDS[fault]
    meta = json.loads((mevis_copy / "meta_expressions.json").read_text())
    edit(meta, sorted(meta["videos"])[0])
    (mevis_copy / "meta_expressions.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=rf"meta_expressions.json: .*{match}.*path") as err:
        _mevis(build_data, data_cfgs, mevis_copy)
    assert _reason(err) == "unsafe_id"
    assert _mevis(build_data, data_cfgs, mevis_copy, on_error="skip").index_skip_counts == {"unsafe_id": 1}


UNSAFE_PATHS = {  # file names of the training mix's records: a path inside the data folder, nothing else
    "osprey_file_name": ("osprey_conversation", _edit(OSPREY_CONV, lambda r: r[0].update(
        file_name="../../../etc/x.jpg")),
                         r"osprey_conversation.json: record 0 \(\.\./\.\./\.\./etc/x.jpg\): file_name "
                         r"'\.\./\.\./\.\./etc/x.jpg'"),
    "video_qa_video": ("video_qa", _edit("video_chat.json", lambda r: r[1].update(video="/etc/passwd")),
                       r"video_chat.json: record 1 \(id activity_0001\): video '/etc/passwd'"),
    "sav_video_path": ("sav", _edit(SAV_EXPRESSIONS, lambda v: v["sav_000001"].update(video_path="../../x.mp4")),
                       r"sav_expressions.json: video sav_000001: video_path '\.\./\.\./x.mp4'"),
    "sav_anno_path": ("sav", _edit(SAV_EXPRESSIONS, lambda v: v["sav_000002"].update(anno_path="/tmp/x_manual.json")),
                      r"sav_expressions.json: video sav_000002: anno_path '/tmp/x_manual.json'"),
    "ref_sav_video_id": ("ref_sav", _edit(REF_SAV_META, lambda m: m["videos"].update(
        {"../sav_000003": m["videos"].pop("sav_000003")})), r"meta_expressions_valid.json: video id '\.\./sav_000003'"),
    "psg_file_name": ("psg", _edit("", lambda r: r[0].update(file_name="../../x.jpg")),
                      r"OpenPsgGCG_train.json: record 0 \(\.\./\.\./x.jpg\): file_name '\.\./\.\./x.jpg'"),
    "flickr_file_name": ("flickr", _edit("", lambda d: d["images"][0].update(file_name="/etc/x.jpg")),
                         r"GCG_train.json: image 1 \(/etc/x.jpg\): file_name '/etc/x.jpg'"),
    "llava_image": ("llava", _edit("", lambda r: next(x for x in r if x.get("image")).update(image="../../x.jpg")),
                    r"llava.json: record \d+ \(id [^)]*\): image '\.\./\.\./x.jpg'"),
}


@pytest.mark.parametrize("fault", sorted(UNSAFE_PATHS))
def test_record_paths_stay_inside_their_folder(fault, build_data, data_cfgs, tmp_path):
    """Video ids, video / annotation paths and file names of the new readers' records."""
    cfg_name, damage, match = UNSAFE_PATHS[fault]
    cfg, copy = _copied(data_cfgs[cfg_name], tmp_path)
    damage(copy)
    with pytest.raises(DataError, match=match + r".*path") as err:
        build_data(cfg)
    assert _reason(err) == "unsafe_id"
    assert build_data(cfg, on_error="skip").index_skip_counts == {"unsafe_id": 1}


def test_refcoco_image_file_names_stay_inside_the_image_folder(build_data, data_cfgs, refcoco_copy):
    """An image record of instances.json whose file_name leaves the image folder is refused; with
    skip, it is dropped and counted (its refs then have no image and are counted too)."""
    instances = json.loads((refcoco_copy / "instances.json").read_text())
    instances["images"][0]["file_name"] = "../../../etc/x.jpg"
    (refcoco_copy / "instances.json").write_text(json.dumps(instances))
    with pytest.raises(DataError, match=r"instances.json: images\[0\]: file_name '\.\./\.\./\.\./etc/x.jpg'.*path") as err:
        _refcoco(build_data, data_cfgs, refcoco_copy)
    assert _reason(err) == "unsafe_id"
    assert _refcoco(build_data, data_cfgs, refcoco_copy, on_error="skip").index_skip_counts["unsafe_id"] == 1


@pytest.mark.parametrize("field, value", [("video_id", "../evil"), ("exp_id", "../../../../tmp/x"),
                                          ("frame", "a\\b")])
def test_submission_zip_and_overlays_refuse_path_ids(field, value, tmp_path):
    frame = np.zeros((6, 8), np.uint8)
    record = {"key": "video:v", "video_id": "v", "size": [6, 8], "frame_names": ["00000"], "llm_frames": [0],
              "frame_paths": [str(tmp_path / "f.png")],
              "expressions": [{"exp_id": "0", "exp": "x", "answer": "Sure, [SEG].", "masks": [encode_mask(frame)]}]}
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(tmp_path / "f.png")
    if field == "video_id":
        record.update(video_id=value, key=f"video:{value}")
    elif field == "exp_id":
        record["expressions"][0]["exp_id"] = value
    else:
        record["frame_names"] = [value]
    with pytest.raises(ValueError, match=rf"{field} '{re.escape(value)}'.*path"):
        write_submission_zip(str(tmp_path / "sub" / "submission.zip"), [record])
    assert not (tmp_path / "sub" / "submission.zip").exists()
    if field != "frame":
        with pytest.raises(ValueError, match="path"):
            draw_video_record(record, str(tmp_path / "vis" / "deep"))
        assert [p for p in tmp_path.rglob("*.png") if p.name != "f.png"] == []


def test_readme_says_how_each_file_is_parsed():
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = readme.split("## Data preparation")[1].split("\n## ")[0]
    for phrase in ("restricted unpickler", "PIL", "OpenCV", "UTF-8", "Python that runs", "never execute"):
        assert phrase in section, phrase


# ================================================================== errors that name nothing
FILE_FAULTS = {
    # name: (reader cfg, file to damage, bytes, match)
    "malformed_instances": ("refcoco_val", "instances.json", b'{"images": [', r"instances.json: not valid JSON"),
    "truncated_refs": ("refcoco_val", "refs(unc).p", None, r"refs\(unc\).p: cannot unpickle"),
    "non_utf8_meta": ("mevis_valid_u", "meta_expressions.json", b'{"videos": {"\xff": {}}}',
                      r"meta_expressions.json: not UTF-8 text .*byte 13"),
    "malformed_mask_dict": ("mevis_valid_u", "mask_dict.json", b'{"1": [nul', r"mask_dict.json: not valid JSON"),
    "meta_not_an_object": ("mevis_valid_u", "meta_expressions.json", b'[]',
                           r"meta_expressions.json: expected a JSON object with 'videos'"),
    "malformed_llava": ("llava", "llava.json", b'[{"id": 1,', r"llava.json: not valid JSON"),
    "gcg_not_a_list": ("gcg", "gcg.json", b'{"file_name": "x"}', r"gcg.json: expected a JSON list"),
    "sav_not_an_object": ("sav", SAV_EXPRESSIONS, b'[{"video_path": "sav_000/sav_000001.mp4"}]',
                          r"sav_expressions.json: expected a JSON object"),
    "flickr_not_coco": ("flickr", "", b'{"images": {}, "annotations": []}', r"GCG_train.json: images: expected a list"),
}


@pytest.mark.parametrize("fault", sorted(FILE_FAULTS))
def test_unparseable_file_is_a_data_error_at_construction(fault, build_data, data_cfgs, tmp_path):
    cfg_name, file_name, data, match = FILE_FAULTS[fault]
    cfg, copy = _copied(data_cfgs[cfg_name], tmp_path)
    path = copy / file_name if copy.is_dir() else copy
    if data is None:
        data = path.read_bytes()[:-20]  # a pickle cut short
    path.write_bytes(data)
    for on_error in ("raise", "skip"):  # nothing of a file that cannot be parsed can be used
        with pytest.raises(DataError, match=match):
            build_data(cfg, on_error=on_error)


def _meta_edit(fn):
    def damage(root):
        meta = json.loads((root / "meta_expressions.json").read_text())
        vid = sorted(meta["videos"])[0]
        fn(meta["videos"][vid])
        (root / "meta_expressions.json").write_text(json.dumps(meta))
        return vid
    return damage


RECORD_FAULTS = {
    "expression_is_a_string": ("mevis_valid_u", _meta_edit(lambda v: v["expressions"].update({"0": "the circle"})),
                               r"meta_expressions.json: video {vid} exp 0: expected an object, got str"),
    "anno_id_is_an_int": ("mevis_valid_u", _meta_edit(lambda v: v["expressions"]["0"].update(anno_id=3)),
                          r"meta_expressions.json: video {vid} exp 0: anno_id: expected a list, got int"),
    "frames_is_a_string": ("mevis_valid_u", _meta_edit(lambda v: v.update(frames="00000")),
                           r"meta_expressions.json: video {vid}: frames: expected a list, got str"),
    "llava_value_null": ("llava", lambda p: _json_edit(p, lambda r: r[0]["conversations"][1].update(value=None)),
                         r"llava.json: record 0 \(id image_0\): turn 1: value: expected a string, got None"),
    "llava_record_not_an_object": ("llava", lambda p: _json_edit(p, lambda r: r.__setitem__(2, "text")),
                                   r"llava.json: record 2: expected an object, got str"),
    "gcg_span_is_an_int": ("gcg", lambda p: _json_edit(p, lambda r: next(iter(r[0]["groundings"].values())).update(
        token_positives=3)), r"gcg.json: record 0 .*token_positives: expected a list of 2 integers"),
    "refcoco_sentences_is_a_string": ("refcoco_val", lambda root: _refs_edit(root, lambda ref: ref.update(
        sentences="the circle")), r"refs\(unc\).p: ref_id {vid}: sentences: expected a list, got str"),
}


def _json_edit(path, fn):
    records = json.loads(path.read_text())
    fn(records)
    path.write_text(json.dumps(records))


def _refs_edit(root, fn):
    refs = pickle.loads((root / "refs(unc).p").read_bytes())
    ref = next(r for r in refs if r["split"] == "val")
    fn(ref)
    (root / "refs(unc).p").write_bytes(pickle.dumps(refs))
    return ref["ref_id"]


def _first_grounding(records):
    return next(iter(records[0]["groundings"].values()))


RECORD_FAULTS.update({
    # Osprey-724K (osprey_<kind>.json records)
    "osprey_value_null": ("osprey_conversation", _edit(OSPREY_CONV, lambda r: r[0]["conversations"][1].update(
        value=None)), r"osprey_conversation.json: record 0 \(000000000001.jpg\): message 1: value: expected a string, "
                      r"got None"),
    "osprey_record_not_an_object": ("osprey_conversation", _edit(OSPREY_CONV, lambda r: r.__setitem__(2, ["x"])),
                                    r"osprey_conversation.json: record 2: expected an object, got list"),
    "osprey_annotation_not_a_list": ("osprey_conversation", _edit(OSPREY_CONV, lambda r: r[1].update(
        annotation=r[1]["annotation"][0])), r"record 1 \(000000000002.jpg\): annotation: expected a list, got dict"),
    "osprey_description_not_a_string": ("osprey_detail_description", _edit(OSPREY_DESC, lambda r: r[1][
        "description"].__setitem__(1, None)), r"osprey_detail_description.json: record 1 \(000000000002.jpg\): "
                                              r"description 1: expected a string, got None"),
    "osprey_fewer_descriptions": ("osprey_detail_description", _edit(OSPREY_DESC, lambda r: r[1].update(
        description=r[1]["description"][:1])), r"record 1 \(000000000002.jpg\): 1 descriptions for 2 regions"),
    # Chat-UniVi video QA (video_chat.json)
    "video_qa_video_is_a_number": ("video_qa", _edit("video_chat.json", lambda r: r[0].update(video=7)),
                                   r"video_chat.json: record 0 \(id activity_0000\): video: expected a string, "
                                   r"got int"),
    "video_qa_value_not_a_string": ("video_qa", _edit("video_chat.json", lambda r: r[1]["conversations"][3].update(
        value=["red"])), r"video_chat.json: record 1 \(id activity_0001\): message 3: value: expected a string, "
                         r"got list"),
    "video_qa_conversations_not_a_list": ("video_qa", _edit("video_chat.json", lambda r: r[0].update(
        conversations="hi")), r"record 0 \(id activity_0000\): conversations: expected a list, got str"),
    # SA-V training expressions (sav_expressions.json)
    "sav_video_is_a_number": ("sav", _edit(SAV_EXPRESSIONS, lambda v: v.update(sav_000001=5)),
                              r"sav_expressions.json: video sav_000001: expected an object, got int"),
    "sav_objects_not_an_object": ("sav", _edit(SAV_EXPRESSIONS, lambda v: v["sav_000002"].update(
        objects=list(v["sav_000002"]["objects"].values()))),
        r"sav_expressions.json: video sav_000002: objects: expected an object, got list"),
    "sav_object_without_text": ("sav", _edit(SAV_EXPRESSIONS, lambda v: v["sav_000001"]["objects"]["1"].pop(
        "formated")), r"sav_expressions.json: video sav_000001 object 1: no 'formated'"),
    "sav_object_index_not_a_number": ("sav", _edit(SAV_EXPRESSIONS, lambda v: v["sav_000001"]["objects"].update(
        x=v["sav_000001"]["objects"].pop("1"))), r"video sav_000001 object x: object index is not a number"),
    "sav_video_path_missing": ("sav", _edit(SAV_EXPRESSIONS, lambda v: v["sav_000002"].pop("video_path")),
                               r"sav_expressions.json: video sav_000002: no 'video_path'"),
    # Flickr GCG (COCO layout) and PSG GCG (GranD-f layout)
    "flickr_no_tokens_positive": ("flickr", _edit("", lambda d: d["annotations"][0].pop("tokens_positive")),
                                  r"GCG_train.json: image 1 \(\S+\): annotation 1: no 'tokens_positive'"),
    "flickr_empty_tokens_positive": ("flickr", _edit("", lambda d: d["annotations"][0].update(tokens_positive=[])),
                                     r"image 1 \(\S+\): annotation 1: tokens_positive: expected a list of "
                                     r"\[start, end\] spans, got \[\]"),
    "flickr_bbox_of_wrong_length": ("flickr", _edit("", lambda d: d["annotations"][1].update(bbox=[1, 2, 3])),
                                    r"image 1 \(\S+\): annotation 2: bbox: expected \[x, y, w, h\], got \[1, 2, 3\]"),
    "flickr_area_not_a_number": ("flickr", _edit("", lambda d: d["annotations"][1].update(area="900")),
                                 r"image 1 \(\S+\): annotation 2: area: expected an integer or a number, got str"),
    "flickr_annotation_without_image": ("flickr", _edit("", lambda d: d["annotations"][2].pop("image_id")),
                                        r"GCG_train.json: annotations\[2\]: no 'image_id'"),
    "flickr_image_without_height": ("flickr", _edit("", lambda d: d["images"][1].pop("height")),
                                    r"GCG_train.json: image 2 \(\S+\): no 'height'"),
    "psg_masks_not_a_list": ("psg", _edit("", lambda r: _first_grounding(r).update(
        rle_masks=_first_grounding(r)["rle_masks"][0])), r"OpenPsgGCG_train.json: record 0 .*rle_masks: expected a "
                                                         r"list, got dict"),
})


@pytest.mark.parametrize("fault", sorted(RECORD_FAULTS))
def test_record_of_the_wrong_shape_is_named_and_skippable(fault, build_data, data_cfgs, tmp_path):
    cfg_name, damage, match = RECORD_FAULTS[fault]
    cfg, copy = _copied(data_cfgs[cfg_name], tmp_path)
    vid = damage(copy)
    with pytest.raises(DataError, match=match.format(vid=vid)) as err:
        build_data(cfg)
    assert _reason(err) == "bad_record"
    skip = build_data(cfg, on_error="skip")
    assert skip.index_skip_counts == {"bad_record": 1} and len(skip) > 0
    skip[0]  # the remaining items are usable


# ------------------------------------------------------------------ faults met when an item is read (masks, videos)
SAV_MANUAL = "sav_train/sav_000/sav_000001_manual.json"
SHORT_RLE = {"size": [96, 128], "counts": "0"}  # right size, counts short of H*W


def _write_bytes(relpath: str, data: bytes):
    def damage(copy):
        (copy / relpath).write_bytes(data)
    return damage


def _every_rle(entries: list) -> None:
    entries[:] = [SHORT_RLE] * len(entries)


ITEM_FAULTS = {
    # name: (reader cfg, fault, match, reason); item 0 is the damaged one
    "sav_masklet_frame_not_a_list": ("sav", _edit(SAV_MANUAL, lambda m: m["masklet"].__setitem__(1, 5)),
                                     r"sav_000001_manual.json: masklet frame 1: expected a list, got int",
                                     "bad_record"),
    "sav_masklet_frame_short": ("sav", _edit(SAV_MANUAL, lambda m: m["masklet"].__setitem__(2, m["masklet"][2][:1])),
                                r"sav_000001_manual.json: masklet frame 2 has 1 objects, frame 0 has \d+",
                                "bad_record"),
    "sav_masklet_entry_not_an_rle": ("sav", _edit(SAV_MANUAL, lambda m: [f.__setitem__(slice(None), ["mask"] * len(f))
                                                                      for f in m["masklet"]]),
                                     r"sav_000001_manual.json: masklet frame \d+ object \d+: an RLE must be",
                                     "bad_segmentation"),
    "sav_masklet_rle_counts": ("sav", _edit(SAV_MANUAL, lambda m: [_every_rle(f) for f in m["masklet"]]),
                               r"sav_000001_manual.json: masklet frame \d+ object \d+: RLE counts", "rle_counts"),
    "sav_manual_missing": ("sav", lambda copy: os.remove(copy / SAV_MANUAL), r"sav_000001_manual.json: file not found",
                           "missing_file"),
    "osprey_rle_counts": ("osprey_conversation", _edit(OSPREY_CONV, lambda r: [a.update(segmentation=SHORT_RLE)
                                                                              for a in r[0]["annotation"]]),
                          r"osprey_conversation.json: record 0 \(000000000001.jpg\) region1: RLE counts", "rle_counts"),
    "osprey_polygon_not_numbers": ("osprey_conversation", _edit(OSPREY_CONV, lambda r: r[0]["annotation"][0].update(
        segmentation=[["a"] * 6])), r"record 0 \(000000000001.jpg\) region1: a polygon must be a list of numbers",
        "bad_segmentation"),
    "osprey_polygon_not_nested": ("osprey_conversation", _edit(OSPREY_CONV, lambda r: r[0]["annotation"][0].update(
        segmentation=[10, 10, 60, 10, 60, 60])), r"record 0 \(000000000001.jpg\) region1: a polygon must be a list of "
                                                r"numbers", "bad_segmentation"),
    "osprey_rle_size_not_numbers": ("osprey_conversation", _edit(OSPREY_CONV, lambda r: [a.update(segmentation={
        "size": [None, None], "counts": [96 * 128]}) for a in r[0]["annotation"]]),
        r"record 0 \(000000000001.jpg\) region1: an RLE must be", "bad_segmentation"),
    "flickr_rle_counts": ("flickr", _edit("", lambda d: [a.update(sam_mask=SHORT_RLE) for a in d["annotations"]
                                                         if a["image_id"] == 1]),
                          r"GCG_train.json: \S+ phrase .*: RLE counts", "rle_counts"),
    "psg_rle_counts": ("psg", _edit("", lambda r: [g.update(rle_masks=[SHORT_RLE]) for g in r[0]["groundings"].values()
                                                   if g]), r"OpenPsgGCG_train.json: \S+ phrase .*: RLE counts",
                       "rle_counts"),
    "ref_sav_rle_counts": ("ref_sav", _edit("ref_sav_valid/mask_dict.json",
                                            lambda d: [_every_rle(v) for v in d.values()]),
                           r"mask_dict.json: anno_id \d+ frame \d+ \(video sav_000003\): RLE counts", "rle_counts"),
    "video_qa_zero_byte_mp4": ("video_qa", _write_bytes("videos/activity_0000.mp4", b""),
                               r"videos/activity_0000.mp4: ", "corrupt_video"),
    "sav_missing_mp4": ("sav", lambda copy: os.remove(copy / "sav_train/sav_000/sav_000001.mp4"),
                        r"sav_000/sav_000001.mp4: video file not found", "missing_video"),
    "sav_zero_byte_mp4": ("sav", _write_bytes("sav_train/sav_000/sav_000001.mp4", b""),
                          r"sav_000/sav_000001.mp4: ", "corrupt_video"),
    "sav_not_a_video": ("sav", _write_bytes("sav_train/sav_000/sav_000001.mp4", b"not a video\n" * 100),
                        r"sav_000/sav_000001.mp4: ", "corrupt_video"),
    "ref_sav_zero_byte_mp4": ("ref_sav", _write_bytes("sav_train/sav_000/sav_000003.mp4", b""),
                              r"sav_000/sav_000003.mp4: ", "corrupt_video"),
}


@pytest.mark.parametrize("fault", sorted(ITEM_FAULTS))
def test_bad_masks_and_videos_are_named_when_read_and_skippable(fault, build_data, data_cfgs, tmp_path):
    cfg_name, damage, match, reason = ITEM_FAULTS[fault]
    cfg, copy = _copied(data_cfgs[cfg_name], tmp_path)
    damage(copy)
    with pytest.raises(DataError, match=match) as err:
        build_data(cfg)[0]
    assert _reason(err) == reason
    if cfg.get("mode", "train") == "train":  # the item is dropped and counted, the next one used
        sample = build_data(cfg, on_error="skip")[0]
        assert sample["meta"]["index"] == 1 and sample["meta"]["skipped"] == {reason: 1}


# ------------------------------------------------------------------ Ref-SAV: long / short needs every type_id
@pytest.mark.parametrize("type_id", ["missing", None, 2])
def test_ref_sav_expression_type_is_checked_before_any_prediction(type_id, synthetic_data, tmp_path, monkeypatch):
    from projects.salma.evaluation import runner

    root = tmp_path / "sav"
    shutil.copytree(synthetic_data["sav"], root)
    meta = json.loads((root / REF_SAV_META).read_text(encoding="utf-8"))
    exp = meta["videos"]["sav_000004"]["expressions"]["1"]
    if type_id == "missing":
        del exp["type_id"]
    else:
        exp["type_id"] = type_id
    (root / REF_SAV_META).write_text(json.dumps(meta), encoding="utf-8")

    def no_work(*args, **kwargs):
        raise AssertionError("an item was predicted before the expression types were checked")
    monkeypatch.setattr(runner, "_predict_item", no_work)
    cfg = Config.fromfile(os.path.join(ROOT, "configs/tiny/salma_tiny.py"))
    cfg.test_datasets = dict(ref_sav=dict(task="ref_vos", protocol="refsav", dataset=dict(
        type="RefSAVDataset", data_root=str(root), expression_file=REF_SAV_META,
        mask_file="ref_sav_valid/mask_dict.json",
        video_folder="sav_train", video_file="{video_id:.7}/{video_id}.mp4", max_dynamic_patch=1)))
    cfg.test_options = dict(propagation="decode_all", num_llm_frames=2, llm_frame_sampling="uniform")
    (run,) = runner.resolve_runs(cfg)
    model = runner.build_model(cfg, "none", torch.device("cpu"))
    shown = "None" if type_id == "missing" else str(type_id)
    with pytest.raises(DataError, match=rf"meta_expressions_valid.json: video sav_000004 exp 1: Ref-SAV type_id "
                                        rf"{shown} is not 0 \(long\) or 1 \(short\)") as err:
        runner.evaluate_run(run, cfg, model, runner.TrackerCache(model, cfg.model.to_dict()), checkpoint="none",
                            work_dir=str(tmp_path / "wd"), max_items=None, show=0)
    assert _reason(err) == "bad_record"


@pytest.mark.parametrize("type_id", ["missing", None, 2])
def test_ref_sav_summary_names_an_expression_of_unknown_type(type_id):
    from projects.salma.evaluation.metrics import aggregate_refsav

    odd = {"exp_id": "7", "exp": "the red circle", "J": 0.5, "F": 0.5, "A": 0.9}
    if type_id != "missing":
        odd["type_id"] = type_id
    shown = "None" if type_id == "missing" else str(type_id)
    with pytest.raises(ValueError, match=rf"expression 7 \('the red circle'\): Ref-SAV type_id {shown} is not 0 "
                                         r"\(long\) or 1 \(short\)"):
        aggregate_refsav([{"exp_id": "0", "exp": "a", "type_id": 0, "J": 1.0, "F": 1.0, "A": 1.0}, odd])


@pytest.mark.slow  # a Python subprocess (imports torch and transformers)
def test_non_ascii_text_reads_under_the_c_locale(tmp_path, synthetic_data):
    """Every reader opens text as UTF-8, whatever the locale says (here ASCII: LC_ALL=C without
    Python's UTF-8 mode)."""
    root = tmp_path / "mevis"
    shutil.copytree(synthetic_data["mevis_valid_u"], root)
    meta = root / "meta_expressions.json"  # raw UTF-8 below (ensure_ascii=False), as many real files are
    _json_edit_copy(meta, meta, lambda d: d["videos"][sorted(d["videos"])[0]]["expressions"]["0"].update(
        exp="le cercle rouge à gauche"))
    llava = tmp_path / "llava.json"
    _json_edit_copy(synthetic_data["llava"], llava, lambda r: r[0]["conversations"][1].update(value="Voilà."))
    gcg = tmp_path / "gcg.json"
    _json_edit_copy(synthetic_data["gcg"], gcg, lambda r: r[0].update(caption=r[0]["caption"][:-1] + " — voilà."))
    script = f"""
from projects.salma.datasets import GCGDataset, LLaVADataset, RefVOSDataset
kw = dict(tokenizer=dict(type="build_tiny_tokenizer"), image_size=64, image_seq_length=16, sam_image_size=128)
v = RefVOSDataset(data_root={str(root)!r}, expression_file="meta_expressions.json", image_folder="JPEGImages",
                  mask_file="mask_dict.json", mode="eval", **kw)
l = LLaVADataset(data_file={str(llava)!r}, image_folder={synthetic_data['refcoco_images']!r}, **kw)
g = GCGDataset(data_file={str(gcg)!r}, image_folder={synthetic_data['refcoco_images']!r}, **kw)
print(ascii([v.items[0]["exps"][0]["exp"], l.items[0][2][0].answer, g.items[0]["caption"][-6:]]))
"""
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0", "PYTHONPATH": ROOT,
           "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, encoding="utf-8")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == ascii(["le cercle rouge à gauche", "Voilà.", "voilà."])


def _json_edit_copy(src, dst, fn):
    records = json.loads(open(src, encoding="utf-8").read())
    fn(records)
    dst.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")


def test_every_text_file_is_opened_as_utf8():
    """``open`` in text mode and ``Path.read_text`` / ``write_text`` in projects/, tools/ and bench/
    name ``encoding='utf-8'``: the locale's encoding is ASCII under ``LC_ALL=C``."""
    unnamed = []
    for base in ("projects", "tools", "bench"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, base)):
            for name in (f for f in files if f.endswith(".py")):
                path = os.path.join(dirpath, name)
                for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
                    if not isinstance(node, ast.Call):
                        continue
                    kw = {k.arg: k.value for k in node.keywords}
                    if isinstance(node.func, ast.Name) and node.func.id == "open":
                        mode = node.args[1] if len(node.args) > 1 else kw.get("mode")
                        if isinstance(mode, ast.Constant) and "b" in mode.value:
                            continue
                    elif not (isinstance(node.func, ast.Attribute) and node.func.attr in ("read_text", "write_text")):
                        continue
                    encoding = kw.get("encoding")
                    if not (isinstance(encoding, ast.Constant) and encoding.value in ("utf-8", "utf-8-sig")):
                        unnamed.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}")
    assert unnamed == []


@pytest.mark.parametrize("entry, match", [("x", r"expected a list, got str"),
                                          ({"masks": []}, r"no 'masks_rle'"),
                                          ({"masks_rle": [None]}, r"1 foreground masks for 8 frames")])
def test_foreground_record_of_the_wrong_shape_is_named(entry, match, build_data, data_cfgs, mevis_copy):
    """ReVOS mask_dict_foreground.json: {vid: {'masks_rle': [RLE per frame]}}."""
    ds = _mevis(build_data, data_cfgs, mevis_copy, foreground_file="fg.json")
    (mevis_copy / "fg.json").write_text(json.dumps({ds.items[0]["vid"]: entry}))
    with pytest.raises(DataError, match=rf"fg.json: video {ds.items[0]['vid']}: {match}"):
        ds.load_foreground_masks(0)


def test_frame_size_mismatch_blames_the_odd_frame(build_data, data_cfgs, mevis_copy):
    ds = _mevis(build_data, data_cfgs, mevis_copy)
    vid = ds.items[0]["vid"]
    assert ds[0]["meta"]["frame_indices"][0] == 0  # the first sampled frame is the odd one
    odd = mevis_copy / "JPEGImages" / vid / "00000.jpg"
    Image.open(odd).resize((64, 48)).save(odd)
    with pytest.raises(DataError, match=rf"{vid}/00000.jpg: size 64x48 differs from 128x96 of the video's other "
                                        rf"frames \(e.g. \S*{vid}/00002.jpg\)") as err:
        ds[0]
    assert _reason(err) == "size_mismatch"
    reader = InferenceReader(tokenizer=dict(type="build_tiny_tokenizer"), image_size=64, image_seq_length=16,
                             sam_image_size=128)
    frames = [np.zeros((48, 64, 3), np.uint8)] + [np.zeros((96, 128, 3), np.uint8)] * 3
    with pytest.raises(DataError, match=r"frame 0: size 64x48 differs from 128x96 of the video's other frames "
                                        r"\(e.g. frame 1\)"):
        reader.video_item(frames, ["the circle"])
