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

from .datasets.masks import decode_segmentation
from .datasets.synthetic import expression_kind, make_synthetic
from .engine.runner import apply_cli, build_runner, load_config
from .evaluation.metrics import RESAccumulator, aggregate_refvos
from .evaluation.ref_vos import score_expression
from .evaluation.res import summarize_res
from .evaluation.runner import TrackerCache, complete_dataset_cfg, evaluate_run, resolve_runs
from .evaluation.writers import ResultStore, write_summary
from .export import export_model
from .registry import DATASETS

EMPTY, UNION = "empty mask", "union of all objects"
# Sentence groups scored apart on RES splits: the generator's relations, and both of them together.
KINDS = ("attribute", "spatial", "size")
RELATIONAL = "relational"

# The demo's synthetic data: ``make_synthetic`` arguments besides the seed. Square 128 px frames
# fill the tiny model's 128 px SAM-2 input; only the two sets the demo trains on are written.
DEMO_DATA = dict(num_images=3000, num_val_images=100, num_videos=100, num_val_videos=8, height=128, width=128,
                 relational_fraction=0.5, num_llava=0, num_gcg=0, num_osprey=0, num_video_qa=0, num_sav_videos=0,
                 num_ref_sav_videos=0, num_flickr=0, num_psg=0)
DATA_RECORD = "demo_data.json"


# tools/demo_cpu.py --backbone: the tiny twin of each MLLM family (its model.mllm, tokenizer and
# the readers' vision inputs); SAM-2, CMA/MBA, the losses, data and schedule stay the demo config's.
BACKBONES = {
    "internvl2.5": None,  # the demo config's own (configs/tiny/salma_tiny.py)
    "internvl3.5": "configs/tiny/salma_tiny_internvl35.py",
    "qwen2.5-vl": "configs/tiny/salma_tiny_qwen_vl.py",
    "qwen3-vl": "configs/tiny/salma_tiny_qwen3_vl.py",
}


def use_backbone(cfg: Config, name: str) -> Config:
    """``cfg`` with the MLLM of the tiny config ``BACKBONES[name]``: its ``model.mllm`` and
    ``tokenizer``, and its ``vision`` (None: InternVL's tiles) on every reader of the training mix,
    the validation set and ``test_datasets``."""
    if name not in BACKBONES:
        raise ValueError(f"backbone must be one of {sorted(BACKBONES)}, got {name!r}")
    if BACKBONES[name] is None:
        return cfg
    family = Config.fromfile(BACKBONES[name])
    vision = family.get("vision")
    cfg.model.mllm = family.model.mllm
    cfg.tokenizer = family.tokenizer
    readers = [*cfg.train_dataloader.dataset.datasets, *[run.dataset for run in cfg.test_datasets.values()]]
    if cfg.get("val_dataset") is not None:
        readers.append(cfg.val_dataset)
    for reader in readers:
        reader.tokenizer = family.tokenizer
        reader.vision = vision
    return cfg


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


def sentence_groups(sentence: str) -> list[str]:
    """The groups a sentence is scored in: its kind (``expression_kind``), and 'relational' for
    spatial and size relations."""
    kind = expression_kind(sentence)
    return [kind] if kind == "attribute" else [kind, RELATIONAL]


def res_baselines(dataset) -> dict[str, dict]:
    """Strict cIoU / gIoU (percent) of the empty and union-of-shapes predictions on a RES split,
    over all sentences and per sentence group (``by_kind``)."""
    unions = image_unions(dataset.ann_path)
    scores = {EMPTY: defaultdict(RESAccumulator), UNION: defaultdict(RESAccumulator)}
    for index in range(len(dataset)):
        sample = dataset[index]
        union = unions[sample["meta"]["image_id"]]
        for gt, sentence in zip(sample["masks"][:, 0].numpy(), sample["meta"]["sentences"]):  # one GT per sentence
            for group in ["all", *sentence_groups(sentence)]:
                scores[EMPTY][group].add(np.zeros_like(gt), gt)
                scores[UNION][group].add(union, gt)
    out = {}
    for name, groups in scores.items():
        percent = {group: {"n_sentences": int(acc.count), **{k: 100.0 * v for k, v in acc.compute().items()}}
                   for group, acc in groups.items()}
        out[name] = {**{k: percent["all"][k] for k in ("cIoU", "gIoU")},
                     "by_kind": {group: percent[group] for group in groups if group != "all"}}
    return out


def res_scores_by_kind(run_dir: str) -> dict[str, dict]:
    """The model's strict cIoU / gIoU per sentence group, from the run's saved sentence records."""
    groups = defaultdict(list)
    for versions in ResultStore(run_dir).load().values():
        for record in versions:
            for sentence in record["sentences"]:
                for group in sentence_groups(sentence["sentence"]):
                    groups[group].append(sentence)
    return {group: summarize_res(records, lenient=False) for group, records in groups.items()}


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
    model.eval()  # as tools/test.py's model: no LoRA dropout (the runner leaves a trained model in train mode)
    trackers = TrackerCache(model, cfg.model.to_dict())
    out, entries = {}, {}
    for run in resolve_runs(cfg):
        entry = entries[run.name] = evaluate_run(run, cfg, model, trackers, checkpoint=checkpoint,
                                                 work_dir=work_dir, max_items=None, show=show)
        dataset = DATASETS.build(complete_dataset_cfg(run, cfg.model.to_dict(), model))
        if run.task == "res":
            model_scores = {**entry["metrics"], "by_kind": res_scores_by_kind(os.path.join(work_dir, run.name))}
            out[run.name] = {"task": run.task, "model": model_scores, **res_baselines(dataset)}
        else:
            out[run.name] = {"task": run.task, "model": entry["metrics"], **video_baselines(dataset)}
    write_summary(work_dir, entries)
    return out


def prepare_demo_data(root: str, seed: int, **overrides) -> str:
    """Write the demo's synthetic data (``DEMO_DATA`` with ``overrides``) for ``seed`` under ``root``,
    unless ``root`` already holds exactly that (its ``demo_data.json`` records the arguments, written
    last): data written with other arguments is rewritten, never silently reused. Returns ``root``."""
    args = {**DEMO_DATA, **overrides, "seed": seed}
    record = os.path.join(root, DATA_RECORD)
    if os.path.isfile(record):
        with open(record, encoding="utf-8") as f:
            if json.load(f) == args:
                return root
        os.remove(record)  # the files below are being replaced
    make_synthetic(root, **args)
    with open(record, "w", encoding="utf-8") as f:
        json.dump(args, f, indent=1, sort_keys=True)
    return root


def run_demo(config: str, work_dir: str, data_root: str, max_iters: int | None = None, seed: int = 0,
             cfg_options: dict | None = None, export_dir: str | None = None, backbone: str = "internvl2.5") -> dict:
    """Train ``config`` on the synthetic data in ``data_root``, evaluate it and the baselines, and
    export the trained model to ``export_dir`` (a ``SALMAModel`` folder) when given. ``backbone``:
    the MLLM family's tiny twin (:data:`BACKBONES`, :func:`use_backbone`).

    Deterministic on one machine: ``torch.use_deterministic_algorithms`` through mmengine's
    ``randomness.deterministic``, and the model is evaluated in eval mode (no LoRA dropout).
    """
    os.environ["SALMA_SYNTH_ROOT"] = data_root
    cfg = use_backbone(load_config(config, cfg_options), backbone)
    if max_iters is not None:
        set_schedule(cfg, max_iters)
    cfg.randomness = dict(seed=seed, deterministic=True)
    runner = build_runner(apply_cli(cfg, work_dir=work_dir))
    start = time.perf_counter()
    runner.train()
    train_minutes = (time.perf_counter() - start) / 60
    model = runner.model.module if hasattr(runner.model, "module") else runner.model
    checkpoint = os.path.join(work_dir, f"iter_{cfg.train_cfg.max_iters}.pth")
    scores = evaluate_with_baselines(cfg, model, os.path.join(work_dir, "eval"), checkpoint)
    report = {"seed": seed, "backbone": backbone, "train_minutes": train_minutes, "iterations": cfg.train_cfg.max_iters,
              "checkpoint": checkpoint, "scores": scores}
    if export_dir is not None:
        export_model(cfg, checkpoint, export_dir)
        report["export"] = export_dir
    return report


def headline(report: dict) -> dict[str, float]:
    """The figures a demo run is judged on (percent; minutes of training)."""
    res = next(s for s in report["scores"].values() if s["task"] == "res")
    video = next(s for s in report["scores"].values() if s["task"] != "res")
    return {"cIoU": res["model"]["cIoU"], "gIoU": res["model"]["gIoU"],
            "rel. cIoU": res["model"]["by_kind"][RELATIONAL]["cIoU"], "J&F": video["model"]["J&F"],
            "union cIoU": res[UNION]["cIoU"], "union J&F": video[UNION]["J&F"], "minutes": report["train_minutes"]}


def summarize_seeds(reports: list[dict]) -> dict[str, dict[str, float]]:
    """Per headline figure over seeds: mean, sample standard deviation (0 for one seed), min, max."""
    figures = [headline(r) for r in reports]
    out = {}
    for key in figures[0]:
        values = np.array([f[key] for f in figures])
        out[key] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                    "min": float(values.min()), "max": float(values.max())}
    return out


def format_seed_table(reports: list[dict]) -> str:
    """One line per seed, then mean ± standard deviation and the range."""
    figures = [headline(r) for r in reports]
    keys = list(figures[0])
    lines = [f"{'seed':>10s}" + "".join(f"{k:>12s}" for k in keys)]
    for report, fig in zip(reports, figures):
        lines.append(f"{report['seed']:>10d}" + "".join(f"{fig[k]:12.1f}" for k in keys))
    if len(reports) > 1:
        summary = summarize_seeds(reports)
        lines.append(f"{'mean ± sd':>10s}" + "".join(f"{summary[k]['mean']:7.1f} ±{summary[k]['std']:4.1f}" for k in keys))
        lines.append(f"{'range':>10s}" + "".join(f"{summary[k]['min']:6.1f}-{summary[k]['max']:<5.1f}" for k in keys))
    return "\n".join(lines)


def format_report(report: dict) -> str:
    """The demo's table: one block per evaluated split, the model above its baselines; RES splits
    add the cIoU of the relational sentences (spatial and size relations) and their count."""
    lines = [f"seed {report['seed']}: trained {report['iterations']} iterations in {report['train_minutes']:.1f} min"]
    for name, scores in report["scores"].items():
        res = scores["task"] == "res"
        keys = ("cIoU", "gIoU") if res else ("J", "F", "J&F")
        lines.append("")
        header = f"{'held-out ' + name:34s}" + "".join(f"{k:>8s}" for k in keys)
        if res:
            n = scores["model"]["by_kind"].get(RELATIONAL, {}).get("n_sentences", 0)
            header += f"   relational cIoU ({n} sentences)"
        lines.append(header)
        for who in ("model", EMPTY, UNION):
            line = f"{who:34s}" + "".join(f"{scores[who][k]:8.1f}" for k in keys)
            if res and RELATIONAL in scores[who]["by_kind"]:
                line += f"{scores[who]['by_kind'][RELATIONAL]['cIoU']:11.1f}"
            lines.append(line)
    return "\n".join(lines)
