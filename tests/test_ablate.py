"""tools/ablate.py: the report's statistics on hand-computed runs, the dist launchers' commands, and a
tiny 2-config x 2-seed ablation end to end (resume, a failing config reported and not averaged)."""
import json
import math
import os
import sys

import pytest

from projects.salma.analysis.ablation import markdown, plan_runs, summarize
from projects.salma.analysis.stats import t_quantile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
import ablate  # noqa: E402


def _done(run, **metrics):
    return {"status": "done", "metrics": metrics, "config": run.config, "seed": run.seed}


def test_summary_by_hand(tmp_path):
    runs = plan_runs(["a/base.py", "b/cma.py", "c/broken.py"], [0, 1, 2], str(tmp_path))
    base, cma, broken = runs[:3], runs[3:6], runs[6:]
    results = {
        base[0]: _done(base[0], **{"val/cIoU": 70.0, "val/gIoU": 1.0}),
        base[1]: _done(base[1], **{"val/cIoU": 72.0, "val/gIoU": 2.0}),
        base[2]: _done(base[2], **{"val/cIoU": 74.0, "val/gIoU": 3.0}),
        cma[0]: _done(cma[0], **{"val/cIoU": 71.0, "val/gIoU": 2.0}),
        cma[1]: {"status": "failed", "stage": "train", "error": "RuntimeError: boom"},
        cma[2]: _done(cma[2], **{"val/cIoU": 76.0, "val/gIoU": 5.0}),
        broken[0]: {"status": "failed", "stage": "config", "error": "ValueError: bad key"},
        broken[1]: None,  # not run yet (--max-runs)
    }
    summary = summarize(runs, results, metrics=["*/cIoU"])
    assert summary["metrics"] == ["val/cIoU"]  # gIoU filtered out
    rows = {r["config"]: r for r in summary["rows"]}
    m = rows["base"]["metrics"]["val/cIoU"]["mean"]
    assert (m["mean"], m["n"]) == (72.0, 3) and m["ci"] == pytest.approx(4.302653 * 2 / math.sqrt(3), rel=1e-6)
    cma_entry = rows["cma"]["metrics"]["val/cIoU"]
    assert cma_entry["values"] == {"0": 71.0, "2": 76.0}  # the failed seed is not averaged
    assert cma_entry["mean"]["mean"] == 73.5
    # paired by seed over seeds 0 and 2 only: d = [1, 2] -> mean 1.5, sd 0.7071, t(0.975, 1) = 12.706
    assert cma_entry["diff"]["mean"] == pytest.approx(1.5) and cma_entry["diff"]["seeds"] == [0, 2]
    assert cma_entry["diff"]["ci"] == pytest.approx(t_quantile(0.975, 1) * math.sqrt(0.5) / math.sqrt(2))
    assert rows["broken"]["metrics"] == {}
    assert [(f["config"], f["seed"]) for f in summary["failures"]] == [("cma", 1), ("broken", 0)]
    assert summary["pending"] == [{"config": "broken", "seed": 1}, {"config": "broken", "seed": 2}]
    text = markdown(summary)
    assert "| base | 72.00 ± 4.97 | 3 | 70.00, 72.00, 74.00 | (reference) |" in text
    assert "| cma | 73.50 ± 31.77 | 2 | 71.00, 76.00 | +1.50 ± 6.35 |" in text
    assert "| cma | 1 | train | RuntimeError: boom |" in text and "broken seed 1" in text


def test_plan_orders(tmp_path):
    runs = plan_runs(["a.py", "b.py"], [1, 0], str(tmp_path))
    assert [(r.label, r.seed) for r in runs] == [("a", 1), ("a", 0), ("b", 1), ("b", 0)]
    runs = plan_runs(["a.py", "b.py"], [1, 0], str(tmp_path), seed_major=True)
    assert [(r.label, r.seed) for r in runs] == [("a", 1), ("b", 1), ("a", 0), ("b", 0)]
    assert runs[0].work_dir == os.path.join(str(tmp_path), "a", "seed1")


def test_plan_refuses_duplicate_names_and_seeds(tmp_path):
    with pytest.raises(ValueError, match="same file name"):
        plan_runs(["a/x.py", "b/x.py"], [0], str(tmp_path))
    with pytest.raises(ValueError, match="repeated"):
        plan_runs(["a/x.py"], [0, 0], str(tmp_path))


def test_dry_run_prints_the_dist_launchers(capsys):
    ablate.main(["configs/Sa2VA-1B.py", "configs/ablations/2_mba_gate.py", "--seeds", "3", "4", "--gpus", "8",
                 "--dry-run", "--work-dir", "wd", "--dataset", "refcoco", "--cfg-options", "train_cfg.max_epochs=2"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 8  # 2 configs x 2 seeds x (train, test)
    assert lines[0] == ("tools/dist_train.sh configs/Sa2VA-1B.py 8 --work-dir wd/Sa2VA-1B/seed3/train "
                        "--cfg-options train_cfg.max_epochs=2 randomness.seed=3")
    assert lines[7] == ('tools/dist_test.sh configs/ablations/2_mba_gate.py 8 --checkpoint '
                        '"$(cat wd/2_mba_gate/seed4/train/last_checkpoint)" --work-dir wd/2_mba_gate/seed4/eval '
                        '--dataset refcoco --cfg-options train_cfg.max_epochs=2')


class FakeTools:
    """Stand-ins for tools/train.py and tools/test.py's main(argv): they write what the real tools
    write (last_checkpoint; summary.json) and record their calls; config 'broken' fails to train."""

    def __init__(self, tmp_path):
        self.tmp_path, self.calls = tmp_path, []

    def train(self, argv):
        self.calls.append(("train", argv))
        if "broken" in argv[0]:
            raise ValueError("grounding_encoder.mask_source must be one of ('pred', 'gt', 'none'), got 'bogus'")
        work = argv[argv.index("--work-dir") + 1]
        os.makedirs(work, exist_ok=True)
        checkpoint = os.path.join(work, "iter_2.pth")
        open(checkpoint, "w").close()
        open(os.path.join(work, "last_checkpoint"), "w").write(checkpoint)

    def test(self, argv):
        self.calls.append(("test", argv))
        seed = int(next(a for a in argv if a.startswith("randomness.seed=")).split("=")[1]) if any(
            a.startswith("randomness.seed=") for a in argv) else None
        assert seed is None  # the seed is a training option only
        work = argv[argv.index("--work-dir") + 1]
        os.makedirs(work, exist_ok=True)
        config_bonus = 5.0 if "gate" in argv[0] else 0.0
        train_seed = int(os.path.dirname(work).rsplit("seed", 1)[1])
        summary = {"refcoco_synth/val": {"task": "res", "metrics": {
            "cIoU": 50.0 + config_bonus + train_seed, "cIoU_lenient": float("nan"), "n_sentences": 14}}}
        json.dump(summary, open(os.path.join(work, "summary.json"), "w"))


def test_resume_and_failures_with_stand_in_tools(tmp_path, monkeypatch):
    from projects.salma.analysis import ablation

    tools = FakeTools(tmp_path)
    monkeypatch.setattr(ablate, "_tool_main", lambda name: getattr(tools, name))
    configs = []
    for name in ("base", "gate", "broken"):  # configs that load (the fingerprint reads them)
        path = tmp_path / f"{name}.py"
        path.write_text(f"model = dict(name={name!r})\nrandomness = dict(seed=0)\n")
        configs.append(str(path))
    work = tmp_path / "ablation"
    args = [*configs, "--seeds", "0", "1", "--work-dir", str(work)]

    first = ablate.main(args + ["--max-runs", "1"])
    assert [c[0] for c in tools.calls] == ["train", "test"] and tools.calls[0][1][-1] == "randomness.seed=0"
    assert len(first["pending"]) == 5 and "Not run yet" in (work / "ablation.md").read_text()

    tools.calls.clear()
    summary = ablate.main(args)
    trained = [(os.path.basename(a[0]), a[-1]) for kind, a in tools.calls if kind == "train"]
    assert trained == [("base.py", "randomness.seed=1"), ("gate.py", "randomness.seed=0"),
                       ("gate.py", "randomness.seed=1"), ("broken.py", "randomness.seed=0"),
                       ("broken.py", "randomness.seed=1")]  # base seed 0 was found and skipped
    assert [(f["config"], f["seed"], f["stage"]) for f in summary["failures"]] == [("broken", 0, "train"),
                                                                                   ("broken", 1, "train")]
    recorded = json.load(open(work / "gate" / "seed1" / "result.json"))["commands"]
    assert recorded[0] == (f"python tools/train.py {configs[1]} --work-dir {work}/gate/seed1/train "
                           "--cfg-options randomness.seed=1")
    assert recorded[1].startswith(f"python tools/test.py {configs[1]} --checkpoint {work}/gate/seed1/train/iter_2.pth")
    rows = {r["config"]: r["metrics"] for r in summary["rows"]}
    assert summary["metrics"] == ["refcoco_synth/val/cIoU"]  # NaN (lenient) and counts left out
    assert rows["base"]["refcoco_synth/val/cIoU"]["values"] == {"0": 50.0, "1": 51.0}
    diff = rows["gate"]["refcoco_synth/val/cIoU"]["diff"]
    assert (diff["mean"], diff["std"]) == (5.0, 0.0) and rows["broken"] == {}

    tools.calls.clear()
    ablate.main(args)  # failed runs are reported, not retried ...
    assert tools.calls == []
    ablate.main(args + ["--retry-failed"])  # ... unless asked
    assert [os.path.basename(a[0]) for _, a in tools.calls] == ["broken.py", "broken.py"]

    (tmp_path / "base.py").write_text("model = dict(name='changed')\nrandomness = dict(seed=0)\n")
    with pytest.raises(ValueError, match="another config"):  # a finished run of another config: no reuse
        ablate.main(args)
    assert ablation.RESULT_FILE == "result.json"


@pytest.mark.slow
def test_tiny_ablation_end_to_end(tmp_path, monkeypatch):
    """Two tiny configs x two seeds, really trained (2 iterations) and evaluated through the tools."""
    from projects.salma.datasets.synthetic import make_synthetic

    data = tmp_path / "data"
    make_synthetic(str(data), seed=0, num_images=6, num_val_images=2, num_videos=2, num_val_videos=1, num_frames=3,
                   height=128, width=128, num_llava=0, num_gcg=0, num_osprey=0, num_video_qa=0, num_sav_videos=0,
                   num_ref_sav_videos=0, num_flickr=0, num_psg=0, distractor=True)
    monkeypatch.setenv("SALMA_SYNTH_ROOT", str(data))
    work = tmp_path / "ablation"
    summary = ablate.main([
        "configs/tiny/ablations/0_baseline.py", "configs/tiny/ablations/2_mba_gate.py", "--seeds", "0", "1",
        "--work-dir", str(work), "--dataset", "refcoco_synth",
        "--cfg-options", "train_cfg.max_iters=2", "default_hooks.checkpoint.interval=2",
        "train_dataloader.batch_size=2", "test_options.max_new_tokens=4"])
    assert summary["pending"] == [] and summary["failures"] == []
    rows = {r["config"]: r for r in summary["rows"]}
    name = "refcoco_synth/val/cIoU"
    for label in ("0_baseline", "2_mba_gate"):
        results = [json.load(open(work / label / f"seed{s}" / "result.json")) for s in (0, 1)]
        assert all(r["status"] == "done" and r["checkpoint"].endswith("iter_2.pth") for r in results)
        assert all(os.path.isfile(r["checkpoint"]) for r in results)
        evaluated = [json.load(open(work / label / f"seed{s}" / "eval" / "summary.json")) for s in (0, 1)]
        assert all(e["refcoco_synth/val"]["checkpoint"] == r["checkpoint"] for e, r in zip(evaluated, results))
        values = [e["refcoco_synth/val"]["metrics"]["cIoU"] for e in evaluated]
        assert rows[label]["metrics"][name]["values"] == {"0": values[0], "1": values[1]}
        # each seed reached its training (mmengine dumps the merged config into the work dir)
        for s in (0, 1):
            dumped = next((work / label / f"seed{s}" / "train").rglob("*_baseline.py" if "base" in label
                                                                         else "*_gate.py"))
            assert f"seed={s}" in dumped.read_text()
    assert "diff" in rows["2_mba_gate"]["metrics"][name]
    commands = json.load(open(work / "2_mba_gate" / "seed1" / "result.json"))["commands"]
    assert commands[0].startswith("python tools/train.py configs/tiny/ablations/2_mba_gate.py --work-dir ")
    assert commands[0].endswith("randomness.seed=1") and commands[1].startswith("python tools/test.py ")
    for name in ("ablation.md", "ablation.json", "ablation.png"):
        assert (work / name).stat().st_size > 0
