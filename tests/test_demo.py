"""The CPU demo, shortened: the tiny model trained on synthetic data must beat the union-of-shapes
baseline on held-out images (a model that segments "the foreground" and ignores the expression)."""
import json
import os

import pytest

from projects.salma.datasets.synthetic import make_synthetic
from projects.salma.engine.demo import EMPTY, UNION, format_report, run_demo

pytestmark = pytest.mark.slow

CONFIG = "configs/tiny/salma_tiny_synthetic.py"
SHORT_ITERS = 1000  # the README demo runs the config's 1500


def test_short_demo_beats_the_union_baseline(tmp_path):
    data = str(tmp_path / "synthetic")
    # The demo's data (tools/demo_cpu.py), fewer held-out items.
    make_synthetic(data, seed=0, relational_fraction=0.1, height=128, width=128, num_val_images=20, num_val_videos=2, num_llava=0,
                   num_gcg=0)
    report = run_demo(CONFIG, str(tmp_path / "work"), data, max_iters=SHORT_ITERS)
    print(format_report(report))

    res = report["scores"]["refcoco_synth/val"]
    assert res["model"]["n_sentences"] > 100
    assert res[EMPTY]["cIoU"] == 0.0
    assert res["model"]["cIoU"] > res[UNION]["cIoU"] + 5.0, res
    video = report["scores"]["mevis_synth/valid_u"]
    assert video["model"]["n_videos"] == 2 and video["model"]["J&F"] > video[EMPTY]["J&F"]
    # What tools/test.py would write: results, summaries and overlays of the evaluated splits.
    eval_dir = tmp_path / "work" / "eval"
    assert json.load(open(eval_dir / "summary.json"))
    assert os.listdir(eval_dir / "refcoco_synth" / "val" / "vis")
