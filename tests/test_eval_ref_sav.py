"""Ref-SAV through the evaluation runner: frames from the SA-V mp4, long / short expressions scored
and summarised separately, numbers equal to a recomputation from the saved RLE and the GT files."""
import json
import os

import numpy as np
import pytest
import torch
from mmengine.config import Config
from pycocotools import mask as mask_utils

from independent_metrics import expression_jf, revos_a_r
from test_eval_e2e import read_records

from projects.salma.build import build_model
from projects.salma.evaluation.runner import TrackerCache, evaluate_run, resolve_runs
from projects.salma.testing import assert_nontrivial_masks, forced_answer

TINY = "configs/tiny/salma_tiny.py"


def refsav_split(per_expression: list[dict]) -> dict[str, dict[str, float]]:
    """Sa2VA's eval_ref_sav table, written out: per type (0 long, 1 short) the means x100 and J&F;
    overall = the mean of the two types."""
    out = {}
    for name, type_id in (("long", 0), ("short", 1)):
        rows = [e for e in per_expression if e["type_id"] == type_id]
        out[name] = {m: 100.0 * sum(e[m] for e in rows) / len(rows) for m in "JFA"}
        out[name]["J&F"] = (out[name]["J"] + out[name]["F"]) / 2
    out["overall"] = {k: (out["long"][k] + out["short"][k]) / 2 for k in ("J", "F", "J&F", "A")}
    return out


@forced_answer("Sure, [SEG].")
def test_ref_sav_scores_long_and_short_expressions_separately(synthetic_data, tmp_path):
    root = synthetic_data["sav"]
    cfg = Config.fromfile(TINY)
    cfg.test_datasets = dict(ref_sav=dict(
        task="ref_vos", protocol="refsav",
        dataset=dict(type="RefSAVDataset", data_root=root, expression_file="ref_sav_valid/meta_expressions_valid.json",
                     mask_file="ref_sav_valid/mask_dict.json", video_folder="sav_train",
                     video_file="{video_id:.7}/{video_id}.mp4", max_dynamic_patch=1)))
    cfg.test_options = dict(propagation="decode_all", num_llm_frames=2, llm_frame_sampling="uniform", max_new_tokens=8)
    (run,) = resolve_runs(cfg)
    model = build_model(cfg, "none", torch.device("cpu"))
    entry = evaluate_run(run, cfg, model, TrackerCache(model, cfg.model.to_dict()), checkpoint="none",
                         work_dir=str(tmp_path), max_items=None, show=1)

    meta = json.load(open(os.path.join(root, "ref_sav_valid", "meta_expressions_valid.json")))["videos"]
    masks = json.load(open(os.path.join(root, "ref_sav_valid", "mask_dict.json")))
    scores = []
    for rec in read_records(str(tmp_path / "ref_sav")):
        video = meta[rec["video_id"]]
        assert rec["frame_names"] == video["frames"] and rec["frame_paths"][1].endswith("#4")
        for e in rec["expressions"]:
            exp = video["expressions"][e["exp_id"]]
            assert e["type_id"] == exp["type_id"] and e["question"].startswith("Please segment the object according")
            gt = np.stack([mask_utils.decode(r) if r else np.zeros((96, 128), np.uint8)
                           for r in masks[str(exp["anno_id"][0])]]).astype(bool)
            pred = np.stack([mask_utils.decode(r) for r in e["masks"]]).astype(bool)  # every frame
            assert_nontrivial_masks(torch.from_numpy(pred).any(0, keepdim=True), "predicted masks")
            j, f = expression_jf(gt, pred)
            a, _ = revos_a_r(gt, pred, gt)
            assert (e["J"], e["F"], e["A"]) == pytest.approx((j, f, a), rel=1e-12)
            scores.append({"type_id": e["type_id"], "J": j, "F": f, "A": a})
    metrics = entry["metrics"]
    assert metrics["long"]["n"] == metrics["short"]["n"] == len(scores) // 2 > 0
    expected = refsav_split(scores)
    for subset in ("long", "short", "overall"):
        for key in ("J", "F", "J&F", "A"):
            assert metrics[subset][key] == pytest.approx(expected[subset][key], rel=1e-12)
    assert os.listdir(tmp_path / "ref_sav" / "vis")  # overlays read the mp4 frames
