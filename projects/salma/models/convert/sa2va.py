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
from .common import check_state_dict, save_sharded_safetensors
from .internvl import convert_internvl_state_dict_to_original, internvl_config_to_original, token_ids_in_files
from .sa2va_layout import (
    SA2VA_ARCHITECTURE,
    SA2VA_MODEL_TYPE,
    SA2VA_SAM2_PREFIX,
    is_sa2va_config,
    is_sa2va_folder,
    read_sa2va_config,
    read_sa2va_part,
    sa2va_internvl_config,
    split_sa2va_keys,
)

__all__ = [  # the layout readers come from .sa2va_layout (the InternVL / SAM-2 loaders read parts with them)
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

_SA2VA_AUTO_MAP = {  # what Sa2VA's exporter writes (its remote code; recorded, never imported)
    "AutoConfig": "configuration_sa2va_chat.Sa2VAChatConfig",
    "AutoModel": "modeling_sa2va_chat.Sa2VAChatModel",
    "AutoModelForCausalLM": "modeling_sa2va_chat.Sa2VAChatModel",
}

# Tokens whose ids the folder's embeddings were trained with: InternVL's image tokens and the five
# Sa2VA (= SALMA) tokens.
SA2VA_TOKENS = (IMG_START_TOKEN, IMG_END_TOKEN, IMG_CONTEXT_TOKEN, *SPECIAL_TOKENS)

def check_release_tokens(folder: str | Path, tokenizer: PreTrainedTokenizerBase) -> None:
    """Make sure ``tokenizer`` gives every token in :data:`SA2VA_TOKENS` the id the folder's
    embeddings were trained with (the folder's own tokenizer files, which must agree with one
    another), and has no token beyond the folder's embedding rows. Raises ``ValueError`` naming the
    token otherwise: a ``[SEG]`` read through another row would decode nonsense silently."""
    config = read_sa2va_config(folder)
    check_token_ids(folder, tokenizer, SA2VA_TOKENS, rows=int(config["llm_config"]["vocab_size"]),
                    rows_key="llm_config.vocab_size")


def check_token_ids(folder: str | Path, tokenizer: PreTrainedTokenizerBase, tokens, *, rows: int,
                    rows_key: str) -> None:
    """:func:`check_release_tokens` for ``tokens`` and a folder with ``rows`` embedding rows (its
    config's ``rows_key``); shared by the InternVL and Qwen-VL releases."""
    for token in tokens:
        by_file = token_ids_in_files(folder, token)
        if not by_file:
            raise ValueError(f"{folder}: no tokenizer file defines {token!r} (a Sa2VA release has it)")
        if len(set(by_file.values())) > 1:
            raise ValueError(f"{folder}: its tokenizer files disagree on the id of {token!r}: {by_file}")
        folder_id = next(iter(by_file.values()))
        if folder_id >= rows:
            raise ValueError(f"{folder}: {token!r} has id {folder_id} but {rows_key} is {rows}")
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
