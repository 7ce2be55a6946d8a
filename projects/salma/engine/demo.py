"""The CPU demo: synthetic data -> train the tiny config -> held-out scores beside trivial baselines.

The model's numbers come from the code ``tools/test.py`` runs (``evaluate_run`` over the config's
``test_datasets``: RES cIoU / gIoU on synthetic RefCOCO val, J / F / J&F on synthetic MeViS
valid_u), so the demo reports what an evaluation of its checkpoint would. Baselines are scored
on the same GT: an empty mask, and the union of all objects in the image / frame (what a model
that segments "the foreground" but ignores the expression gets). Numbers are percentages.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from collections import defaultdict

import numpy as np
from mmengine.config import Config

from ..datasets.masks import decode_segmentation
from ..evaluation.metrics import RESAccumulator, aggregate_refvos
from ..evaluation.ref_vos import score_expression
from ..evaluation.runner import TrackerCache, complete_dataset_cfg, evaluate_run, resolve_runs
from ..evaluation.writers import write_summary
from ..registry import DATASETS
from .runner import apply_cli, build_runner

EMPTY, UNION = "empty mask", "union of all objects"


def set_schedule(cfg: Config, max_iters: int) -> None:
    """Stretch the tiny config's iteration schedule (warm-up, cosine, checkpoint) to ``max_iters``."""
    warmup = max(1, int(cfg.warmup_ratio * max_iters))
    cfg.train_cfg.max_iters = max_iters
    cfg.param_scheduler[0].end = warmup
    cfg.param_scheduler[1].begin, cfg.param_scheduler[1].end = warmup, max_iters
    cfg.default_hooks.checkpoint.interval = max_iters


def image_unions(ann_file: str) -> dict[int, np.ndarray]:
    """image_id -> union of every annotated shape in the image (uint8 H×W)."""
    with open(ann_file, encoding="utf-8") as f:
        instances = json.load(f)
    sizes = {im["id"]: (im["height"], im["width"]) for im in instances["images"]}
    unions: dict[int, np.ndarray] = {}
    by_image = defaultdict(list)
    for ann in instances["annotations"]:
        by_image[ann["image_id"]].append(ann)
    for image_id, anns in by_image.items():
        h, w = sizes[image_id]
        union = np.zeros((h, w), dtype=np.uint8)
        for ann in anns:
            union |= decode_segmentation(ann["segmentation"], h, w, source=f"{ann_file}: ann {ann['id']}")
        unions[image_id] = union
    return unions


def res_baselines(dataset) -> dict[str, dict]:
    """Strict cIoU / gIoU (percent) of the empty and union-of-shapes predictions on a RES split."""
    unions = image_unions(dataset.ann_path)
    scores = {EMPTY: RESAccumulator(), UNION: RESAccumulator()}
    for index in range(len(dataset)):
        sample = dataset[index]
        union = unions[sample["meta"]["image_id"]]
        for gt in sample["masks"][:, 0].numpy():  # one (H, W) GT per sentence
            scores[EMPTY].add(np.zeros_like(gt), gt)
            scores[UNION].add(union, gt)
    return {name: {k: 100.0 * acc.compute()[k] for k in ("cIoU", "gIoU")} for name, acc in scores.items()}


def video_baselines(dataset) -> dict[str, dict]:
    """J / F / J&F (percent) of the empty and union-of-objects predictions on a referring-VOS split.

    Every object of a synthetic video has an expression, so the union of the expressions' GT is
    the union of all objects, per frame.
    """
    records = {EMPTY: [], UNION: []}
    for index in range(len(dataset)):
        gt = dataset.load_gt_masks(index).astype(bool)  # (n_exp, N, H, W)
        union = gt.any(axis=0)  # (N, H, W)
        for expression_gt in gt:
            records[EMPTY].append(score_expression(expression_gt, None, None, revos=False))
            records[UNION].append(score_expression(expression_gt, union, None, revos=False))
    return {name: aggregate_refvos(recs) for name, recs in records.items()}


def evaluate_with_baselines(cfg: Config, model, work_dir: str, checkpoint: str, show: int = 2) -> dict[str, dict]:
    """Every ``test_datasets`` run of ``cfg``: {run name: {"model": metrics, baseline: metrics}}.

    Results, ``summary.json`` / ``.md`` and ``show`` overlay PNGs per run are written under
    ``work_dir`` as ``tools/test.py`` writes them (emptied first: its results must come from this
    model, never from an earlier run's files).
    """
    shutil.rmtree(work_dir, ignore_errors=True)
    trackers = TrackerCache(model, cfg.model.to_dict())
    out, entries = {}, {}
    for run in resolve_runs(cfg):
        entry = entries[run.name] = evaluate_run(run, cfg, model, trackers, checkpoint=checkpoint,
                                                 work_dir=work_dir, max_items=None, show=show)
        dataset = DATASETS.build(complete_dataset_cfg(run, cfg.model.to_dict(), model))
        baselines = res_baselines(dataset) if run.task == "res" else video_baselines(dataset)
        out[run.name] = {"task": run.task, "model": entry["metrics"], **baselines}
    write_summary(work_dir, entries)
    return out


def run_demo(config: str, work_dir: str, data_root: str, max_iters: int | None = None, seed: int = 0) -> dict:
    """Train ``config`` on the synthetic data in ``data_root``, then evaluate it and the baselines."""
    os.environ["SALMA_SYNTH_ROOT"] = data_root
    cfg = Config.fromfile(config)
    if max_iters is not None:
        set_schedule(cfg, max_iters)
    cfg.randomness = dict(seed=seed)
    runner = build_runner(apply_cli(cfg, work_dir=work_dir))
    start = time.perf_counter()
    runner.train()
    train_minutes = (time.perf_counter() - start) / 60
    model = runner.model.module if hasattr(runner.model, "module") else runner.model
    checkpoint = os.path.join(work_dir, f"iter_{cfg.train_cfg.max_iters}.pth")
    scores = evaluate_with_baselines(cfg, model, os.path.join(work_dir, "eval"), checkpoint)
    return {"train_minutes": train_minutes, "iterations": cfg.train_cfg.max_iters, "scores": scores}


def format_report(report: dict) -> str:
    """The demo's table: one block per evaluated split, the model above its baselines."""
    lines = [f"trained {report['iterations']} iterations in {report['train_minutes']:.1f} min"]
    for name, scores in report["scores"].items():
        keys = ("cIoU", "gIoU") if scores["task"] == "res" else ("J", "F", "J&F")
        lines.append("")
        lines.append(f"{'held-out ' + name:34s}" + "".join(f"{k:>8s}" for k in keys))
        for who in ("model", EMPTY, UNION):
            lines.append(f"{who:34s}" + "".join(f"{scores[who][k]:8.1f}" for k in keys))
    return "\n".join(lines)
