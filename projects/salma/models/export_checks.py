"""Checks of an exported folder before a model is built from it: ``config.json`` is strict and
consistent, ``model.safetensors`` is the file that was exported.

transformers keeps an unknown config key as a silent attribute, so a typo inside ``internvl`` is
ignored; and sizes that the readers and the model must share are stored in several sections
(``inputs.image_seq_length`` is what the readers emit per tile, the vision config decides what
the model produces): if they disagree the LLM can answer without seeing the image. Every
section is checked here: unknown keys (transformers configs recursively, through each class's
``sub_configs``), missing reader / video keys, allowed values, and the derived sizes. All
problems are reported at once, each with its dotted key.

The weights (:mod:`.export_format`): ``save_pretrained`` records the size and BLAKE2b hash of ``model.safetensors`` in
``config.json`` (:func:`weights_record`); ``from_pretrained`` compares them (:func:`check_weights_file`),
so flipped bytes or a partial copy are an error instead of different masks. Hashing reads the
file once more (hundreds of MB/s; see the report of issue 11); ``verify_weights=False`` skips it.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any

import numpy as np
from transformers import (CONFIG_MAPPING, AutoConfig, InternVLConfig, PretrainedConfig, Qwen2_5_VLConfig, Qwen3VLConfig,
                          Sam2Config, Sam2VideoConfig)

from ..datasets.ref_vos import FRAME_SAMPLINGS, sample_frame_indices
from ..datasets.transforms import SAM_PIXEL_STATS
from ..datasets.vision_inputs import QwenVLPatches
from .cma import CrossModalAttention2D
from .grounding import MASK_SOURCES, MASK_TOKENS, SAM2GroundingRunner
from .video import LLM_FRAME_MASKS, PROPAGATION_MODES, TRACKER_DECODERS

# SalmaDataset arguments that decide what the model sees (tiling, tokens, template, SAM-2 input).
# sam_pixel_stats is optional: exports written before it existed normalise with 'imagenet'.
# vision is the readers' Qwen-VL scheme (datasets.vision_inputs), absent for InternVL.
READER_KEYS = ("image_size", "image_seq_length", "min_dynamic_patch", "max_dynamic_patch", "use_thumbnail",
              "sam_image_size", "system", "max_length", "sam_pixel_stats", "vision")
OPTIONAL_READER_KEYS = ("sam_pixel_stats", "vision")
# The MLLM's transformers config: one of these sections (the family's), the others not written.
MLLM_KEYS = ("internvl", "qwen_vl")
QWEN_VL_CONFIGS = {"qwen2_5_vl": Qwen2_5_VLConfig, "qwen3_vl": Qwen3VLConfig}
REQUIRED_READER_KEYS = tuple(k for k in READER_KEYS if k not in OPTIONAL_READER_KEYS)
# The evaluation's test_options that decide how a video is predicted (llm_frame_masks is optional:
# exports written before it existed predict with its default, 'language').
VIDEO_KEYS = ("num_llm_frames", "llm_frame_sampling", "propagation", "tracker_decoder", "llm_frame_masks")
REQUIRED_VIDEO_KEYS = VIDEO_KEYS[:4]
_VERSION_KEYS = ("transformers_version",)  # written by the exporting version only
# Special-token ids every transformers config may carry (released Qwen3-VL text configs do, though
# Qwen3VLTextConfig declares none of them).
_TOKEN_ID_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id")


def check_salma_config(body: dict, *, source: str) -> None:
    """Raise ValueError('<source>: problem; problem; ...') if ``body`` (the SALMAConfig fields)
    has unknown keys or sections that disagree with each other."""
    problems: list[str] = []
    if body.get("internvl") is not None:
        problems += unknown_config_keys(body["internvl"], InternVLConfig, "internvl")
    else:
        problems += _check_qwen_vl(body["qwen_vl"], body["inputs"])
    problems += unknown_config_keys(body["sam2"], Sam2Config, "sam2")
    if body.get("tracker") is not None:
        problems += unknown_config_keys(body["tracker"], Sam2VideoConfig, "tracker")
    problems += _check_grounding(body["grounding"])
    problems += _check_inputs(body["inputs"])
    problems += _check_video(body["video"], body.get("tracker"))
    if not problems:  # the sizes below need well-formed sections
        problems += _check_sizes(body)
    for key in ("max_expr_tokens", "max_new_tokens"):
        if key in body and not _positive_int(body[key]):
            problems.append(f"{key} {body[key]!r} must be a positive integer")
    if problems:
        raise ValueError(f"{source}: " + "; ".join(problems))


@functools.lru_cache(maxsize=None)
def _known_keys(cls: type[PretrainedConfig]) -> frozenset[str]:
    """Keys a ``cls`` writes (its defaults' ``to_dict``) or takes (its constructor's arguments)."""
    params = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
    return frozenset(set(cls().to_dict()) | params | set(_TOKEN_ID_KEYS))


def unknown_config_keys(data: Any, cls: type[PretrainedConfig], path: str) -> list[str]:
    """Problems of a transformers config dict: keys ``cls`` does not know, in it and its sub-configs."""
    if not isinstance(data, dict):
        return [f"{path} must be an object, got {type(data).__name__}"]
    problems = [f"unknown key '{path}.{k}'" for k in sorted(set(data) - _known_keys(cls))]
    for name, sub in getattr(cls, "sub_configs", {}).items():
        value = data.get(name)
        if not isinstance(value, dict):
            continue
        if sub is AutoConfig:
            model_type = value.get("model_type")
            if model_type not in CONFIG_MAPPING:
                problems.append(f"{path}.{name}.model_type {model_type!r} is not a transformers config type")
                continue
            sub = CONFIG_MAPPING[model_type]
        problems += unknown_config_keys(value, sub, f"{path}.{name}")
    return problems


def _unknown(section: Any, known, path: str, *, required=()) -> list[str]:
    if not isinstance(section, dict):
        return [f"{path} must be an object, got {type(section).__name__}"]
    problems = [f"unknown key '{path}.{k}'" for k in sorted(set(section) - set(known))]
    problems += [f"{path}: missing key '{k}'" for k in required if k not in section]
    return problems


def _params(cls, *drop: str) -> set[str]:
    return set(inspect.signature(cls.__init__).parameters) - {"self", *drop}


def _check_grounding(grounding: Any) -> list[str]:
    problems = _unknown(grounding, _params(SAM2GroundingRunner, "sam2"), "grounding")
    if problems:
        return problems
    if grounding.get("cma") is not None:
        problems += _unknown(grounding["cma"], _params(CrossModalAttention2D, "dim"), "grounding.cma")
    if grounding.get("mask_token", "best_iou") not in MASK_TOKENS:
        problems.append(f"grounding.mask_token {grounding['mask_token']!r} is not one of {MASK_TOKENS}")
    source = grounding.get("mask_source", "pred")
    if source not in MASK_SOURCES or (source == "gt" and grounding.get("enable_cma", True)):
        problems.append(f"grounding.mask_source {source!r} cannot run at inference (use 'pred' or 'none')")
    return problems


def _check_inputs(inputs: Any) -> list[str]:
    problems = _unknown(inputs, READER_KEYS, "inputs", required=REQUIRED_READER_KEYS)
    if problems:
        return problems
    if inputs.get("sam_pixel_stats", "imagenet") not in SAM_PIXEL_STATS:
        problems.append(f"inputs.sam_pixel_stats {inputs['sam_pixel_stats']!r} is not one of {SAM_PIXEL_STATS}")
    for key in ("image_size", "image_seq_length", "min_dynamic_patch", "max_dynamic_patch", "sam_image_size",
                "max_length"):
        if not _positive_int(inputs[key]):
            problems.append(f"inputs.{key} {inputs[key]!r} must be a positive integer")
    if not problems and inputs["min_dynamic_patch"] > inputs["max_dynamic_patch"]:
        problems.append(f"inputs.min_dynamic_patch {inputs['min_dynamic_patch']} > inputs.max_dynamic_patch "
                        f"{inputs['max_dynamic_patch']}")
    return problems


def _check_qwen_vl(qwen_vl: Any, inputs: Any) -> list[str]:
    """The Qwen-VL section and the readers' ``vision`` scheme it needs."""
    model_type = qwen_vl.get("model_type") if isinstance(qwen_vl, dict) else None
    if model_type not in QWEN_VL_CONFIGS:
        return [f"qwen_vl.model_type {model_type!r} is not one of {sorted(QWEN_VL_CONFIGS)}"]
    problems = unknown_config_keys(qwen_vl, QWEN_VL_CONFIGS[model_type], "qwen_vl")
    vision = inputs.get("vision") if isinstance(inputs, dict) else None
    if not isinstance(vision, dict) or vision.get("family") != "qwen_vl":
        problems.append(f"inputs.vision must be the readers' Qwen-VL scheme (family 'qwen_vl'), got {vision!r}")
        return problems
    problems += _unknown(vision, {"family"} | _params(QwenVLPatches), "inputs.vision")
    patch = (qwen_vl.get("vision_config") or {}).get("patch_size")
    if vision.get("patch_size", 14) != patch:
        problems.append(f"inputs.vision.patch_size {vision.get('patch_size', 14)} != qwen_vl.vision_config.patch_size "
                        f"{patch}")
    return problems


def _check_video(video: Any, tracker: Any) -> list[str]:
    problems = _unknown(video, VIDEO_KEYS, "video", required=REQUIRED_VIDEO_KEYS)
    if problems:
        return problems
    if not _positive_int(video["num_llm_frames"]):
        problems.append(f"video.num_llm_frames {video['num_llm_frames']!r} must be a positive integer")
    try:
        sample_frame_indices(1, 1, video["llm_frame_sampling"], np.random.default_rng(0))
    except ValueError:
        problems.append(f"video.llm_frame_sampling {video['llm_frame_sampling']!r} is not one of {FRAME_SAMPLINGS}")
    propagation = video["propagation"]
    if propagation not in PROPAGATION_MODES:
        problems.append(f"video.propagation {propagation!r} is not one of {PROPAGATION_MODES}")
    elif (propagation == "memory") != (tracker is not None):
        problems.append(f"video.propagation {propagation!r} needs " + (
            "the SAM-2 memory tracker config (tracker is null)" if tracker is None else "no tracker config"))
    if video["tracker_decoder"] not in TRACKER_DECODERS:
        problems.append(f"video.tracker_decoder {video['tracker_decoder']!r} is not one of {TRACKER_DECODERS}")
    if video.get("llm_frame_masks", "language") not in LLM_FRAME_MASKS:
        problems.append(f"video.llm_frame_masks {video['llm_frame_masks']!r} is not one of {LLM_FRAME_MASKS}")
    return problems


def _pair(value: Any) -> tuple[int, int]:
    return (value[0], value[1]) if isinstance(value, (list, tuple)) else (value, value)


def _check_sizes(body: dict) -> list[str]:
    """The sizes several sections must agree on."""
    problems = [] if body.get("internvl") is None else _check_tile_sizes(body["internvl"], body["inputs"])
    return problems + _check_sam2_sizes(body)


def _check_tile_sizes(internvl: dict, inputs: dict) -> list[str]:
    """InternVL's tiles: the readers' tile size and tokens per tile are the model's."""
    problems = []
    vision = internvl.get("vision_config") or {}
    (height, width), (patch_h, patch_w) = _pair(vision.get("image_size")), _pair(vision.get("patch_size"))
    ratio = internvl.get("downsample_ratio")
    # InternVL: a (H/p) x (W/p) patch grid, pixel-shuffled by downsample_ratio in each direction.
    grid = (height / patch_h * ratio, width / patch_w * ratio)
    tokens = int(grid[0] * grid[1]) if all(float(g).is_integer() for g in grid) else None
    derivation = (f"the internvl.vision_config's (image_size {height} / patch_size {patch_h} * downsample_ratio "
                  f"{ratio})^2 = {tokens}")
    if tokens is None:
        problems.append(f"internvl.vision_config: image_size {height}x{width} / patch_size {patch_h}x{patch_w} * "
                        f"downsample_ratio {ratio} is not a whole token grid")
    else:
        if inputs["image_seq_length"] != tokens:
            problems.append(f"inputs.image_seq_length {inputs['image_seq_length']} (image tokens per tile the readers "
                            f"write) != {tokens} tokens the model makes per tile: {derivation}")
        if internvl.get("image_seq_length", tokens) != tokens:
            problems.append(f"internvl.image_seq_length {internvl['image_seq_length']} != {tokens}: {derivation}")
    if (height, width) != (inputs["image_size"], inputs["image_size"]):
        problems.append(f"inputs.image_size {inputs['image_size']} (square tiles) != internvl.vision_config.image_size "
                        f"{height}x{width}")
    return problems


def _check_sam2_sizes(body: dict) -> list[str]:
    """SAM-2's input size, and the tracker's, agree with the readers'."""
    problems = []
    inputs, sam2, tracker = body["inputs"], body["sam2"], body.get("tracker")
    sam_size = (sam2.get("prompt_encoder_config") or {}).get("image_size")
    backbone = ((sam2.get("vision_config") or {}).get("backbone_config") or {}).get("image_size")
    if backbone is not None and _pair(backbone) != (sam_size, sam_size):
        problems.append(f"sam2.vision_config.backbone_config.image_size {backbone} != "
                        f"sam2.prompt_encoder_config.image_size {sam_size}")
    if inputs["sam_image_size"] != sam_size:
        problems.append(f"inputs.sam_image_size {inputs['sam_image_size']} != sam2.prompt_encoder_config.image_size "
                        f"{sam_size}")
    if tracker is not None:
        if tracker.get("image_size") != sam_size:
            problems.append(f"tracker.image_size {tracker.get('image_size')} != sam2.prompt_encoder_config.image_size "
                            f"{sam_size}")
        # The tracker runs the runner's image encoder (and, 'shared', its prompt encoder and decoder).
        if _strip(tracker.get("vision_config")) != _strip(sam2.get("vision_config")):
            problems.append("tracker.vision_config != sam2.vision_config (the tracker shares the image encoder)")
        for name in ("prompt_encoder_config", "mask_decoder_config"):
            ours, theirs = (tracker.get(name) or {}).get("hidden_size"), (sam2.get(name) or {}).get("hidden_size")
            if ours != theirs:
                problems.append(f"tracker.{name}.hidden_size {ours} != sam2.{name}.hidden_size {theirs}")
    return problems


def _strip(config: Any) -> Any:
    """A config dict without the keys only the exporting library version decides."""
    if not isinstance(config, dict):
        return config
    return {k: _strip(v) for k, v in config.items() if k not in _VERSION_KEYS}


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
