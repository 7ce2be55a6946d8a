"""Sa2VA's Qwen-VL release folders (``ByteDance/Sa2VA-Qwen2_5-VL-3B`` / ``-7B``,
``Sa2VA-Qwen3-VL-4B``), read without their remote code.

Written from Sa2VA's public code (bytedance/Sa2VA): ``tools/convert_to_hf.py`` builds
``Sa2VAChatModelQwen`` (``projects/sa2va/hf/models_qwen2_5_vl/``, ``models_qwen3vl/``) around the
trained ``Qwen2_5_VLForConditionalGeneration`` / ``Qwen3VLForConditionalGeneration`` and calls
``save_pretrained``, then the processor's. The folder holds:

- ``config.json``: a ``Sa2VAChatConfigQwen``, i.e. the Qwen-VL config itself (a subclass of
  ``Qwen2_5_VLConfig`` / ``Qwen3VLConfig``: ``text_config``, ``vision_config``, the vision token ids)
  with ``model_type: "sa2va_chat"``, ``architectures: ["Sa2VAChatModelQwen"]``, ``auto_map`` (its
  remote code, never run here), ``template`` (the xtuner template's name, ``qwen_chat``: the
  exporter's regex meant to strip the default system prompt from a Jinja template finds none in a
  name), ``text_config.vocab_size = len(tokenizer)`` and ``tie_word_embeddings: false`` (top level
  and ``text_config``: ``embed_tokens`` and ``lm_head`` were trained apart). The family is the one
  of ``text_config.model_type`` (``qwen2_5_vl_text`` / ``qwen3_vl_text``). Nothing in it describes
  SAM-2 or the pixel bounds: ``Sa2VAChatModelQwen.__init__`` hard-codes ``min_pixels = 512 * 28**2``
  and ``max_pixels = 2048 * 28**2`` (:data:`SA2VA_QWEN_PIXELS`), for images and video frames alike.
- safetensors; the exporter renames ``mllm.`` to nothing and ``.gamma`` to ``.g_weight``:

  ================================= ===========================================================
  ``model.model.visual.*``,          the Qwen-VL model under ``Sa2VAChatModelQwen.model``, in
  ``model.model.language_model.*``,  transformers' module names (>= 4.52; Sa2VA's training code
  ``model.lm_head.*``                uses ``dtype=``, i.e. >= 4.56). The names of earlier
                                     versions (``model.visual.*``, ``model.model.layers.*``) are
                                     read too, renamed to these.
  ``grounding_encoder.sam2_model.*`` Meta's ``SAM2Base`` (the same ``sam2.py`` as the InternVL
                                     releases: hiera-large, sam2.0 memory, ``g_weight``)
  ``text_hidden_fcs.*``              the ``[SEG]`` projection (``Linear, ReLU, Linear, Dropout``)
  ================================= ===========================================================

- the processor's files (``processor.save_pretrained`` of the base Qwen-VL's processor): the
  tokenizer with ``[SEG] <p> </p> <vp> </vp>`` appended after Qwen's tokens by
  ``add_tokens(special_tokens=True)`` (the embeddings resized to ``len(tokenizer)``), the image
  processor's ``preprocessor_config.json`` (statistics; its own pixel bounds are overridden at
  call time) and the chat template (Qwen2.5-VL's adds ``You are a helpful assistant.`` as system
  message when none is given; Qwen3-VL's adds none).

Which key is which part: :data:`.sa2va_layout.QWEN_PARTS`; the Qwen config for
``QwenVLMLLM``: :func:`sa2va_qwen_config`; the token check: :func:`check_qwen_release_tokens`.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from ...constants import QWEN_VISION_TOKENS, SPECIAL_TOKENS
from .common import check_state_dict, save_sharded_safetensors
from .sa2va import _write_added_tokens_v4, check_token_ids
from .sa2va_layout import (QWEN_PARTS, SA2VA_QWEN_ARCHITECTURE, is_sa2va_qwen_config, read_sa2va_part,  # noqa: F401
                           read_user_json)

SA2VA_QWEN_PIXELS = (512 * 28 * 28, 2048 * 28 * 28)  # modeling_sa2va_qwen.py: self.min_pixels / self.max_pixels
SA2VA_QWEN_TOKENS = (*QWEN_VISION_TOKENS, *SPECIAL_TOKENS)  # the ids the folder's embedding rows follow
# text_config.model_type -> the Qwen-VL family (QwenVLMLLM's config model_type)
QWEN_TEXT_TYPES = {"qwen2_5_vl_text": "qwen2_5_vl", "qwen3_vl_text": "qwen3_vl"}
QWEN_DEFAULT_STATS = {"qwen2_5_vl": "clip", "qwen3_vl": "half"}  # the base models' preprocessor_config.json
_QWEN_CONFIG_KEYS = ("text_config", "vision_config", "image_token_id", "video_token_id", "vision_start_token_id",
                     "vision_end_token_id", "tie_word_embeddings")
_SA2VA_OWN_KEYS = ("architectures", "auto_map", "template", "model_type", "transformers_version", "_name_or_path",
                   "torch_dtype", "dtype")
_SA2VA_QWEN_AUTO_MAP = {  # what Sa2VA's exporter writes (recorded, never imported)
    "AutoConfig": "configuration_sa2va_chat.Sa2VAChatConfigQwen",
    "AutoModel": "modeling_sa2va_qwen.Sa2VAChatModelQwen",
    "AutoModelForCausalLM": "modeling_sa2va_qwen.Sa2VAChatModelQwen",
}

def sa2va_qwen_family(config_dict: Mapping, *, source: str = "config.json") -> str:
    """'qwen2_5_vl' or 'qwen3_vl', from ``text_config.model_type``; anything else is refused."""
    text_type = (config_dict.get("text_config") or {}).get("model_type")
    if text_type not in QWEN_TEXT_TYPES:
        raise ValueError(f"{source}: text_config.model_type {text_type!r} is not a Qwen-VL family SALMA runs "
                         f"({sorted(QWEN_TEXT_TYPES)}: Sa2VA-Qwen2_5-VL-3B / -7B, Sa2VA-Qwen3-VL-4B)")
    return QWEN_TEXT_TYPES[text_type]


def sa2va_qwen_config(config_dict: Mapping, *, source: str = "config.json") -> dict:
    """The Qwen-VL part of a ``Sa2VAChatConfigQwen`` as ``QwenVLMLLM``'s ``config=`` (its
    ``model_type`` the family): the sub-configs, the vision token ids and the tying flag. Sa2VA's own
    fields (``auto_map``, ``template``, ...) describe its remote code, not weights; a config of
    transformers < 4.52 (text fields at the top, no ``text_config``) is refused by name."""
    if "text_config" not in config_dict or "vision_config" not in config_dict:
        raise ValueError(f"{source}: a Sa2VA Qwen-VL config needs text_config and vision_config (written by "
                         f"transformers >= 4.52); found keys {sorted(config_dict)}")
    family = sa2va_qwen_family(config_dict, source=source)
    config = {k: json.loads(json.dumps(config_dict[k])) for k in _QWEN_CONFIG_KEYS if k in config_dict}
    config["text_config"].pop("model_type", None)  # the family's sub-config classes set their own
    config["vision_config"].pop("model_type", None)
    return {"model_type": family, **config}


def qwen_release_vision(folder: str | Path, config_dict: Mapping, *, source: str = "config.json") -> dict:
    """The readers' ``vision`` scheme of a release as Sa2VA's ``predict_forward`` feeds its LLM:
    the tower's patch / merge / temporal sizes (config.json), the statistics of the folder's
    ``preprocessor_config.json`` (the family's when absent) and Sa2VA's hard-coded pixel bounds,
    for images and video frames alike (its video frames go to the processor as images)."""
    family = sa2va_qwen_family(config_dict, source=source)
    vision = config_dict["vision_config"]
    stats = {"image_mean": QWEN_DEFAULT_STATS[family], "image_std": QWEN_DEFAULT_STATS[family]}
    processor = Path(folder) / "preprocessor_config.json"
    if processor.is_file():
    
        found = read_user_json(processor)
        stats.update({k: [float(x) for x in found[k]] for k in stats if k in found})
    low, high = SA2VA_QWEN_PIXELS
    return dict(family="qwen_vl", patch_size=int(vision["patch_size"]), merge_size=int(vision["spatial_merge_size"]),
                temporal_patch_size=int(vision["temporal_patch_size"]), min_pixels=low, max_pixels=high,
                video_min_pixels=low, video_max_pixels=high, **stats)


def release_system_message(folder: str | Path) -> str:
    """The system message the folder's chat template puts before a user turn that has none (Sa2VA's
    ``predict_forward`` renders its prompt with it: Qwen2.5-VL's template adds ``You are a helpful
    assistant.``); '' without a chat template or without such a default. The template is rendered
    in a sandbox (Jinja's ``ImmutableSandboxedEnvironment``), never as code."""
    template = _chat_template(Path(folder))
    if template is None:
        return ""
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):  # what transformers gives chat templates
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    messages = [{"role": "user", "content": [{"type": "text", "text": "x"}]}]
    try:
        text = env.from_string(template).render(messages=messages, add_generation_prompt=True)
    except TemplateError as err:
        raise ValueError(f"{folder}: its chat template does not render a plain user turn ({err}); the baseline's "
                         "system message is read from it") from err
    match = re.match(r"<\|im_start\|>system\n(.*?)<\|im_end\|>\n<\|im_start\|>user\n", text, flags=re.DOTALL)
    return match.group(1) if match else ""


def _chat_template(folder: Path) -> str | None:

    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text(encoding="utf-8")
    for name in ("chat_template.json", "tokenizer_config.json"):
        if (folder / name).is_file():
            template = read_user_json(folder / name).get("chat_template")
            if isinstance(template, str):
                return template
    return None


def check_qwen_release_tokens(folder: str | Path, config_dict: Mapping, tokenizer: PreTrainedTokenizerBase) -> None:
    """``tokenizer`` must give Qwen's vision tokens and Sa2VA's five the ids of the folder's own
    tokenizer files (which must agree with one another) and have no token beyond the folder's
    ``text_config.vocab_size`` embedding rows; ``ValueError`` naming the token otherwise."""
    check_token_ids(folder, tokenizer, SA2VA_QWEN_TOKENS, rows=int(config_dict["text_config"]["vocab_size"]),
                    rows_key="text_config.vocab_size")


def load_qwen_part(folder: str | Path, qwen: nn.Module) -> None:
    """Load the folder's ``model.*`` into the Qwen-VL model ``qwen`` (``QwenVLMLLM.model``), strictly,
    named as in the folder. With LoRA injected (a SALMA training) the base weights are loaded under
    ``base_layer`` and the adapters stay fresh; a tied LM head is its embedding (one tensor)."""

    state = read_sa2va_part(folder, "qwen_vl")
    targets, seen = {}, set()
    for key, tensor in qwen.state_dict(keep_vars=True).items():
        if "lora_" in key or id(tensor) in seen:
            continue
        seen.add(id(tensor))
        targets["model." + key.replace(".base_layer.", ".")] = tensor
    check_state_dict(state, targets, source=f"{folder} (model.*: the Qwen-VL model)")
    with torch.no_grad():
        for key, target in targets.items():
            target.copy_(state[key])


def save_sa2va_qwen_layout(
    folder: str | Path,
    *,
    qwen: nn.Module,
    sam2_state_dict: Mapping[str, torch.Tensor],
    text_hidden_fcs: Mapping[str, torch.Tensor],
    tokenizer: PreTrainedTokenizerBase,
    chat_template: str | None = None,
    preprocessor: Mapping | None = None,
    template: str = "qwen_chat",
    num_shards: int = 3,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write a folder in Sa2VA's Qwen-VL release layout from its parts (tests and benchmarks: no
    download). ``qwen`` is a ``Qwen2_5_VLForConditionalGeneration`` / ``Qwen3VLForConditionalGeneration``
    whose vocabulary is ``len(tokenizer)`` (Sa2VA's tokens already added); ``chat_template`` and
    ``preprocessor`` (``preprocessor_config.json``'s fields) stand for the processor's files."""

    folder = Path(folder)
    config = qwen.config.to_dict()
    if len(tokenizer) != config["text_config"]["vocab_size"]:
        raise ValueError(f"Sa2VA saves text_config.vocab_size = len(tokenizer): {len(tokenizer)} tokens vs "
                         f"{config['text_config']['vocab_size']} embedding rows")
    state = {f"model.{k}": v for k, v in qwen.state_dict().items()}
    if config.get("tie_word_embeddings"):
        state.pop("model.lm_head.weight", None)  # transformers saves a tied head once
    for key, tensor in sam2_state_dict.items():
        key = re.sub(r"^(memory_encoder\.fuser\.layers\.\d+)\.gamma$", r"\1.g_weight", key)
        state["grounding_encoder.sam2_model." + key] = tensor
    state.update({f"text_hidden_fcs.{k}": v for k, v in text_hidden_fcs.items()})
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    save_sharded_safetensors(state, folder, num_shards=num_shards)
    config.update(architectures=[SA2VA_QWEN_ARCHITECTURE], model_type="sa2va_chat", auto_map=dict(_SA2VA_QWEN_AUTO_MAP),
                  template=template)
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    tokenizer.save_pretrained(folder)
    _write_added_tokens_v4(folder, tokenizer)
    if chat_template is not None:
        (folder / "chat_template.json").write_text(json.dumps({"chat_template": chat_template}), encoding="utf-8")
    if preprocessor is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(dict(preprocessor), indent=2), encoding="utf-8")
    return folder
