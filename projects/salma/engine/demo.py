"""The CPU demo: synthetic data -> train the tiny config -> held-out RES cIoU beside trivial baselines.

Baselines use the same GT: an empty mask for every sentence, and the union of all shapes in the
image (what a model that segments "foreground" but ignores the expression would get).
"""
from __future__ import annotations

import json
import os
import time
from collections import defaultdict

import numpy as np
import torch
from mmengine.config import Config
from tqdm import tqdm

from ..datasets.collate import salma_eval_collate
from ..datasets.masks import decode_segmentation
from ..evaluation.metrics import RESAccumulator
from ..registry import DATASETS
from .runner import apply_cli, build_runner


def image_unions(ann_file: str) -> dict[int, np.ndarray]:
    """image_id -> union of every annotated shape in the image (uint8 H×W)."""
    with open(ann_file) as f:
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


@torch.no_grad()
def evaluate_res_with_baselines(model, dataset, *, max_new_tokens: int = 16) -> dict[str, dict]:
    """Strict cIoU / gIoU of the model and of the empty / union-of-shapes baselines."""
    unions = image_unions(dataset.ann_path)
    scores = {"model": RESAccumulator(), "empty mask": RESAccumulator(), "union of all shapes": RESAccumulator()}
    model.eval()
    for index in tqdm(range(len(dataset)), desc="evaluate", unit="image"):
        batch = salma_eval_collate([dataset[index]])["data"]
        for result in model.predict(batch, max_new_tokens=max_new_tokens):
            gt = result["meta"]["gt_masks"][0, 0].numpy()  # (H, W)
            pred = result["masks"][0, 0].numpy() if result["masks"].shape[0] else None  # first [SEG]
            scores["model"].add(pred, gt)
            scores["empty mask"].add(np.zeros_like(gt), gt)
            scores["union of all shapes"].add(unions[result["meta"]["image_id"]], gt)
    return {name: acc.compute() for name, acc in scores.items()}


def run_demo(config: str, work_dir: str, data_root: str, max_iters: int, seed: int = 0) -> dict:
    """Train ``config`` for ``max_iters`` on the synthetic data in ``data_root``, then evaluate."""
    os.environ["SALMA_SYNTH_ROOT"] = data_root
    cfg = Config.fromfile(config)
    cfg.train_cfg.max_iters = max_iters
    warmup = max(1, int(0.05 * max_iters))
    cfg.param_scheduler[0].end = warmup
    cfg.param_scheduler[1].begin, cfg.param_scheduler[1].end = warmup, max_iters
    cfg.default_hooks.checkpoint.interval = max_iters
    cfg.randomness = dict(seed=seed)
    runner = build_runner(apply_cli(cfg, work_dir=work_dir))
    start = time.perf_counter()
    runner.train()
    train_minutes = (time.perf_counter() - start) / 60
    model = runner.model.module if hasattr(runner.model, "module") else runner.model
    scores = evaluate_res_with_baselines(model, DATASETS.build(cfg.val_dataset))
    return {"train_minutes": train_minutes, "iterations": max_iters, "scores": scores}
