"""End to end through tools/test.py on synthetic RefCOCO-, MeViS- and ReVOS-style data with the tiny
random model: the saved numbers equal an independent recomputation (tests/independent_metrics.py,
written from docs/metrics.md's definitions, not the package's scorer) from the per-item RLE results and
the GT files, restarts skip finished items, two processes give the one-process numbers, submissions
have the benchmark layout, and question expressions are asked as questions. The real generation is
steered (``forced_answer``) so that both the mask path and the no-mask path run, and the saved
masks are checked to be non-trivial before they are scored."""
import importlib.util
import io
import json
import os
import pickle
import shutil
import socket
import zipfile

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image
from pycocotools import mask as mask_utils

import independent_metrics as M
from projects.salma.datasets.synthetic import make_synthetic
from projects.salma.models.llava_sam2 import VideoLLaVASAMModel
from projects.salma.testing import assert_nontrivial_masks, forced_answer

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_FRAMES = 6
QUESTION = "Which shape is {}?"


# ------------------------------------------------------------------ helpers
def answer_for(prompt: str) -> str:
    """What the (steered) LLM answers, so both paths run: no [SEG] for plain prompts about
    squares, '[SEG]' otherwise (always for questions)."""
    return "No." if "square" in prompt and "?" not in prompt else "Sure, [SEG]."


def load_tool():
    spec = importlib.util.spec_from_file_location("salma_test_tool", os.path.join(ROOT, "tools", "test.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tool(*argv):
    torch.set_num_threads(1)  # same arithmetic in every process of the equality tests
    return load_tool().main([str(a) for a in argv])


def make_revos(mevis_root: str, out: str) -> None:
    """ReVOS-style copy of a MeViS-style split: type_id 0/1 (type 1 asked as a question) and the
    foreground (union of every object) per video."""
    os.makedirs(out)
    os.symlink(os.path.join(mevis_root, "JPEGImages"), os.path.join(out, "JPEGImages"))
    shutil.copy(os.path.join(mevis_root, "mask_dict.json"), os.path.join(out, "mask_dict.json"))
    meta = json.load(open(os.path.join(mevis_root, "meta_expressions.json")))
    masks = json.load(open(os.path.join(mevis_root, "mask_dict.json")))
    foreground = {}
    for vid, video in meta["videos"].items():
        for k, (exp_id, exp) in enumerate(sorted(video["expressions"].items())):
            exp["type_id"] = k % 2
            if k % 2:
                exp["exp"] = QUESTION.format(exp["exp"])
        n = len(video["frames"])
        union = np.zeros((n, 96, 128), dtype=np.uint8)
        for exp in video["expressions"].values():
            for a in exp["anno_id"]:
                for t, rle in enumerate(masks[str(a)]):
                    if rle is not None:
                        union[t] |= decode(rle)
        foreground[vid] = {"masks_rle": [mask_rle(m) for m in union]}
    json.dump(meta, open(os.path.join(out, "meta_expressions.json"), "w"))
    json.dump(foreground, open(os.path.join(out, "mask_dict_foreground.json"), "w"))


def decode(rle) -> np.ndarray:
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def mask_rle(m: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode()}


def read_records(run_dir: str) -> list[dict]:
    records = []
    for name in sorted(os.listdir(run_dir)):
        if name.startswith("results-rank"):
            records += [json.loads(line) for line in open(os.path.join(run_dir, name))]
    return sorted(records, key=lambda r: r["index"])


def metrics_of(work_dir: str) -> dict:
    summary = json.load(open(os.path.join(work_dir, "summary.json")))
    return {name: entry["metrics"] for name, entry in summary.items()}


CONFIG = """
_base_ = [{base!r}]
_refcoco = {refcoco!r}
_mevis = {mevis!r}
_revos = {revos!r}
test_datasets = dict(
    refcoco_synth=dict(
        task="res",
        dataset=dict(type="RefCOCODataset", data_root=_refcoco, image_folder=_refcoco + "/images",
                     max_dynamic_patch=1),
        splits=dict(val=dict(split="val")),
    ),
    mevis_synth=dict(
        task="ref_vos",
        dataset=dict(type="RefVOSDataset", data_root=_mevis, expression_file="meta_expressions.json",
                     image_folder="JPEGImages", mask_file="mask_dict.json"),
        splits=dict(valid_u=dict(), valid=dict(mask_file=None)),
    ),
    revos_synth=dict(
        task="ref_vos", protocol="revos",
        dataset=dict(type="RefVOSDataset", data_root=_revos, expression_file="meta_expressions.json",
                     image_folder="JPEGImages", mask_file="mask_dict.json",
                     foreground_file="mask_dict_foreground.json"),
    ),
)
test_options = dict(sam2_memory="random", num_llm_frames=3, llm_frame_sampling="uniform")
"""


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("synthetic"))
    roots = make_synthetic(out, num_images=0, num_val_images=4, num_videos=0, num_val_videos=2,
                           num_frames=NUM_FRAMES, num_llava=0, num_gcg=0)
    roots["revos"] = os.path.join(out, "revos_synth")
    make_revos(roots["mevis_valid_u"], roots["revos"])
    config = os.path.join(out, "eval_synthetic.py")
    with open(config, "w") as f:
        f.write(CONFIG.format(base=os.path.join(ROOT, "configs/tiny/salma_tiny.py"), refcoco=roots["refcoco"],
                              mevis=roots["mevis_valid_u"], revos=roots["revos"]))
    roots["config"] = config
    return roots


@pytest.fixture(scope="module")
def fake_llm():
    with forced_answer(answer_for):
        yield


@pytest.fixture(scope="module")
def full_run(data, fake_llm, tmp_path_factory):
    """Every run of the config, one process."""
    work_dir = tmp_path_factory.mktemp("full")
    threads = torch.get_num_threads()
    entries = run_tool(data["config"], "--checkpoint", "none", "--work-dir", work_dir, "--show", 1)
    torch.set_num_threads(threads)
    return {"work_dir": str(work_dir), "entries": entries}


# ------------------------------------------------------------------ tests
def test_res_numbers_equal_recomputation_from_saved_rle(data, full_run):
    records = read_records(os.path.join(full_run["work_dir"], "refcoco_synth/val"))
    instances = json.load(open(os.path.join(data["refcoco"], "instances.json")))
    refs = {r["ref_id"]: r for r in pickle.load(open(os.path.join(data["refcoco"], "refs(unc).p"), "rb"))}
    anns = {a["id"]: a for a in instances["annotations"]}
    sizes = {im["id"]: (im["height"], im["width"]) for im in instances["images"]}
    pairs, n_sent = [], 0
    for rec in records:
        h, w = sizes[rec["image_id"]]
        for s in rec["sentences"]:
            assert refs[s["ref_id"]]["ann_id"] == s["ann_id"]
            seg = anns[s["ann_id"]]["segmentation"]
            gt = (mask_utils.decode(mask_utils.frPyObjects(seg, h, w)).max(axis=2) if isinstance(seg, list)
                  else decode(seg))
            pred = None if s["mask"] is None else decode(s["mask"])
            assert (s["mask"] is None) == (s["n_seg"] == 0) == ("[SEG]" not in s["answer"])
            assert s["answer"] == answer_for(s["question"])
            if pred is not None:
                assert_nontrivial_masks(pred, f"sentence {s.get('sent_id', n_sent)}")
            pairs.append((pred, gt))
            n_sent += 1
    expected = M.res_split(pairs)
    got = metrics_of(full_run["work_dir"])["refcoco_synth/val"]
    assert got["n_sentences"] == n_sent == sum(len(r["sentences"]) for r in refs.values() if r["split"] == "val")
    assert 0 < got["n_no_seg"] < n_sent  # both paths exercised; strict != lenient
    for key in ("cIoU", "gIoU", "cIoU_lenient", "gIoU_lenient"):
        assert got[key] == pytest.approx(expected[key], rel=1e-12, abs=1e-12), key
    assert got["cIoU"] < got["cIoU_lenient"]


def _video_gt(root: str, video: dict, exp: dict, masks: dict) -> np.ndarray:
    gt = np.zeros((len(video["frames"]), 96, 128), dtype=bool)
    for a in exp["anno_id"]:
        for t, rle in enumerate(masks[str(a)]):
            if rle is not None:
                gt[t] |= decode(rle)
    return gt


def _pred(exp_record: dict, n_frames: int) -> np.ndarray:
    if exp_record["masks"] is None:
        return np.zeros((n_frames, 96, 128), dtype=bool)
    assert len(exp_record["masks"]) == n_frames  # propagated to every frame
    masks = np.stack([decode(r) for r in exp_record["masks"]])
    assert_nontrivial_masks(masks, f"{exp_record['exp_id']}: masks of every frame")
    return masks


def test_refvos_numbers_equal_recomputation_from_saved_rle(data, full_run):
    root = data["mevis_valid_u"]
    meta = json.load(open(os.path.join(root, "meta_expressions.json")))["videos"]
    masks = json.load(open(os.path.join(root, "mask_dict.json")))
    records = read_records(os.path.join(full_run["work_dir"], "mevis_synth/valid_u"))
    scores, with_masks = [], 0
    for rec in records:
        video = meta[rec["video_id"]]
        assert rec["llm_frames"] == [0, 2, 5]  # uniform K=3 of 6
        for e in rec["expressions"]:
            assert (e["masks"] is None) == ("[SEG]" not in e["answer"])
            with_masks += e["masks"] is not None
            j, f = M.expression_jf(_video_gt(root, video, video["expressions"][e["exp_id"]], masks),
                                   _pred(e, len(video["frames"])))
            assert (e["J"], e["F"]) == pytest.approx((j, f), rel=1e-12)
            scores.append((j, f))
    expected = M.refvos_split(scores)
    got = metrics_of(full_run["work_dir"])["mevis_synth/valid_u"]
    assert got["n"] == len(scores) == sum(len(v["expressions"]) for v in meta.values())
    assert 0 < with_masks < len(scores)  # both paths exercised
    for key in ("J", "F", "J&F"):
        assert got[key] == pytest.approx(expected[key], rel=1e-12)
    assert 0 < got["J&F"] < 100


def test_revos_numbers_equal_recomputation_and_questions_are_asked(data, full_run):
    root = data["revos"]
    meta = json.load(open(os.path.join(root, "meta_expressions.json")))["videos"]
    masks = json.load(open(os.path.join(root, "mask_dict.json")))
    fg = json.load(open(os.path.join(root, "mask_dict_foreground.json")))
    records = read_records(os.path.join(full_run["work_dir"], "revos_synth"))
    scores, questions = [], 0
    for rec in records:
        video = meta[rec["video_id"]]
        foreground = np.stack([decode(r) for r in fg[rec["video_id"]]["masks_rle"]])
        for e in rec["expressions"]:
            gt = _video_gt(root, video, video["expressions"][e["exp_id"]], masks)
            pred = _pred(e, len(video["frames"]))
            j, f = M.expression_jf(gt, pred)
            a, r = M.revos_a_r(gt, pred, foreground)
            scores.append({"type_id": e["type_id"], "J": j, "F": f, "A": a, "R": r})
            if e["type_id"] == 1:  # asked as the question itself, and answered with a mask
                questions += 1
                assert e["exp"].endswith("?")
                assert e["question"] == e["exp"] + " Please respond with segmentation mask."
                assert e["n_seg"] == 1 and e["masks"] is not None and any(m["counts"] for m in e["masks"])
    expected = M.revos_split(scores)
    got = metrics_of(full_run["work_dir"])["revos_synth"]
    assert questions > 0
    for subset in ("referring", "reasoning", "overall"):
        for key in ("J", "F", "J&F", "A", "R"):
            assert got[subset][key] == pytest.approx(expected[subset][key], rel=1e-12), (subset, key)


def test_question_expression_prompt_ends_with_the_question(data):
    from mmengine.config import Config

    from projects.salma.datasets.collate import expand_eval_sample
    from projects.salma.registry import DATASETS

    tokenizer_cfg = Config.fromfile(data["config"]).model.mllm.tokenizer
    dataset = DATASETS.build(dict(type="RefVOSDataset", tokenizer=tokenizer_cfg, data_root=data["revos"],
                                  expression_file="meta_expressions.json", image_folder="JPEGImages",
                                  mask_file="mask_dict.json", mode="eval", num_frames=2, frame_sampling="first",
                                  image_size=128, image_seq_length=16, sam_image_size=128))
    rows = expand_eval_sample(dataset[0])
    question_rows = [r for r in rows if r["meta"]["type_ids"][r["meta"]["prompt_index"]] == 1]
    assert question_rows
    for row in question_rows:
        k = row["meta"]["prompt_index"]
        exp = row["meta"]["expressions"][k]
        prompt = dataset.tokenizer.decode(row["input_ids"])
        assert prompt.endswith(f"{exp} Please respond with segmentation mask.<|im_end|>\n<|im_start|>assistant\n")
        assert "Please segment" not in prompt  # not wrapped in the referring template
        assert dataset.tokenizer.decode(row["input_ids"][row["expr_ids"] == 0]).strip() == exp


def test_submission_zip_has_every_frame_of_every_expression(data, full_run):
    entry = full_run["entries"]["mevis_synth/valid"]
    meta = json.load(open(os.path.join(data["mevis_valid_u"], "meta_expressions.json")))["videos"]
    expected = {f"Annotations/{vid}/{exp_id}/{frame}.png"
                for vid, v in meta.items() for exp_id in v["expressions"] for frame in v["frames"]}
    with zipfile.ZipFile(entry["submission"]) as zf:
        assert set(zf.namelist()) == expected
        for name in sorted(expected)[:: max(1, len(expected) // 7)]:
            png = Image.open(io.BytesIO(zf.read(name)))
            assert png.size == (128, 96) and png.mode == "L"
            assert set(np.unique(np.asarray(png))) <= {0, 255}
    assert entry["metrics"]["n_expressions"] == sum(len(v["expressions"]) for v in meta.values())
    # same predictions as the GT split of the same videos
    valid_u = read_records(os.path.join(full_run["work_dir"], "mevis_synth/valid_u"))
    valid = read_records(os.path.join(full_run["work_dir"], "mevis_synth/valid"))
    assert [[e["masks"] for e in r["expressions"]] for r in valid] == [[e["masks"] for e in r["expressions"]] for r in valid_u]


def test_summary_files_and_overlays(full_run):
    work_dir = full_run["work_dir"]
    md = open(os.path.join(work_dir, "summary.md")).read()
    for name in ("refcoco_synth/val", "mevis_synth/valid_u", "revos_synth", "mevis_synth/valid"):
        assert name in md
    vis = os.listdir(os.path.join(work_dir, "refcoco_synth/val/vis"))
    assert vis and all(v.endswith(".png") for v in vis)
    assert os.listdir(os.path.join(work_dir, "mevis_synth/valid_u/vis"))


def test_restart_skips_finished_items_and_gives_the_same_numbers(data, full_run, fake_llm, tmp_path, monkeypatch):
    calls = []
    predict = VideoLLaVASAMModel.predict

    def counting_predict(self, data_, *args, **kwargs):
        calls.extend(m["image_id"] for m in data_["meta"])
        return predict(self, data_, *args, **kwargs)

    monkeypatch.setattr(VideoLLaVASAMModel, "predict", counting_predict)
    args = [data["config"], "--checkpoint", "none", "--work-dir", tmp_path, "--dataset", "refcoco_synth"]
    first = run_tool(*args, "--max-items", 2)["refcoco_synth/val"]
    assert (first["computed"], first["reused"], first["n_items"]) == (2, 0, 2)
    first_images = set(calls)
    calls.clear()
    second = run_tool(*args)["refcoco_synth/val"]
    assert (second["computed"], second["reused"]) == (2, 2)
    assert first_images.isdisjoint(calls) and len(set(calls)) == 2  # only the remaining images
    assert second["metrics"] == metrics_of(full_run["work_dir"])["refcoco_synth/val"]
    assert metrics_of(str(tmp_path))["refcoco_synth/val"] == second["metrics"]
    third = run_tool(*args)["refcoco_synth/val"]  # nothing left to do
    assert (third["computed"], third["reused"]) == (0, 4) and third["metrics"] == second["metrics"]


def test_checkpoint_with_trainable_weights_reproduces_the_run(data, full_run, tmp_path):
    from mmengine.config import Config

    from projects.salma.build import build_model

    model = build_model(Config.fromfile(data["config"]), "none", torch.device("cpu"))
    state = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    torch.save({"state_dict": state, "meta": {"iter": 1}}, tmp_path / "iter_1.pth")
    entries = run_tool(data["config"], "--checkpoint", tmp_path / "iter_1.pth", "--work-dir", tmp_path / "wd",
                       "--dataset", "refcoco_synth")
    assert entries["refcoco_synth/val"]["metrics"] == metrics_of(full_run["work_dir"])["refcoco_synth/val"]


def _dist_worker(rank: int, world: int, port: int, argv: list) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    with forced_answer(answer_for):
        run_tool(*argv, "--launcher", "pytorch")
    assert not torch.distributed.is_initialized()  # tools/test.py leaves the group before it returns


def test_two_processes_give_the_one_process_numbers(data, full_run, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [data["config"], "--checkpoint", "none", "--work-dir", str(tmp_path)]
    mp.spawn(_dist_worker, args=(2, port, argv), nprocs=2, join=True)
    assert metrics_of(str(tmp_path)) == metrics_of(full_run["work_dir"])
    for run in ("refcoco_synth/val", "mevis_synth/valid_u", "revos_synth"):
        files = sorted(os.listdir(tmp_path / run))
        assert "results-rank0.jsonl" in files and "results-rank1.jsonl" in files
        ours = {r["key"]: r for r in read_records(str(tmp_path / run))}
        ref = {r["key"]: r for r in read_records(os.path.join(full_run["work_dir"], run))}
        assert ours == ref  # every item, same masks
    with zipfile.ZipFile(tmp_path / "mevis_synth/valid/submission.zip") as a, \
            zipfile.ZipFile(os.path.join(full_run["work_dir"], "mevis_synth/valid/submission.zip")) as b:
        assert sorted(a.namelist()) == sorted(b.namelist())
        assert all(a.read(n) == b.read(n) for n in a.namelist())


def test_res_metric_in_mmengine_val_loop_matches_the_tool(data, full_run, fake_llm, tmp_path):
    """val_evaluator=dict(type='RESMetric') during training gives the numbers tools/test.py gives."""
    from mmengine.config import Config
    from mmengine.runner import Runner

    from projects.salma.build import build_model

    cfg = Config.fromfile(data["config"])
    runner = Runner(
        model=build_model(cfg, "none", torch.device("cpu")), work_dir=str(tmp_path), default_scope="salma",
        val_dataloader=dict(
            batch_size=2, num_workers=0, sampler=dict(type="DefaultSampler", shuffle=False),
            dataset=dict(type="RefCOCODataset", tokenizer=cfg.model.mllm.tokenizer, data_root=data["refcoco"],
                         image_folder=data["refcoco"] + "/images", split="val", mode="eval", max_dynamic_patch=1,
                         image_size=128, image_seq_length=16, sam_image_size=128),
            collate_fn=dict(type="salma.salma_eval_collate")),
        val_evaluator=dict(type="RESMetric"), val_cfg=dict(type="ValLoop"))
    torch.set_num_threads(1)
    metrics = runner.val()
    expected = metrics_of(full_run["work_dir"])["refcoco_synth/val"]
    assert metrics == {f"res/{k}": v for k, v in expected.items() if k != "n_images"}


def test_decode_all_ablation_through_cfg_options(data, fake_llm, tmp_path):
    entries = run_tool(data["config"], "--checkpoint", "none", "--work-dir", tmp_path, "--dataset", "mevis_synth",
                       "--split", "valid_u", "--max-items", 1, "--cfg-options", "test_options.propagation=decode_all")
    entry = entries["mevis_synth/valid_u"]
    assert entry["n_items"] == 1 and entry["computed"] == 1
    meta = json.load(open(tmp_path / "mevis_synth/valid_u/run_meta.json"))
    assert meta["options"]["propagation"] == "decode_all"
    (record,) = read_records(str(tmp_path / "mevis_synth/valid_u"))
    with_masks = [e for e in record["expressions"] if e["masks"] is not None]
    assert with_masks and all(len(e["masks"]) == NUM_FRAMES for e in with_masks)
    for e in with_masks:
        assert_nontrivial_masks(np.stack([decode(r) for r in e["masks"]]), f"{e['exp_id']}: decode_all masks")
    assert "(first 1 of 2 items)" in open(tmp_path / "summary.md").read()
