"""Attention analysis: output shares by hand, the distractor regions of the synthetic set,
tools/test.py --attention-stats and tools/visualize_attention.py on the tiny model."""
import json
import os
import sys

import numpy as np
import pytest
import torch

from projects.salma.evaluation.attention_stats import CocoObjects, output_shares
from projects.salma.datasets.masks import decode_segmentation
from projects.salma.datasets.synthetic import make_synthetic
from projects.salma.models.cma import CMAAttention
from projects.salma.testing import forced_answer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))


def test_output_shares_by_hand():
    # 2x2 feature grid over a 4x4 image; CMA adds norms 1, 2, 3, 4 (row-major)
    rec = CMAAttention(weights=torch.zeros(1, 4, 2), padding=torch.zeros(1, 1, dtype=torch.bool),
                       prior_logits=None, gate=None, delta=torch.tensor([[1.0, 2.0, 3.0, 4.0]]), size=(2, 2))
    target = np.zeros((4, 4), np.uint8)
    target[:2, :2] = 1  # the top-left cell
    distractor = np.zeros((4, 4), np.uint8)
    distractor[:, 2:] = 1  # the right column of cells
    half = np.zeros((4, 4), np.uint8)
    half[2:, :1] = 1  # half of the bottom-left cell
    shares = output_shares(rec, 0, {"target": target, "distractor": distractor, "other": half, "none": None})
    assert shares == pytest.approx({"target": 0.1, "target_area": 0.25, "distractor": 0.6, "distractor_area": 0.5,
                                    "other": 0.5 * 3 / 10, "other_area": 0.125})
    zero = CMAAttention(rec.weights, rec.padding, None, None, torch.zeros(1, 4), (2, 2))
    assert np.isnan(output_shares(zero, 0, {"target": target})["target"])  # CMA added nothing


CONFIG = """
_base_ = [{base!r}]
_refcoco = {refcoco!r}
model = dict(grounding_encoder=dict({grounding}))
test_datasets = dict(refcoco_synth=dict(
    task="res",
    dataset=dict(type="RefCOCODataset", data_root=_refcoco, image_folder=_refcoco + "/images", max_dynamic_patch=1,
                 use_thumbnail=False),
    splits=dict(val=dict(split="val"))))
test_options = dict(max_new_tokens=8)
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Distractor data, the tiny SALMA config and a CMA-less baseline, checkpoints with CMA's gain on."""
    from mmengine.config import Config

    from projects.salma.build import build_model

    out = tmp_path_factory.mktemp("attention")
    roots = make_synthetic(str(out / "data"), seed=2, num_images=0, num_val_images=2, num_videos=0, num_val_videos=0,
                           height=128, width=128, num_llava=0, num_gcg=0, num_osprey=0, num_video_qa=0,
                           num_sav_videos=0, num_ref_sav_videos=0, num_flickr=0, num_psg=0, distractor=True)
    paths = {}
    for name, grounding in (("salma", ""), ("baseline", "enable_cma=False, mask_source='none'")):
        config = out / f"{name}.py"
        config.write_text(CONFIG.format(base=os.path.join(ROOT, "configs/tiny/salma_tiny.py"),
                                        refcoco=roots["refcoco"], grounding=grounding))
        model = build_model(Config.fromfile(str(config)), "none", torch.device("cpu"))
        if model.grounding_encoder.cma is not None:
            with torch.no_grad():
                model.grounding_encoder.cma.gamma_attn.fill_(0.8)
        state = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
        torch.save({"state_dict": state, "meta": {"iter": 1}}, out / f"{name}.pth")
        paths[name] = (str(config), str(out / f"{name}.pth"))
    return {"roots": roots, "paths": paths, "out": out}


def test_distractor_regions_of_the_synthetic_set(setup):
    root = setup["roots"]["refcoco"]
    objects = CocoObjects.read(os.path.join(root, "instances.json"))
    instances = json.load(open(os.path.join(root, "instances.json")))
    for image_id, (h, w) in objects.sizes.items():
        anns = [a for a in instances["annotations"] if a["image_id"] == image_id]
        target = next(a for a in anns if not a.get("distractor"))
        flagged = next(a for a in anns if a.get("distractor"))
        gt = decode_segmentation(target["segmentation"], h, w)
        regions = objects.regions(image_id, target["id"], gt)
        assert np.array_equal(regions["distractor"], decode_segmentation(flagged["segmentation"], h, w) & (1 - gt))
        others = [decode_segmentation(a["segmentation"], h, w) for a in anns if a not in (target, flagged)]
        assert np.array_equal(regions["other"] > 0, np.any(others, axis=0) & (gt == 0) & (regions["distractor"] == 0))


def _test_tool(*argv):
    import test as test_tool  # tools/test.py

    return test_tool.main([str(a) for a in argv])


def test_attention_stats_in_the_evaluation_summary(setup, tmp_path):
    config, checkpoint = setup["paths"]["salma"]
    with forced_answer("It is [SEG]."):
        plain = _test_tool(config, "--checkpoint", checkpoint, "--work-dir", tmp_path / "plain")
        entries = _test_tool(config, "--checkpoint", checkpoint, "--work-dir", tmp_path / "plain", "--attention-stats")
    metrics = entries["refcoco_synth/val"]["metrics"]
    assert "attn_target" not in plain["refcoco_synth/val"]["metrics"]  # off by default
    assert entries["refcoco_synth/val"]["recomputed"] == 2  # items saved without the statistics: predicted again
    assert metrics["n_attention"] == metrics["n_sentences"] > 0
    assert {k: plain["refcoco_synth/val"]["metrics"][k] for k in ("cIoU", "gIoU")} == \
        {k: metrics[k] for k in ("cIoU", "gIoU")}  # capturing changes no prediction
    records = [json.loads(line) for f in (tmp_path / "plain" / "refcoco_synth" / "val").glob("results*.jsonl")
               for line in open(f)]
    sentences = [s for r in records if "attention_stats" in r["fingerprint"] for s in r["sentences"]]
    assert len(sentences) == metrics["n_sentences"]
    for s in sentences:
        a = s["attention"]
        assert 0 <= a["target"] <= 1 and 0 <= a["distractor"] <= 1 and a["target"] + a["distractor"] + a["other"] <= 1 + 1e-6
        assert a["distractor_area"] > 2 * a["target_area"]  # the large distractor
    assert metrics["attn_target"] == pytest.approx(100 * np.mean([s["attention"]["target"] for s in sentences]))
    assert metrics["attn_distractor"] == pytest.approx(100 * np.mean([s["attention"]["distractor"] for s in sentences]))
    assert "Where CMA's output lands" in (tmp_path / "plain" / "summary.md").read_text()

    config, checkpoint = setup["paths"]["baseline"]
    with forced_answer("It is [SEG]."):
        baseline = _test_tool(config, "--checkpoint", checkpoint, "--work-dir", tmp_path / "base", "--attention-stats")
    assert baseline["refcoco_synth/val"]["metrics"]["n_attention"] == 0  # no CMA: nothing to attribute
    assert "attn_target" not in baseline["refcoco_synth/val"]["metrics"]


def test_visualize_attention_draws_salma_beside_the_baseline(setup, tmp_path):
    import visualize_attention

    (config, checkpoint), (base_config, base_checkpoint) = setup["paths"]["salma"], setup["paths"]["baseline"]
    with forced_answer("It is [SEG]."):
        drawn = visualize_attention.main(["--config", config, "--checkpoint", checkpoint, "--dataset", "refcoco_synth",
                                          "--max-items", "1", "--compare", base_config, base_checkpoint,
                                          "--out", str(tmp_path)])
        images = visualize_attention.main([
            "--config", config, "--checkpoint", checkpoint, "--out", str(tmp_path / "img"), "--text", "the red circle",
            "--image", os.path.join(setup["roots"]["refcoco_images"], sorted(os.listdir(setup["roots"]["refcoco_images"]))[0])])
    ((key, (salma, baseline)),) = drawn.items()
    assert (tmp_path / f"{key}.png").stat().st_size > 10_000
    assert salma.to_seg.shape == (8, 8) and salma.prior.shape == (32, 32) and salma.gate.shape == (8, 8)
    total = salma.to_seg + salma.to_expression + salma.to_null  # each pixel's attention sums to one
    assert np.allclose(total, 1.0, atol=1e-5) and salma.to_expression.max() > 0
    assert salma.output.max() > 0 and salma.mask is not None and salma.mask.shape == (128, 128)
    assert salma.shares["distractor_area"] > salma.shares["target_area"]
    assert baseline.note == "no CMA" and baseline.to_seg is None and baseline.mask is not None
    report = json.load(open(tmp_path / "attention.json"))
    assert set(report[key]["models"]) == {"salma", "baseline"}
    ((_, (row,)),) = images.items()
    assert row.text == "the red circle" and row.to_seg is not None and row.shares is None
