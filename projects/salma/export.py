"""Export a trained SALMA checkpoint as one self-contained folder (``tools/export.py``).

    export_model(Config.fromfile(CONFIG), CKPT, OUT_DIR)

1. The model is built from the mmengine config and the checkpoint loaded exactly as the
   evaluation does (``evaluation.runner.build_model`` + ``evaluation.checkpoint``): a trainable
   tensor missing from the checkpoint is an error (it would ship untrained), with no opt-out here.
2. LoRA is merged into the LLM's weights (peft's ``merge``: W += scaling * B @ A, computed in
   fp32 and stored in the base weight's dtype) and the plain layers are put back.
3. The video tracker is built as the evaluation builds it (``test_options.sam2_memory`` or the
   SAM-2 checkpoint), so its memory modules are exported too.
4. :class:`~projects.salma.models.salma_model.SALMAConfig` records the architecture and the
   readers' settings; ``SALMAModel.save_pretrained`` writes the folder.
"""
from __future__ import annotations

import inspect

import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from torch import nn

from .datasets.base import SalmaDataset
from .evaluation.checkpoint import load_trained_weights
from .evaluation.runner import DEFAULT_OPTIONS, _plain, build_model, sam2_weights_of
from .models.export_checks import READER_KEYS, VIDEO_KEYS
from .models.salma_model import SALMAConfig, SALMAModel
from .models.video import RANDOM_MEMORY, SAM2MemoryTracker


def merge_lora(module: nn.Module) -> list[str]:
    """Fold every peft LoRA layer under ``module`` into its base layer and put the plain base layer
    back in its place. Returns the merged layers' names."""
    from peft.tuners.lora import LoraLayer

    merged = []
    for name, layer in list(module.named_modules()):
        if not isinstance(layer, LoraLayer):
            continue
        layer.merge(safe_merge=True)  # safe_merge: a non-finite merged weight raises
        parent, _, child = name.rpartition(".")
        setattr(module.get_submodule(parent), child, layer.get_base_layer())
        merged.append(name)
    left = [n for n, _ in module.named_parameters() if "lora_" in n]
    if left:
        raise RuntimeError(f"LoRA parameters left after merging: {left[:10]}")
    return merged


def _dataset_cfgs(cfg: Config) -> dict[str, list[tuple[str, dict]]]:
    """Reader configs of the config, by use: 'eval' (test_datasets, val / test dataloaders) and
    'train' (the train dataloader, mixes unpacked), each as (where, dict)."""
    def unpack(where: str, dataset: dict) -> list[tuple[str, dict]]:
        if "datasets" in dataset:
            return [item for k, d in enumerate(dataset["datasets"]) for item in unpack(f"{where}.datasets[{k}]", d)]
        return [(where, dataset)]

    found: dict[str, list[tuple[str, dict]]] = {"eval": [], "train": []}
    for name, entry in _plain(cfg.get("test_datasets") or {}).items():
        splits = entry.get("splits") or {None: {}}
        for split, override in splits.items():
            where = f"test_datasets.{name}" + (f".splits.{split}" if split else "")
            found["eval"] += unpack(where, {**entry["dataset"], **override})
    for key in ("val_dataloader", "test_dataloader"):
        if cfg.get(key) and cfg[key].get("dataset"):
            found["eval"] += unpack(f"{key}.dataset", _plain(cfg[key]["dataset"]))
    if cfg.get("train_dataloader") and cfg.train_dataloader.get("dataset"):
        found["train"] += unpack("train_dataloader.dataset", _plain(cfg.train_dataloader.dataset))
    return found


def reader_settings(cfg: Config, model, *, sam_pixel_stats: str | None = None) -> dict:
    """The readers' image and template settings: those of the evaluation readers if the config has
    any, else of the training readers, else the reader defaults. Readers of the chosen group that
    disagree are an error; the sizes tied to the model default to it and must agree with it.
    Evaluation settings that differ from what the training readers used are logged as a warning
    (the export follows the evaluation, as ``tools/test.py`` does). ``sam_pixel_stats`` (the
    evaluation's ``test_options`` key), when given, is every reader's, as in ``tools/test.py``."""
    defaults = inspect.signature(SalmaDataset.__init__).parameters
    vision = model.mllm.model.config.vision_config
    size = vision.image_size[0] if isinstance(vision.image_size, (list, tuple)) else vision.image_size
    settings = {k: defaults[k].default for k in READER_KEYS}
    settings.update(image_size=int(size), image_seq_length=int(model.mllm.model.config.image_seq_length),
                    sam_image_size=int(model.grounding_encoder.image_size))
    tied = ("image_size", "image_seq_length", "sam_image_size")
    groups = _dataset_cfgs(cfg)
    readers = groups["eval"] or groups["train"]
    for key in READER_KEYS:
        values = [(d[key], where) for where, d in readers if key in d]
        if len({repr(v) for v, _ in values}) > 1:
            raise ValueError(f"readers disagree on {key}: " + ", ".join(f"{w}={v!r}" for v, w in values)
                             + "; make them agree (--cfg-options)")
        if values:
            value, where = values[0]
            if key in tied and value != settings[key]:
                raise ValueError(f"{where}: {key}={value} but the model expects {settings[key]}")
            settings[key] = value
    if sam_pixel_stats is not None:
        settings["sam_pixel_stats"] = sam_pixel_stats
    if groups["eval"]:
        differ = trained_otherwise(settings, groups["train"])
        if differ:
            MMLogger.get_current_instance().warning(
                f"the export follows the evaluation readers; training readers differ: {', '.join(differ)}")
    return settings


def trained_otherwise(settings: dict, train_readers: list[tuple[str, dict]]) -> list[str]:
    """Settings in which the training readers (all alike) differ from ``settings``, as 'key=value
    (trained with value)'."""
    defaults = inspect.signature(SalmaDataset.__init__).parameters
    differ = []
    for key in READER_KEYS:
        used = {repr(d.get(key, defaults[key].default)) for _, d in train_readers}
        if len(used) == 1 and used != {repr(settings[key])}:
            differ.append(f"{key}={settings[key]!r} (trained with {used.pop()})")
    return differ


def video_options(cfg: Config) -> dict:
    """The evaluation's ``test_options`` (defaults filled in)."""
    options = dict(DEFAULT_OPTIONS)
    options.update(_plain(cfg.get("test_options") or {}))
    unknown = sorted(set(options) - set(DEFAULT_OPTIONS))
    if unknown:
        raise ValueError(f"test_options: unknown keys {unknown}; known: {sorted(DEFAULT_OPTIONS)}")
    return options


def build_tracker(model, model_cfg: dict, options: dict) -> SAM2MemoryTracker | None:
    """The evaluation's tracker: memory modules from ``test_options.sam2_memory``, else from the
    SAM-2 checkpoint of the model config (:func:`sam2_weights_of`); None with ``propagation='decode_all'``."""
    if options["propagation"] != "memory":
        return None
    weights = options["sam2_memory"] or sam2_weights_of(model_cfg)
    if not weights:
        raise ValueError(
            "propagation='memory' exports SAM-2's memory modules: give --sam2-memory (Meta SAM-2 .pt or HF "
            f"sam2_video folder; {RANDOM_MEMORY!r} for tiny random test models), or export with "
            "--cfg-options test_options.propagation=decode_all")
    return SAM2MemoryTracker(model.grounding_encoder, memory_weights=weights,
                             tracker_decoder=options["tracker_decoder"], seed=int(options["seed"]))


def as_salma_model(cfg: Config, model, *, source: dict | None = None) -> SALMAModel:
    """The exported form of a built (and loaded) ``model``: LoRA merged in place, the evaluation's
    tracker, the config recording architecture, reader settings and video options."""
    model_cfg = _plain(cfg.model)
    grounding = model_cfg["grounding_encoder"]
    options = video_options(cfg)
    merged = merge_lora(model.mllm.language_model)
    tracker = build_tracker(model, model_cfg, options)
    config = SALMAConfig(
        internvl=model.mllm.model.config.to_dict(),
        sam2=model.grounding_encoder.sam2.config.to_dict(),
        grounding={**{k: grounding[k] for k in ("enable_cma", "cma", "mask_source") if k in grounding},
                   "mask_token": model.grounding_encoder.mask_token},
        max_expr_tokens=model.max_expr_tokens,
        inputs=reader_settings(cfg, model, sam_pixel_stats=options["sam_pixel_stats"]),
        video={k: options[k] for k in VIDEO_KEYS},
        tracker=None if tracker is None else tracker.video.config.to_dict(),
        max_new_tokens=int(options["max_new_tokens"]),
        source={**(source or {}), "config": cfg.filename, "lora_merged_layers": len(merged),
                "sam2_memory": options["sam2_memory"] if tracker is not None else None},
    )
    return SALMAModel(model, config, tracker)


def export_model(cfg: Config, checkpoint: str, out_dir: str, *, dtype: str | None = None) -> SALMAModel:
    """Build, load ``checkpoint``, merge LoRA, save the folder; returns the exported model (CPU).

    ``dtype``: cast the saved floating weights ('bfloat16' halves the folder); default: as trained.
    """
    grounding = _plain(cfg.model)["grounding_encoder"]
    if grounding.get("mask_source", "pred") == "gt" and grounding.get("enable_cma", True):
        raise ValueError("model.grounding_encoder.mask_source='gt' is an oracle prior: it cannot run at inference")
    model = build_model(cfg, "none", torch.device("cpu"), int(video_options(cfg)["seed"]))
    load_trained_weights(model, checkpoint)  # a trainable tensor missing from the checkpoint is an error
    exported = as_salma_model(cfg, model, source={"checkpoint": checkpoint})
    exported.save_pretrained(out_dir, dtype=dtype)
    MMLogger.get_current_instance().info(
        f"exported {checkpoint} to {out_dir}: {exported.config.source['lora_merged_layers']} LoRA layers merged, "
        f"{len(exported.state_to_save())} tensors, propagation {exported.config.video['propagation']}")
    return exported
