"""The CPU demo, shortened: the tiny model trained on synthetic data must beat the union-of-shapes
baseline on held-out images (a model that segments "the foreground" and ignores the expression)."""
import json
import os

import pytest

from projects.salma.demo import (DATA_RECORD, EMPTY, UNION, format_report, prepare_demo_data, res_scores_by_kind,
                                        run_demo, sentence_groups)
from projects.salma.evaluation.metrics import RESAccumulator
from projects.salma.evaluation.writers import ResultStore

CONFIG = "configs/tiny/salma_tiny_synthetic.py"
SHORT_ITERS = 1000  # the README demo runs the config's 1500


def test_sentence_groups_follow_the_generator_grammar():
    assert sentence_groups("the red circle") == ["attribute"]
    assert sentence_groups("the triangle that is cyan") == ["attribute"]
    assert sentence_groups("the circle on the left") == ["spatial", "relational"]
    assert sentence_groups("the larger blue shape") == ["size", "relational"]


def _state(inter: int, union: int) -> list[float]:
    acc = RESAccumulator(inter=inter, union=union, iou_sum=inter / union, count=1)
    return acc.to_array().tolist()


def test_res_scores_by_kind_pools_each_group_from_the_saved_records(tmp_path):
    store = ResultStore(str(tmp_path))
    store.append({"key": "image:1", "sentences": [
        {"sentence": "the red circle", "res_state": _state(5, 10)},
        {"sentence": "the circle on the left", "res_state": _state(1, 4)}]})
    store.append({"key": "image:2", "sentences": [{"sentence": "the larger blue shape", "res_state": _state(3, 4)}]})
    scores = res_scores_by_kind(str(tmp_path))
    assert {k: v["n_sentences"] for k, v in scores.items()} == {"attribute": 1, "spatial": 1, "size": 1, "relational": 2}
    assert scores["attribute"]["cIoU"] == pytest.approx(50.0) and scores["spatial"]["cIoU"] == pytest.approx(25.0)
    # relational: (1 + 3) / (4 + 4) pooled; gIoU the mean of 0.25 and 0.75
    assert scores["relational"]["cIoU"] == pytest.approx(50.0) and scores["relational"]["gIoU"] == pytest.approx(50.0)


_TINY_DATA = dict(num_images=3, num_val_images=1, num_videos=1, num_val_videos=1, num_frames=2)


def test_demo_data_is_rewritten_when_its_arguments_change_and_reused_when_not(tmp_path):
    root = str(tmp_path / "seed0")
    prepare_demo_data(root, 0, **_TINY_DATA)
    refs = os.path.join(root, "refcoco_synth", "refs(unc).p")
    first = open(refs, "rb").read()
    assert json.load(open(os.path.join(root, DATA_RECORD)))["num_images"] == 3
    os.utime(refs, (0, 0))
    prepare_demo_data(root, 0, **_TINY_DATA)  # same arguments: untouched
    assert os.stat(refs).st_mtime == 0
    prepare_demo_data(root, 0, **{**_TINY_DATA, "num_images": 4})  # other arguments: written again
    assert os.stat(refs).st_mtime > 0 and open(refs, "rb").read() != first
    assert json.load(open(os.path.join(root, DATA_RECORD)))["num_images"] == 4


@pytest.mark.slow
def test_short_demo_beats_the_union_baseline(tmp_path):
    # The demo's data (tools/demo_cpu.py's generator settings), fewer training and held-out items.
    data = prepare_demo_data(str(tmp_path / "synthetic"), 0, num_images=300, num_val_images=20, num_val_videos=2)
    export = str(tmp_path / "work" / "export")
    report = run_demo(CONFIG, str(tmp_path / "work"), data, max_iters=SHORT_ITERS, export_dir=export)
    print(format_report(report))

    res = report["scores"]["refcoco_synth/val"]
    assert res["model"]["n_sentences"] > 100
    assert res[EMPTY]["cIoU"] == 0.0
    assert res["model"]["cIoU"] > res[UNION]["cIoU"] + 5.0, res
    relational = res["model"]["by_kind"]["relational"]
    assert relational["n_sentences"] > 0 and relational["n_sentences"] < res["model"]["n_sentences"]
    video = report["scores"]["mevis_synth/valid_u"]
    assert video["model"]["n_videos"] == 2 and video["model"]["J&F"] > video[EMPTY]["J&F"]
    # What tools/test.py would write: results, summaries and overlays of the evaluated splits.
    eval_dir = tmp_path / "work" / "eval"
    assert json.load(open(eval_dir / "summary.json"))
    assert os.listdir(eval_dir / "refcoco_synth" / "val" / "vis")
    assert json.load(open(os.path.join(export, "config.json")))  # the trained model, exported


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["qwen2.5-vl", "qwen3-vl"])
def test_the_demo_runs_end_to_end_on_another_backbone(tmp_path, backbone):
    """--backbone: the family's tiny twin trains, is evaluated through tools/test.py's path (its readers
    in the family's inputs) and exports; a few iterations, so the scores are only finite, not good."""
    data = prepare_demo_data(str(tmp_path / "synthetic"), 0, num_images=8, num_val_images=3, num_videos=2,
                             num_val_videos=1)
    export = str(tmp_path / "work" / "export")
    report = run_demo(CONFIG, str(tmp_path / "work"), data, max_iters=4, export_dir=export, backbone=backbone)
    assert report["backbone"] == backbone
    config = json.load(open(os.path.join(export, "config.json")))
    assert "qwen_vl" in config and config["inputs"]["vision"]["family"] == "qwen_vl"
    res, video = report["scores"]["refcoco_synth/val"], report["scores"]["mevis_synth/valid_u"]
    assert res["model"]["n_sentences"] > 0 and 0.0 <= res["model"]["cIoU"] <= 100.0
    assert video["model"]["n_videos"] == 1 and 0.0 <= video["model"]["J&F"] <= 100.0


def test_an_unknown_backbone_is_refused_by_name():
    from mmengine.config import Config

    from projects.salma.demo import use_backbone

    with pytest.raises(ValueError, match="backbone must be one of"):
        use_backbone(Config.fromfile(CONFIG), "llava")
