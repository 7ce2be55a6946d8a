"""The one build path: what training, evaluation, export, ``from_pretrained``, the Sa2VA loader,
the demo and the app assemble, assembled here once.

- :func:`build_model`: the model of an mmengine config, untrained parts seeded, a checkpoint's
  trained weights loaded (``tools/train.py`` builds through the same ``MODELS`` registry).
- :class:`EvalOptions`: the evaluation's ``test_options`` with their defaults, checked once.
- :func:`tracker_for` / :func:`build_tracker`: SAM-2's memory tracker around a model's runner.
- :func:`model_input_sizes` / :func:`reader_settings`: the readers' image settings a model fixes.
- :func:`merge_lora`, :func:`build_exported_model`, :func:`build_exported_tracker`: the LoRA-free
  predicting model of an export, from a trained model or from an export's config.
"""
from __future__ import annotations

import copy
import inspect
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping

import torch
from mmengine.config import Config, ConfigDict
from mmengine.logging import MMLogger
from torch import nn
from transformers import Sam2VideoModel

from .checkpoint import load_trained_weights
from .datasets.base import SalmaDataset
from .models.convert.sam2 import _video_config_from_json
from .models.export_checks import READER_KEYS
from .models.llava_sam2 import VideoLLaVASAMModel
from .models.video import RANDOM_MEMORY, SAM2MemoryTracker
from .registry import MODELS


def plain(cfg: Any) -> Any:
    """A config section as plain dicts / lists (a copy: the caller may change it)."""
    return cfg.to_dict() if isinstance(cfg, ConfigDict) else copy.deepcopy(cfg)


# ---------------------------------------------------------------------------------------------------
# evaluation options
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalOptions:
    """The evaluation's ``test_options`` (a config's, or one ``test_datasets`` entry's overrides on
    them). The export and ``from_pretrained`` predict with the same ones."""

    max_new_tokens: int = 32  # generation budget per answer
    lenient: bool = True  # RES: also report Sa2VA's skip-missing numbers (labelled *_lenient)
    num_llm_frames: int = 5  # video: frames the LLM sees (K)
    llm_frame_sampling: str = "first"  # 'first' (Sa2VA) | 'uniform' (shipped configs) | 'uniform_floor' (Sa2VA-i)
    propagation: str = "memory"  # 'memory' (SAM-2 memory tracking) | 'decode_all' (no-memory ablation)
    sam2_memory: str | None = None  # SAM-2 .pt / HF folder with the memory modules; None: the model's SAM-2
    tracker_decoder: str = "shared"  # 'shared' (fine-tuned decoder tracks) | 'original' (checkpoint's decoder)
    llm_frame_masks: str = "language"  # an LLM frame's mask: 'language' (its decode) | 'tracker' (SAM-2's output)
    tracker_offload: bool = False  # SAM-2's memory bank on the host (GPU memory: only the frame being tracked)
    share_item_inputs: bool = True  # RES: an image's sentences share its vision / SAM-2 features (False: per sentence)
    sam_pixel_stats: str | None = None  # every reader's SAM-2 normalisation: None (the readers' own, 'imagenet'),
    #                                     'imagenet' or 'sa2va_release' (a published Sa2VA as its HF code runs it)
    protocol: str = "refvos"  # video scores: 'refvos' (J, F, J&F) | 'revos' (+ A, R, by type) | 'refsav'
    submission: bool | None = None  # video: write submission.zip (None: only when the split has no GT)
    seed: int = 0  # random init of untrained parts (checkpoint 'none', random memory modules)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_config(cls, cfg: Config | Mapping) -> EvalOptions:
        """The options of a config's ``test_options`` (unknown keys are an error naming them)."""
        return cls().updated(plain(cfg.get("test_options") or {}), where="test_options")

    def updated(self, overrides: Mapping, *, where: str = "test_options") -> EvalOptions:
        unknown = sorted(set(overrides) - set(self.names()))
        if unknown:
            raise ValueError(f"{where}: unknown keys {unknown}; known: {sorted(self.names())}")
        return replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------------
def build_model(cfg: Config, checkpoint: str, device: torch.device, seed: int = 0, *,
                allow_missing_weights: bool = False):
    """The model from ``cfg.model`` (untrained parts seeded identically on every rank) with the
    checkpoint's weights (``'none'``: random / pretrained-from-config weights, for tests). A
    checkpoint lacking trainable tensors is an error unless ``allow_missing_weights``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MODELS.build(plain(cfg.model))
    if checkpoint != "none":
        load_trained_weights(model, checkpoint, allow_missing=allow_missing_weights)
    return model.to(device).eval()


def model_input_sizes(model) -> dict[str, int]:
    """The reader settings a model fixes: InternVL's tile size and tokens per tile, SAM-2's input
    size (Qwen-VL: SAM-2's only; its patch settings are the readers' ``vision``, see
    :func:`check_vision_family`)."""
    if model.mllm.vision_family != "internvl":
        return {"sam_image_size": int(model.grounding_encoder.image_size)}
    vision = model.mllm.model.config.vision_config
    size = vision.image_size[0] if isinstance(vision.image_size, (list, tuple)) else vision.image_size
    return {"image_size": int(size), "image_seq_length": int(model.mllm.model.config.image_seq_length),
            "sam_image_size": int(model.grounding_encoder.image_size)}


def check_vision_family(model, reader_cfg: dict, where: str) -> None:
    """A reader's vision inputs must be of the model's MLLM family (``datasets.vision_inputs``)."""
    wanted = model.mllm.vision_family
    given = (reader_cfg.get("vision") or {}).get("family", "internvl")
    if given != wanted:
        raise ValueError(f"{where}: the reader's vision.family is {given!r} but the model's MLLM takes {wanted!r} "
                         "inputs; set the dataset's vision= as the config's training readers do")


# ---------------------------------------------------------------------------------------------------
# the video tracker
# ---------------------------------------------------------------------------------------------------
def sam2_weights_of(model_cfg: dict) -> str | None:
    """The SAM-2 weights a model config loads: its release folder (``pretrained``), else
    ``grounding_encoder.sam2.checkpoint`` (None: random weights)."""
    return model_cfg.get("pretrained") or model_cfg["grounding_encoder"]["sam2"].get("checkpoint")


def memory_weights_of(options: EvalOptions, model_cfg: dict) -> str:
    """Where the tracker's memory modules come from: ``test_options.sam2_memory``, else the model
    config's SAM-2 checkpoint; neither is an error."""
    weights = options.sam2_memory or sam2_weights_of(model_cfg)
    if not weights:
        raise ValueError(
            "propagation='memory' needs SAM-2's memory modules: set test_options.sam2_memory (tools/export.py: "
            "--sam2-memory) to the Meta SAM-2 .pt or HF sam2_video folder, or to "
            f"{RANDOM_MEMORY!r} for tiny random test models; or use --cfg-options test_options.propagation=decode_all")
    return weights


def build_tracker(model, options: EvalOptions, memory_weights: str | Sam2VideoModel) -> SAM2MemoryTracker:
    """SAM-2's memory tracker sharing ``model``'s grounding runner."""
    return SAM2MemoryTracker(model.grounding_encoder, memory_weights=memory_weights,
                             tracker_decoder=options.tracker_decoder, seed=int(options.seed),
                             offload=options.tracker_offload)


def tracker_for(model, model_cfg: dict, options: EvalOptions) -> SAM2MemoryTracker | None:
    """The tracker the options ask for: None with ``propagation='decode_all'``."""
    if options.propagation != "memory":
        return None
    return build_tracker(model, options, memory_weights_of(options, model_cfg))


# ---------------------------------------------------------------------------------------------------
# the readers' settings
# ---------------------------------------------------------------------------------------------------
def _dataset_cfgs(cfg: Config) -> dict[str, list[tuple[str, dict]]]:
    """Reader configs of the config, by use: 'eval' (test_datasets, val / test dataloaders) and
    'train' (the train dataloader, mixes unpacked), each as (where, dict)."""
    def unpack(where: str, dataset: dict) -> list[tuple[str, dict]]:
        if "datasets" in dataset:
            return [item for k, d in enumerate(dataset["datasets"]) for item in unpack(f"{where}.datasets[{k}]", d)]
        return [(where, dataset)]

    found: dict[str, list[tuple[str, dict]]] = {"eval": [], "train": []}
    for name, entry in plain(cfg.get("test_datasets") or {}).items():
        splits = entry.get("splits") or {None: {}}
        for split, override in splits.items():
            where = f"test_datasets.{name}" + (f".splits.{split}" if split else "")
            found["eval"] += unpack(where, {**entry["dataset"], **override})
    for key in ("val_dataloader", "test_dataloader"):
        if cfg.get(key) and cfg[key].get("dataset"):
            found["eval"] += unpack(f"{key}.dataset", plain(cfg[key]["dataset"]))
    if cfg.get("train_dataloader") and cfg.train_dataloader.get("dataset"):
        found["train"] += unpack("train_dataloader.dataset", plain(cfg.train_dataloader.dataset))
    return found


def reader_settings(cfg: Config, model, *, sam_pixel_stats: str | None = None) -> dict:
    """The readers' image and template settings: those of the evaluation readers if the config has
    any, else of the training readers, else the reader defaults. Readers of the chosen group that
    disagree are an error; the sizes tied to the model default to it and must agree with it.
    Evaluation settings that differ from what the training readers used are logged as a warning
    (the export follows the evaluation, as ``tools/test.py`` does). ``sam_pixel_stats`` (the
    evaluation option of that name), when given, is every reader's, as in ``tools/test.py``."""
    defaults = inspect.signature(SalmaDataset.__init__).parameters
    settings = {k: defaults[k].default for k in READER_KEYS}
    tied = model_input_sizes(model)  # InternVL: tile size and tokens per tile; every model: SAM-2's size
    settings.update(tied)
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
    check_vision_family(model, settings, "the readers")
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


# ---------------------------------------------------------------------------------------------------
# the exported (LoRA-free) model
# ---------------------------------------------------------------------------------------------------
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


def build_exported_model(config, tokenizer) -> VideoLLaVASAMModel:
    """The predicting model of an export's ``SALMAConfig``: LoRA-free, frozen, weights left to the caller."""
    if config.internvl is not None:
        mllm = dict(type="InternVLMLLM", tokenizer=tokenizer, config=config.internvl, llm_lora=None)
    else:
        mllm = dict(type="QwenVLMLLM", tokenizer=tokenizer, config=config.qwen_vl, llm_lora=None)
    grounding = dict(type="SAM2GroundingRunner", sam2=dict(config=config.sam2), **config.grounding)
    model = VideoLLaVASAMModel(mllm=mllm, grounding_encoder=grounding, max_expr_tokens=config.max_expr_tokens)
    model.mllm.model.tie_weights()  # no_init_weights skips transformers' init, where tying happens
    return model.requires_grad_(False).eval()


def build_exported_tracker(config, model: VideoLLaVASAMModel) -> SAM2MemoryTracker | None:
    """The tracker of an export's ``SALMAConfig`` (weights left to the caller), if it has one."""
    if config.tracker is None:
        return None
    video = Sam2VideoModel(_video_config_from_json(config.tracker))
    return build_tracker(model, EvalOptions(tracker_decoder=config.video["tracker_decoder"]), video)
