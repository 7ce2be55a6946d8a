"""Evaluation driver behind ``tools/test.py`` / ``tools/dist_test.sh``.

Config keys read (all other keys are ignored)::

    model = dict(...)                          # built with MODELS, as for training
    test_datasets = dict(                      # name -> entry
        refcoco=dict(
            task='res',                        # 'res' | 'ref_vos'
            dataset=dict(type='RefCOCODataset', data_root=..., image_folder=..., split_by='unc'),
            splits=dict(val=dict(split='val'), testA=dict(split='testA')),   # optional overrides
            # optional per-entry overrides of test_options keys, e.g. lenient=False
        ),
        mevis=dict(task='ref_vos', dataset=dict(type='RefVOSDataset', ...),
                   splits=dict(valid_u=dict(data_root=..., mask_file='mask_dict.json'),
                               valid=dict(data_root=..., mask_file=None))),   # no GT -> zip
        revos=dict(task='ref_vos', protocol='revos', dataset=dict(..., foreground_file=...)),
    )
    test_options = dict(...)                   # defaults: build.EvalOptions

A run is one (entry, split); its results live in ``<work_dir>/<name>[/<split>]/``. Readers are
built in ``mode='eval'`` with the model's image sizes and tokenizer unless the entry sets them
(a mismatch is an error); video readers get ``num_frames=num_llm_frames``,
``frame_sampling=llm_frame_sampling`` and ``stream_frames=True`` (every frame and its GT read when
the tracker reaches it: memory does not grow with the video's length).

Distributed (``launcher='pytorch'``, torchrun): rank r predicts items r, r+W, r+2W, ... and
appends them to its own results file; records are gathered with ``all_gather_object`` and
summarised in item order, so the numbers equal a one-process run. A restart skips every item
already in the run's results files (whatever world size wrote them) whose saved fingerprint is the
current one: the model's (BLAKE2b of the checkpoint's weights file and the model config) and the
item's inputs (``dataset.item_fingerprint``: annotation records, image / frame file sizes and
mtimes). Items saved for another checkpoint at the same path or for edited annotations are
predicted again, and counted (``recomputed`` in the log and summary). The work dir's files are
parsed before the model is built, so a corrupt one is an error naming it before any work.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import torch
from mmengine.config import Config
from mmengine.dist import all_gather_object, barrier, broadcast_object_list, get_dist_info
from mmengine.logging import MMLogger, print_log
from tqdm import tqdm

from ..build import (EvalOptions, build_model, build_tracker, check_vision_family, memory_weights_of,
                     model_input_sizes, plain)
from ..checkpoint import checkpoint_fingerprint
from ..datasets.base import SalmaDataset
from ..datasets.errors import DataError
from ..engine.dist import join_process_group
from ..fingerprint import digest
from ..models.video import SAM2MemoryTracker, VideoPredictor
from ..registry import DATASETS
from .attention_stats import AttentionStats
from .metrics import EXPRESSION_TYPES, type_id_problem
from .ref_vos import RefVOSEvaluator
from .res import RESEvaluator
from .visualize import draw_res_record, draw_video_record, strip_frames
from .writers import (ResultStore, check_run_meta, check_work_dir, summary_markdown, write_submission_zip,
                      write_summary)

TASKS = ("res", "ref_vos")
_ENTRY_KEYS = {"task", "dataset", "splits"}


@dataclass
class EvalRun:
    """One dataset split to evaluate."""

    name: str  # '<entry>' or '<entry>/<split>': the results folder and summary key
    task: str
    dataset: dict  # reader config (completed by ``complete_dataset_cfg``)
    options: EvalOptions


def resolve_runs(cfg: Config, names: Sequence[str] | None = None, split: str | None = None) -> list[EvalRun]:
    """The runs the config's ``test_datasets`` and the command line select.

    ``names``: entries to run (default: all). ``split``: for entries with ``splits``, the split
    to run (default: all of them); for entries without, it sets the reader's ``split`` key.
    """
    entries = cfg.get("test_datasets")
    if not entries:
        raise ValueError("the config has no test_datasets (name -> dict(task=..., dataset=...))")
    unknown = sorted(set(names or ()) - set(entries))
    if unknown:
        raise ValueError(f"--dataset {unknown}: not in test_datasets {sorted(entries)}")
    base_options = EvalOptions.from_config(cfg)
    runs = []
    for name in names or list(entries):
        entry = plain(entries[name])
        if entry.get("task") not in TASKS:
            raise ValueError(f"test_datasets.{name}: task must be one of {TASKS}, got {entry.get('task')!r}")
        if "dataset" not in entry:
            raise ValueError(f"test_datasets.{name}: no 'dataset' (reader config)")
        extra = sorted(set(entry) - _ENTRY_KEYS - set(EvalOptions.names()))
        if extra:
            raise ValueError(f"test_datasets.{name}: unknown keys {extra}")
        options = base_options.updated({k: v for k, v in entry.items() if k in EvalOptions.names()})
        splits = entry.get("splits")
        if splits:
            if split is not None and split not in splits:
                raise ValueError(f"--split {split}: test_datasets.{name} has splits {sorted(splits)}")
            for s in [split] if split is not None else list(splits):
                runs.append(EvalRun(f"{name}/{s}", entry["task"], {**entry["dataset"], **splits[s]}, options))
        elif split is not None:
            if entry["task"] != "res":
                raise ValueError(f"--split {split}: test_datasets.{name} has no 'splits' (video readers take "
                                 f"per-split files: define splits=dict({split}=dict(expression_file=..., ...)))")
            runs.append(EvalRun(f"{name}/{split}", entry["task"], {**entry["dataset"], "split": split}, options))
        else:
            runs.append(EvalRun(name, entry["task"], dict(entry["dataset"]), options))
    return runs


def complete_dataset_cfg(run: EvalRun, model_cfg: dict, model) -> dict:
    """The reader config of a run: eval mode, the model's tokenizer and input sizes, video frames."""
    cfg = dict(run.dataset)
    logger = MMLogger.get_current_instance()
    if cfg.setdefault("mode", "eval") != "eval":
        raise ValueError(f"{run.name}: evaluation readers run in mode='eval', the config says {cfg['mode']!r}")
    if cfg.setdefault("on_error", "raise") != "raise":
        raise ValueError(f"{run.name}: evaluation must see every item (on_error='raise'), the config says "
                         f"{cfg['on_error']!r}")
    cfg.setdefault("tokenizer", model_cfg["mllm"]["tokenizer"])
    check_vision_family(model, cfg, run.name)
    for key, value in model_input_sizes(model).items():
        if cfg.setdefault(key, value) != value:
            raise ValueError(f"{run.name}: dataset {key}={cfg[key]} but the model expects {value}")
    if run.options.sam_pixel_stats is not None:
        cfg["sam_pixel_stats"] = run.options.sam_pixel_stats
    if run.task == "ref_vos":
        forced = {"num_frames": run.options.num_llm_frames, "frame_sampling": run.options.llm_frame_sampling,
                  "stream_frames": True, "sam_all_frames": False}
        for key, value in forced.items():
            if key in cfg and cfg[key] != value:
                logger.info(f"{run.name}: reader {key}={cfg[key]!r} replaced by the evaluation's {value!r}")
            cfg[key] = value
    return cfg


class TrackerCache:
    """One SAM-2 memory tracker per process, built when a video run first needs it."""

    def __init__(self, model, model_cfg: dict) -> None:
        self.model, self.model_cfg = model, model_cfg
        self._built: dict[tuple, SAM2MemoryTracker] = {}

    def get(self, options: EvalOptions) -> SAM2MemoryTracker:
        weights = memory_weights_of(options, self.model_cfg)
        key = (weights, options.tracker_decoder, options.seed, options.tracker_offload)
        if key not in self._built:
            self._built[key] = build_tracker(self.model, options, weights)
        return self._built[key]


def make_evaluator(run: EvalRun, model, trackers: TrackerCache, attention: AttentionStats | None = None):
    """The run's evaluator; ``attention``: RES only, record where CMA's output lands."""
    o = run.options
    if run.task == "res":
        return RESEvaluator(max_new_tokens=o.max_new_tokens, lenient=o.lenient, share_item=o.share_item_inputs,
                            attention=attention)
    tracker = trackers.get(o) if o.propagation == "memory" else None
    predictor = VideoPredictor(model, propagation=o.propagation, tracker=tracker, max_new_tokens=o.max_new_tokens,
                               llm_frame_masks=o.llm_frame_masks)
    return RefVOSEvaluator(predictor, protocol=o.protocol)


def init_distributed(launcher: str) -> torch.device:
    """Join the process group (torchrun env vars; NCCL with CUDA, else gloo) and return this
    rank's device."""
    if launcher not in ("none", "pytorch"):
        raise ValueError(f"launcher must be 'none' or 'pytorch', got {launcher!r}")
    join_process_group(launcher)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def model_fingerprint(cfg: Config, checkpoint: str) -> str:
    """What the predictions depend on besides the data: the checkpoint's content and the model
    config (weights not in the checkpoint come from it). Computed on rank 0, shared with all."""
    value = [digest({"checkpoint": checkpoint_fingerprint(checkpoint), "model": plain(cfg.model)})
             if get_dist_info()[0] == 0 else None]
    broadcast_object_list(value)
    return value[0]


def check_expression_types(dataset: SalmaDataset, protocol: str) -> None:
    """ReVOS and Ref-SAV report by expression type: an expression whose ``type_id`` is missing or
    unknown is an error naming it before any prediction (the summary would meet it after all of them)."""
    if protocol not in EXPRESSION_TYPES:
        return
    for item in dataset.items:
        for exp in item["exps"]:
            problem = type_id_problem(exp["type_id"], protocol)
            if problem:
                raise DataError(f"{dataset.expression_file}: video {item['vid']} exp {exp['exp_id']}: {problem}",
                                reason="bad_record")


def _predict_item(evaluator, model, dataset: SalmaDataset, index: int, key: str, fingerprint: dict) -> dict:
    sample = dataset[index]
    if sample["meta"]["index"] != index:
        raise RuntimeError(f"{dataset.name}: asked for item {index}, the reader returned {sample['meta']['index']}")
    if evaluator.task == "ref_vos":
        foreground = None
        if evaluator.protocol == "revos" and dataset.mask_dict is not None:
            foreground = dataset.foreground_frames(index)  # decoded frame by frame while scoring
        record = evaluator.predict_item(model, sample, foreground=foreground)
    else:
        record = evaluator.predict_item(model, sample)
    return {"key": key, "index": index, "fingerprint": fingerprint, **record}


def _show(run: EvalRun, dataset: SalmaDataset, records: list[dict], out_dir: str, count: int) -> None:
    for rec in records[:count]:
        if run.task == "res":
            sample = dataset[rec["index"]]
            gt = {sid: sample["masks"][k, 0].numpy() for k, sid in enumerate(sample["meta"]["sent_ids"])}
            draw_res_record(rec, out_dir, gt)
        else:
            picks = strip_frames(len(rec["frame_paths"]))  # the drawn frames: their GT only
            gt = dataset.load_gt_masks(rec["index"], picks)  # (n_exp, P, H, W) or None
            draw_video_record(rec, out_dir, None if gt is None else {t: gt[:, i] for i, t in enumerate(picks)})


def evaluate_run(run: EvalRun, cfg: Config, model, trackers: TrackerCache, *, checkpoint: str, work_dir: str,
                 max_items: int | None, show: int, model_fp: str | None = None, attention_stats: bool = False) -> dict:
    """Predict (or reuse) every selected item of one run, gather, summarise; returns the summary entry.

    ``model_fp``: :func:`model_fingerprint` (computed here when not given). ``attention_stats``: RES
    runs also record where CMA's output lands (target / distractor / other objects, see
    ``projects.salma.analysis.attention``); items saved without them are predicted again."""
    rank, world = get_dist_info()
    logger = MMLogger.get_current_instance()
    dataset_cfg = complete_dataset_cfg(run, plain(cfg.model), model)
    dataset: SalmaDataset = DATASETS.build(dataset_cfg)
    if run.task == "ref_vos":
        check_expression_types(dataset, run.options.protocol)
    n_items = len(dataset) if max_items is None else min(max_items, len(dataset))
    run_dir = os.path.join(work_dir, run.name)
    if rank == 0:
        check_run_meta(run_dir, {"task": run.task, "dataset": dataset_cfg, "options": run.options.to_dict(),
                                 "checkpoint": checkpoint})
    barrier()
    attention = None
    if attention_stats and run.task == "res":
        attention = AttentionStats.for_dataset(dataset)
    elif attention_stats:
        logger.warning(f"{run.name}: --attention-stats covers RES runs only; not computed for this {run.task} run")
    evaluator = make_evaluator(run, model, trackers, attention)
    model_fp = model_fp or model_fingerprint(cfg, checkpoint)
    store = ResultStore(run_dir, rank)
    done = store.load()
    barrier()  # every rank has read the finished items before any rank appends new ones
    mine, counts = [], {"computed": 0, "reused": 0, "recomputed": 0}
    for index in tqdm(range(rank, n_items, world), desc=run.name, disable=rank != 0):
        key = evaluator.item_key(dataset, index)
        fingerprint = {"model": model_fp, "inputs": dataset.item_fingerprint(index)}
        if attention is not None:
            fingerprint["attention_stats"] = True  # records saved without them do not count as done
        saved = done.get(key, [])
        record = next((r for r in saved if r.get("fingerprint") == fingerprint), None)
        if record is not None:
            counts["reused"] += 1
            if record["index"] != index:
                raise RuntimeError(f"{run_dir}: {key} was item {record['index']} when saved, now item {index}: "
                                   f"the data changed; use another --work-dir")
        else:  # not saved, or saved for another model / other inputs: (re)compute
            record = _predict_item(evaluator, model, dataset, index, key, fingerprint)
            store.append(record)
            counts["computed"] += 1
            counts["recomputed"] += bool(saved)
        mine.append(record)
    gathered = all_gather_object({"records": mine, **counts}) if world > 1 else [{"records": mine, **counts}]
    records = sorted((r for g in gathered for r in g["records"]), key=lambda r: r["index"])
    if [r["index"] for r in records] != list(range(n_items)):
        raise RuntimeError(f"{run.name}: gathered items {[r['index'] for r in records][:20]} are not 0..{n_items - 1}")
    counts = {k: sum(g[k] for g in gathered) for k in counts}
    logger.info(f"{run.name}: {counts['computed']} items predicted, {counts['reused']} found in {run_dir} (skipped)")
    if counts["recomputed"]:
        logger.warning(f"{run.name}: {counts['recomputed']} of the predicted items had saved results in {run_dir} "
                       f"from another checkpoint or model config, or other inputs (annotations, image files): "
                       f"recomputed")

    entry = {"task": run.task, "protocol": run.options.protocol if run.task == "ref_vos" else None,
             "metrics": evaluator.summarize(records), "n_items": n_items, "n_dataset_items": len(dataset),
             **counts, "checkpoint": checkpoint}
    if rank == 0:
        has_gt = run.task == "res" or (bool(records) and "J" in records[0]["expressions"][0])
        want_zip = run.options.submission if run.options.submission is not None else not has_gt
        if run.task == "ref_vos" and want_zip:
            zip_path = os.path.join(run_dir, "submission.zip")
            counts = write_submission_zip(zip_path, records)
            entry["submission"] = zip_path
            logger.info(f"{run.name}: wrote {zip_path} ({counts['pngs']} PNGs)")
        if show:
            _show(run, dataset, records, os.path.join(run_dir, "vis"), show)
    return entry


def run_evaluation(
    cfg: Config,
    *,
    checkpoint: str,
    work_dir: str,
    datasets: Sequence[str] | None = None,
    split: str | None = None,
    max_items: int | None = None,
    launcher: str = "none",
    show: int = 0,
    allow_missing_weights: bool = False,
    attention_stats: bool = False,
) -> dict[str, dict]:
    """Evaluate the selected runs; rank 0 writes ``summary.json`` / ``summary.md`` in ``work_dir``.

    ``allow_missing_weights``: evaluate even if the checkpoint lacks trainable tensors (they keep
    their initial values); otherwise that is an error naming them. ``attention_stats``: see
    :func:`evaluate_run`.

    Returns ``{run name: entry}`` with ``metrics``, ``computed`` / ``reused`` item counts
    (a restart reuses finished items), ``recomputed`` (items whose saved results were stale)
    and, for submissions, the zip path.
    """
    device = init_distributed(launcher)
    rank, _ = get_dist_info()
    os.makedirs(work_dir, exist_ok=True)
    runs = resolve_runs(cfg, datasets, split)
    check_work_dir(work_dir, [run.name for run in runs])  # before any work
    model = build_model(cfg, checkpoint, device, int(EvalOptions.from_config(cfg).seed),
                        allow_missing_weights=allow_missing_weights)
    model_fp = model_fingerprint(cfg, checkpoint)
    trackers = TrackerCache(model, plain(cfg.model))
    entries = {}
    for run in runs:
        entries[run.name] = evaluate_run(run, cfg, model, trackers, checkpoint=checkpoint, work_dir=work_dir,
                                         max_items=max_items, show=show, model_fp=model_fp,
                                         attention_stats=attention_stats)
    if rank == 0:
        summary = write_summary(work_dir, entries)
        print_log("\n" + summary_markdown(summary), logger="current")
    barrier()
    return entries
