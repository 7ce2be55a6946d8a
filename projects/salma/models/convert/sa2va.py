"""Sa2VA release folders (``ByteDance/Sa2VA-1B`` / ``-4B``, InternVL2.5 based), read without their
remote code.

Sa2VA's ``tools/convert_to_hf.py`` builds its ``Sa2VAChatModel`` (``projects/sa2va/hf/models/``)
and calls ``save_pretrained``. The folder holds:

- ``config.json``: a ``Sa2VAChatConfig``, i.e. InternVL's original config (``llm_config``,
  ``vision_config``, ``ps_version``, ``downsample_ratio``, ``select_layer``, tiling fields) with
  ``architectures: ["Sa2VAChatModel"]``, ``model_type: "sa2va_chat"``, ``auto_map`` (its remote
  code, never run here), ``template`` (the prompt template's name) and
  ``llm_config.vocab_size = len(tokenizer)``. Nothing in it describes SAM-2.
- sharded safetensors with ``model.safetensors.index.json``; the keys come in three parts:

  ============================== ==============================================================
  ``vision_model.*``, ``mlp1.*``, InternVL2.5 in its original layout (fused ``attn.qkv``), read by
  ``language_model.*``            :mod:`.internvl`
  ``grounding_encoder.           Meta's ``SAM2Base`` layout, read by :mod:`.sam2`. Sa2VA's code
  sam2_model.*``                  hard-codes hiera-large with sam2.0 memory settings, and its
                                  exporter renames the memory fuser's ``gamma`` to ``g_weight``
  ``text_hidden_fcs.*``           the ``[SEG]`` projection, ``Linear, ReLU, Linear, Dropout``:
                                  SALMA's own layout, loaded as is
  ============================== ==============================================================

- the tokenizer files: InternVL2.5's tokenizer with ``[SEG] <p> </p> <vp> </vp>`` appended by
  ``add_tokens(special_tokens=True)`` (Sa2VA-1B: ``<IMG_CONTEXT>`` 151667, ``[SEG]`` 151674, 151679
  tokens = embedding rows). SALMA adds the same five tokens in the same order, so a tokenizer built
  from the folder keeps every id; :func:`check_release_tokens` makes sure of it.

The original SALMA's HF export writes the same layout (it builds Sa2VA's ``Sa2VAChatModel`` and
drops the CMA weights), so such a folder is read the same way: as the baseline, without CMA.

Every key belongs to exactly one part or is refused by name; inside a part the converters' strict
checks name missing / unexpected keys and wrong shapes.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn
from transformers import InternVLForConditionalGeneration, PreTrainedTokenizerBase

from ...constants import IMG_CONTEXT_TOKEN, IMG_END_TOKEN, IMG_START_TOKEN, SPECIAL_TOKENS
from ...datasets.io import read_json
from .common import (
    CheckpointMismatchError,
    RenameRule,
    check_state_dict,
    load_safetensors_folder,
    rename_keys,
    safetensors_weight_map,
    save_sharded_safetensors,
)
from .internvl import convert_internvl_state_dict_to_original, internvl_config_to_original, token_ids_in_files

__all__ = [
    "SA2VA_ARCHITECTURE",
    "SA2VA_TOKENS",
    "is_sa2va_config",
    "is_sa2va_folder",
    "read_sa2va_config",
    "split_sa2va_keys",
    "read_sa2va_part",
    "sa2va_internvl_config",
    "check_release_tokens",
    "load_text_hidden_fcs",
    "save_sa2va_layout",
]

SA2VA_ARCHITECTURE = "Sa2VAChatModel"
SA2VA_MODEL_TYPE = "sa2va_chat"
SA2VA_SAM2_PREFIX = "grounding_encoder.sam2_model."
_SA2VA_AUTO_MAP = {  # what Sa2VA's exporter writes (its remote code; recorded, never imported)
    "AutoConfig": "configuration_sa2va_chat.Sa2VAChatConfig",
    "AutoModel": "modeling_sa2va_chat.Sa2VAChatModel",
    "AutoModelForCausalLM": "modeling_sa2va_chat.Sa2VAChatModel",
}

# Tokens whose ids the folder's embeddings were trained with: InternVL's image tokens and the five
# Sa2VA (= SALMA) tokens.
SA2VA_TOKENS = (IMG_START_TOKEN, IMG_END_TOKEN, IMG_CONTEXT_TOKEN, *SPECIAL_TOKENS)

# part -> (which keys belong to it, how they are renamed for the part's reader)
_SAM2 = re.escape(SA2VA_SAM2_PREFIX)
_PARTS: dict[str, tuple[str, list[RenameRule]]] = {
    "internvl": (r"(?:vision_model|mlp1|language_model)\..+", [RenameRule(r".+", r"\g<0>")]),
    "sam2": (
        rf"{_SAM2}.+",
        [
            # Sa2VA's CXBlock names its layer scale ``g_weight`` (Meta: ``gamma``)
            RenameRule(rf"{_SAM2}(memory_encoder\.fuser\.layers\.\d+)\.g_weight", r"\1.gamma"),
            RenameRule(rf"{_SAM2}(.+)", r"\1"),
        ],
    ),
    "text_hidden_fcs": (r"text_hidden_fcs\..+", [RenameRule(r"text_hidden_fcs\.(.+)", r"\1")]),
}


def read_user_json(path: Path) -> dict:
    """A folder's config.json through the project's JSON reader (file named; size and depth bounded)."""
    return read_json(str(path), expect=dict, max_bytes=16 << 20, max_depth=32)


def is_sa2va_config(config_dict: Mapping) -> bool:
    """Whether a config.json is a Sa2VA release (``Sa2VAChatModel``)."""
    architectures = config_dict.get("architectures") or []
    return SA2VA_ARCHITECTURE in architectures or config_dict.get("model_type") == SA2VA_MODEL_TYPE


def is_sa2va_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder whose config.json is a Sa2VA release."""
    config_path = Path(path) / "config.json"
    return config_path.is_file() and is_sa2va_config(read_user_json(config_path))


def read_sa2va_config(folder: str | Path) -> dict:
    """The config.json of a Sa2VA release folder (an error if it is not one)."""
    config_path = Path(folder) / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{folder}: no config.json")
    config = read_user_json(config_path)
    if not is_sa2va_config(config):
        raise ValueError(
            f"{folder}: not a Sa2VA release folder (config.json architectures {config.get('architectures')}, "
            f"model_type {config.get('model_type')!r}; expected {SA2VA_ARCHITECTURE!r})"
        )
    return config


def split_sa2va_keys(names: list[str], *, source: str) -> dict[str, dict[str, str]]:
    """``{part: {folder key: key in the part's own layout}}`` for every key of a release folder.

    Raises :class:`CheckpointMismatchError` naming every key that belongs to no part (a CMA weight,
    another model's key, a typo) and any two keys of a part that land on the same name."""
    by_part: dict[str, list[str]] = {part: [] for part in _PARTS}
    unexpected = []
    for name in names:
        part = next((p for p, (pattern, _) in _PARTS.items() if re.fullmatch(pattern, name)), None)
        if part is None:
            unexpected.append(name)
        else:
            by_part[part].append(name)
    if unexpected:
        raise CheckpointMismatchError(unexpected=unexpected, source=f"{source} (Sa2VA release layout)")
    return {part: rename_keys(keys, _PARTS[part][1], source=source) for part, keys in by_part.items()}


def read_sa2va_part(folder: str | Path, part: str) -> dict[str, torch.Tensor]:
    """The tensors of one part ('internvl', 'sam2' or 'text_hidden_fcs') under its own layout's
    names; only that part is read. Every key of the folder is checked first (:func:`split_sa2va_keys`)."""
    if part not in _PARTS:
        raise ValueError(f"part must be one of {sorted(_PARTS)}, got {part!r}")
    read_sa2va_config(folder)
    mapping = split_sa2va_keys(list(safetensors_weight_map(folder)), source=str(folder))[part]
    tensors = load_safetensors_folder(folder, keys=mapping)
    return {mapping[k]: v for k, v in tensors.items()}


def sa2va_internvl_config(config_dict: Mapping, *, source: str = "config.json") -> dict:
    """The InternVL part of a ``Sa2VAChatConfig`` as InternVL's original config dict (what
    :func:`.internvl.internvl_config_from_original` reads). Sa2VA's own fields (``auto_map``,
    ``template``, ``pad2square``, ...) describe its remote code or its preprocessing, not weights."""
    for key in ("use_backbone_lora", "use_llm_lora"):
        if config_dict.get(key):
            raise ValueError(
                f"{source}: {key}={config_dict[key]}: the weights would carry peft's LoRA names; a release "
                "folder has them merged (Sa2VA's exporter merges LoRA before saving)"
            )
    return {**config_dict, "architectures": ["InternVLChatModel"], "model_type": "internvl_chat"}


def check_release_tokens(folder: str | Path, tokenizer: PreTrainedTokenizerBase) -> None:
    """Make sure ``tokenizer`` gives every token in :data:`SA2VA_TOKENS` the id the folder's
    embeddings were trained with (the folder's own tokenizer files, which must agree with one
    another), and has no token beyond the folder's embedding rows. Raises ``ValueError`` naming the
    token otherwise: a ``[SEG]`` read through another row would decode nonsense silently."""
    config = read_sa2va_config(folder)
    rows = int(config["llm_config"]["vocab_size"])
    for token in SA2VA_TOKENS:
        by_file = token_ids_in_files(folder, token)
        if not by_file:
            raise ValueError(f"{folder}: no tokenizer file defines {token!r} (a Sa2VA release adds it)")
        if len(set(by_file.values())) > 1:
            raise ValueError(f"{folder}: its tokenizer files disagree on the id of {token!r}: {by_file}")
        folder_id = next(iter(by_file.values()))
        if folder_id >= rows:
            raise ValueError(f"{folder}: {token!r} has id {folder_id} but llm_config.vocab_size is {rows}")
        ours = tokenizer.convert_tokens_to_ids(token)
        if ours != folder_id:
            raise ValueError(
                f"{token!r} is id {ours} in the model's tokenizer but {folder_id} in {folder}'s tokenizer "
                "files (its embedding rows follow those ids): build the tokenizer from the release folder "
                f"(dict(type='load_pretrained_tokenizer', path={str(folder)!r}))"
            )
    if len(tokenizer) > rows:
        raise ValueError(
            f"the model's tokenizer has {len(tokenizer)} tokens but {folder} has {rows} embedding rows: the "
            "extra tokens would get untrained rows; build the tokenizer from the release folder"
        )


def load_text_hidden_fcs(folder: str | Path, module: nn.Module) -> None:
    """Load the folder's ``text_hidden_fcs.*`` into ``module`` (same layout), strictly."""
    state = {f"text_hidden_fcs.{k}": v for k, v in read_sa2va_part(folder, "text_hidden_fcs").items()}
    expected = {f"text_hidden_fcs.{k}": v for k, v in module.state_dict().items()}
    check_state_dict(state, expected, source=f"{folder} (text_hidden_fcs.*)")
    module.load_state_dict({k.removeprefix("text_hidden_fcs."): v for k, v in state.items()}, strict=True)


def save_sa2va_layout(
    folder: str | Path,
    *,
    internvl: InternVLForConditionalGeneration,
    sam2_state_dict: Mapping[str, torch.Tensor],
    text_hidden_fcs: Mapping[str, torch.Tensor],
    tokenizer: PreTrainedTokenizerBase,
    template: str = "qwen_chat",
    num_shards: int = 3,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write a folder in Sa2VA's release layout from its parts (tests and benchmarks: no download).

    ``sam2_state_dict`` is Meta's ``SAM2Base`` state dict; ``text_hidden_fcs`` the projection's state
    dict; ``dtype`` casts the floating tensors (Sa2VA ships bfloat16). The tokenizer must already
    hold Sa2VA's tokens."""
    folder = Path(folder)
    if len(tokenizer) != internvl.config.text_config.vocab_size:
        raise ValueError(f"Sa2VA saves vocab_size = len(tokenizer): {len(tokenizer)} tokens vs "
                         f"{internvl.config.text_config.vocab_size} embedding rows")
    state = dict(convert_internvl_state_dict_to_original(internvl.state_dict(), internvl.config))
    for key, tensor in sam2_state_dict.items():
        key = re.sub(r"^(memory_encoder\.fuser\.layers\.\d+)\.gamma$", r"\1.g_weight", key)
        state[SA2VA_SAM2_PREFIX + key] = tensor
    state.update({f"text_hidden_fcs.{k}": v for k, v in text_hidden_fcs.items()})
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    save_sharded_safetensors(state, folder, num_shards=num_shards)
    config = internvl_config_to_original(internvl.config)
    config.update(
        architectures=[SA2VA_ARCHITECTURE],
        model_type=SA2VA_MODEL_TYPE,
        auto_map=dict(_SA2VA_AUTO_MAP),
        template=template,
        pad2square=False,
        hidden_size=internvl.config.text_config.hidden_size,
        tie_word_embeddings=False,  # Sa2VAChatConfig always writes False (the LLM's own flag is in llm_config)
        torch_dtype=str(dtype or next(iter(state.values())).dtype).removeprefix("torch."),
    )
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    tokenizer.save_pretrained(folder)
    _write_added_tokens_v4(folder, tokenizer)
    return folder


def _write_added_tokens_v4(folder: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    """Sa2VA saved its tokenizer with transformers 4.x, which also lists the added tokens in
    ``added_tokens.json`` and in tokenizer_config.json's ``added_tokens_decoder``; transformers 5
    writes tokenizer.json only. Both are written too, so a test folder holds what a release holds."""
    decoder = {
        str(idx): {"content": t.content, "lstrip": t.lstrip, "normalized": t.normalized, "rstrip": t.rstrip,
                   "single_word": t.single_word, "special": t.special}
        for idx, t in sorted(tokenizer.added_tokens_decoder.items())
    }
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["added_tokens_decoder"] = decoder
    config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    (folder / "added_tokens.json").write_text(json.dumps(tokenizer.get_added_vocab(), indent=2), encoding="utf-8")
