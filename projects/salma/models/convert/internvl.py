"""InternVL2.5 / 3 / 3.5 in their original remote-code layout (``InternVLChatModel``) <->
transformers' native ``InternVLForConditionalGeneration``.

Original layout (e.g. OpenGVLab/InternVL2_5-1B, InternVL3-2B, InternVL3_5-2B): ``config.json`` with
``llm_config`` (Qwen2 for 2.5-1B/4B and InternVL3, Qwen3 for InternVL3.5) and
``vision_config`` (InternViT), sharded safetensors with ``vision_model.*`` (one FUSED ``attn.qkv``
per layer), ``mlp1.{0,1,3}`` (LayerNorm, Linear, GELU, Linear), ``language_model.model.*`` and
``language_model.lm_head.weight`` (the remote code builds its LLM with
``AutoModelForCausalLM.from_config(llm_config)``, so these are that class's own keys; Qwen3 adds
``self_attn.q_norm`` / ``k_norm``). The native layout splits qkv into ``q_proj`` / ``k_proj`` /
``v_proj`` and renames the rest (as transformers' ``convert_internvl_weights_to_hf.py`` does, which
is not shipped in the wheel and loads the original through remote code; here the safetensors are
read directly). The tokenizer files stay in the folder; the caller loads them with
``datasets.tokenizer.load_pretrained_tokenizer`` (local files, never the remote code).

The inverse mapping (native -> original, fusing q/k/v) writes original-layout folders, which the
tests use to check the reader without downloading anything.
"""
from __future__ import annotations

import json
import re
import warnings
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import torch
from transformers import (
    InternVLConfig,
    InternVLForConditionalGeneration,
    InternVLVisionConfig,
    LlamaConfig,
    Qwen2Config,
    Qwen3Config,
)

from ...constants import IMG_CONTEXT_TOKEN
from .common import (
    CheckpointMismatchError,
    RenameRule,
    check_state_dict,
    load_safetensors_folder,
    matches_any,
    rename_keys,
    save_sharded_safetensors,
)
from .sa2va_layout import is_sa2va_config, read_sa2va_part, sa2va_internvl_config

__all__ = [
    "is_original_internvl",
    "token_ids_in_files",
    "find_image_token_id",
    "internvl_config_from_original",
    "internvl_config_to_original",
    "convert_internvl_state_dict",
    "convert_internvl_state_dict_to_original",
    "save_internvl_original_layout",
    "load_internvl",
    "convert_internvl_checkpoint",
]

# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------

# LLMs whose original keys (``language_model.model.*``, ``language_model.lm_head``) are already the
# native text model's keys: Qwen2 (InternVL2.5-1B/4B, InternVL3 on Qwen2.5), Qwen3 (dense InternVL3.5),
# Llama. Not supported, refused by name: InternLM2 (InternVL2.5-2B/8B/26B: fused ``wqkv``), InternLM3
# (InternVL3-9B), Qwen3-MoE (InternVL3.5-30B-A3B / 241B-A28B: per-expert keys), GPT-OSS
# (InternVL3.5-GPT-OSS-20B-A4B), Phi-3.
_LLM_CONFIGS = {"Qwen2ForCausalLM": Qwen2Config, "Qwen3ForCausalLM": Qwen3Config, "LlamaForCausalLM": LlamaConfig}
_LLM_ARCHITECTURES = {config.model_type: arch for arch, config in _LLM_CONFIGS.items()}  # native -> original

# llm_config entries that only the remote code or the original training stack read.
_LLM_CONFIG_DROP = ("_name_or_path", "auto_map", "moe_config", "attn_implementation", "_attn_implementation_autoset")

# Original top-level entries that describe preprocessing (tiling, prompt template), not the network:
# kept verbatim on the native config so a converted folder still carries them.
PREPROCESSING_KEYS = ("template", "dynamic_image_size", "use_thumbnail", "min_dynamic_patch", "max_dynamic_patch")


def is_original_internvl(config_dict: Mapping) -> bool:
    """Whether a config.json is the original remote-code layout."""
    architectures = config_dict.get("architectures") or []
    return "InternVLChatModel" in architectures or config_dict.get("model_type") == "internvl_chat"


def token_ids_in_files(folder: str | Path, token: str) -> dict[str, int]:
    """``{file name: id}`` of ``token`` in each tokenizer file of ``folder`` that lists it
    (tokenizer.json's added tokens, added_tokens.json, tokenizer_config.json's added_tokens_decoder),
    in that order. Several files may record the same token; callers decide what disagreement means."""
    folder = Path(folder)
    found: dict[str, int] = {}
    tokenizer_json = folder / "tokenizer.json"
    if tokenizer_json.is_file():
        for entry in json.loads(tokenizer_json.read_text(encoding="utf-8")).get("added_tokens", []):
            if entry.get("content") == token:
                found[tokenizer_json.name] = int(entry["id"])
    added = folder / "added_tokens.json"
    if added.is_file() and token in (table := json.loads(added.read_text(encoding="utf-8"))):
        found[added.name] = int(table[token])
    tok_config = folder / "tokenizer_config.json"
    if tok_config.is_file():
        for idx, entry in json.loads(tok_config.read_text(encoding="utf-8")).get("added_tokens_decoder", {}).items():
            if entry.get("content") == token:
                found[tok_config.name] = int(idx)
    return found


def find_image_token_id(folder: str | Path, token: str = IMG_CONTEXT_TOKEN) -> int:
    """Id of ``<IMG_CONTEXT>`` from the tokenizer files in ``folder`` (tokenizer.json,
    added_tokens.json or tokenizer_config.json, the first that lists it). The original config does
    not store it: the remote code sets it at run time from the tokenizer."""
    found = token_ids_in_files(folder, token)
    if not found:
        raise ValueError(f"{folder}: no tokenizer file defines {token!r}; pass image_token_id explicitly")
    return next(iter(found.values()))


def _vision_config_from_original(vc: Mapping) -> InternVLVisionConfig:
    """InternViT config -> InternVLVisionConfig, refusing what the native model cannot represent."""
    if vc.get("use_moe"):
        raise ValueError("InternViT with use_moe=True has no native transformers equivalent")
    norm_type = vc.get("norm_type", "rms_norm")
    if norm_type not in ("layer_norm", "rms_norm"):
        raise ValueError(f"unknown InternViT norm_type {norm_type!r}")
    eps = vc.get("layer_norm_eps", 1e-6)
    if vc.get("qk_normalization", False) and eps != 1e-6:
        # the original q_norm / k_norm use layer_norm_eps; transformers' use a fixed 1e-6
        raise ValueError(f"qk_normalization with layer_norm_eps={eps} cannot be represented (transformers fixes 1e-6)")
    if vc.get("drop_path_rate", 0.0) > 0:
        warnings.warn(
            f"InternViT drop_path_rate={vc['drop_path_rate']} is not applied: transformers' InternVLVisionModel "
            "has no stochastic depth (training-time only; inference is unaffected)",
            stacklevel=3,
        )
    return InternVLVisionConfig(
        hidden_size=vc["hidden_size"],
        num_hidden_layers=vc["num_hidden_layers"],
        num_attention_heads=vc["num_attention_heads"],
        intermediate_size=vc["intermediate_size"],
        hidden_act=vc.get("hidden_act", "gelu"),
        attention_bias=vc.get("qkv_bias", False),
        use_qk_norm=vc.get("qk_normalization", False),
        norm_type=norm_type,
        layer_norm_eps=eps,
        image_size=vc["image_size"],
        patch_size=vc["patch_size"],
        num_channels=vc.get("num_channels", 3),
        attention_dropout=vc.get("attention_dropout", 0.0),
        projection_dropout=vc.get("dropout", 0.0),  # the original applies ``dropout`` after attn.proj only
        hidden_dropout_prob=0.0,
        initializer_range=vc.get("initializer_range", 0.02),
        layer_scale_init_value=vc.get("initializer_factor", 0.1),  # ls1 / ls2 start at initializer_factor
        use_mean_pooling=True,  # InternViT has no final norm (native: Identity)
        use_absolute_position_embeddings=True,
        use_mask_token=False,
    )


def internvl_config_from_original(orig: Mapping, image_token_id: int) -> InternVLConfig:
    """Native config from an original ``InternVLChatConfig`` dict (its config.json).

    ``image_token_id`` is the tokenizer's ``<IMG_CONTEXT>`` id (:func:`find_image_token_id`)."""
    if not is_original_internvl(orig):
        raise ValueError("not an original InternVL config (architectures lacks 'InternVLChatModel')")
    if orig.get("ps_version", "v1") != "v2":
        raise ValueError(f"ps_version={orig.get('ps_version')!r}: transformers implements pixel shuffle v2 only")
    llm = dict(orig["llm_config"])
    arch = (llm.get("architectures") or ["Qwen2ForCausalLM"])[0]
    if arch not in _LLM_CONFIGS:
        raise ValueError(f"LLM {arch} is not supported (supported: {sorted(_LLM_CONFIGS)})")
    for key in _LLM_CONFIG_DROP:
        llm.pop(key, None)
    llm["use_cache"] = True  # the original training config disables the KV cache; generation wants it
    text_config = _LLM_CONFIGS[arch](**llm)

    vision_config = _vision_config_from_original(orig["vision_config"])
    image_size = vision_config.image_size[0]
    if orig.get("force_image_size") not in (None, image_size):
        raise ValueError(
            f"force_image_size={orig['force_image_size']} differs from vision image_size={image_size}: "
            "the position embedding would need resizing"
        )
    patches = image_size // vision_config.patch_size[0]
    downsample_ratio = float(orig.get("downsample_ratio", 0.5))
    extras = {k: orig[k] for k in PREPROCESSING_KEYS if k in orig}
    return InternVLConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_id=image_token_id,
        image_seq_length=int(patches**2 * downsample_ratio**2),
        downsample_ratio=downsample_ratio,
        projector_hidden_act="gelu",  # mlp1[2] is nn.GELU() (exact)
        vision_feature_layer=int(orig.get("select_layer", -1)),
        vision_feature_select_strategy="default",  # drop the CLS token, as extract_feature does
        tie_word_embeddings=bool(llm.get("tie_word_embeddings", False)),
        architectures=["InternVLForConditionalGeneration"],
        **extras,
    )


def internvl_config_to_original(config: InternVLConfig) -> dict:
    """Original-style config.json dict for a native config (the inverse of
    :func:`internvl_config_from_original`; the ``<IMG_CONTEXT>`` id lives in the tokenizer)."""
    vc, tc = config.vision_config, config.text_config
    if config.vision_feature_select_strategy != "default":
        raise ValueError("the original layout always drops the CLS token (vision_feature_select_strategy='default')")
    llm = tc.to_dict()
    if tc.model_type not in _LLM_ARCHITECTURES:
        raise ValueError(f"text_config model_type {tc.model_type!r} has no original layout here "
                         f"(supported: {sorted(_LLM_ARCHITECTURES)})")
    llm["architectures"] = [_LLM_ARCHITECTURES[tc.model_type]]
    # the original configs predate ``rope_parameters``: rope_theta + rope_scaling (as InternVL2.5 ships)
    rope = dict(llm.pop("rope_parameters", None) or {})
    llm["rope_theta"] = rope.pop("rope_theta", 10000.0)
    if rope.get("rope_type", "default") != "default":
        llm["rope_scaling"] = rope
    return {
        "architectures": ["InternVLChatModel"],
        "model_type": "internvl_chat",
        "downsample_ratio": config.downsample_ratio,
        "force_image_size": vc.image_size[0],
        "ps_version": "v2",
        "select_layer": config.vision_feature_layer,
        "tie_word_embeddings": config.tie_word_embeddings,
        "use_backbone_lora": 0,
        "use_llm_lora": 0,
        **{k: getattr(config, k) for k in PREPROCESSING_KEYS if hasattr(config, k)},
        "llm_config": llm,
        "vision_config": {
            "architectures": ["InternVisionModel"],
            "model_type": "intern_vit_6b",
            "hidden_size": vc.hidden_size,
            "num_hidden_layers": vc.num_hidden_layers,
            "num_attention_heads": vc.num_attention_heads,
            "intermediate_size": vc.intermediate_size,
            "hidden_act": vc.hidden_act,
            "qkv_bias": vc.attention_bias,
            "qk_normalization": vc.use_qk_norm,
            "norm_type": vc.norm_type,
            "layer_norm_eps": vc.layer_norm_eps,
            "image_size": vc.image_size[0],
            "patch_size": vc.patch_size[0],
            "num_channels": vc.num_channels,
            "attention_dropout": vc.attention_dropout,
            "dropout": vc.projection_dropout,
            "drop_path_rate": 0.0,
            "initializer_range": vc.initializer_range,
            "initializer_factor": vc.layer_scale_init_value,
            "use_flash_attn": False,
        },
    }


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------

_WB = r"(weight|bias)"
_V_ORIG, _V_NATIVE = r"vision_model", "model.vision_tower"
_L_ORIG, _L_NATIVE = r"vision_model\.encoder\.layers\.(\d+)", r"model.vision_tower.encoder.layer.\1"

# original -> native; the fused qkv is split separately (_QKV)
_TO_NATIVE: list[RenameRule] = [
    RenameRule(rf"{_V_ORIG}\.embeddings\.class_embedding", f"{_V_NATIVE}.embeddings.cls_token"),
    RenameRule(rf"{_V_ORIG}\.embeddings\.position_embedding", f"{_V_NATIVE}.embeddings.position_embeddings"),
    RenameRule(rf"{_V_ORIG}\.embeddings\.patch_embedding\.{_WB}", rf"{_V_NATIVE}.embeddings.patch_embeddings.projection.\1"),
    RenameRule(rf"{_L_ORIG}\.attn\.proj\.{_WB}", rf"{_L_NATIVE}.attention.projection_layer.\2"),
    RenameRule(rf"{_L_ORIG}\.attn\.(q_norm|k_norm)\.weight", rf"{_L_NATIVE}.attention.\2.weight"),
    RenameRule(rf"{_L_ORIG}\.norm1\.{_WB}", rf"{_L_NATIVE}.layernorm_before.\2"),
    RenameRule(rf"{_L_ORIG}\.norm2\.{_WB}", rf"{_L_NATIVE}.layernorm_after.\2"),
    RenameRule(rf"{_L_ORIG}\.mlp\.(fc1|fc2)\.{_WB}", rf"{_L_NATIVE}.mlp.\2.\3"),
    RenameRule(rf"{_L_ORIG}\.ls([12])", rf"{_L_NATIVE}.lambda_\2"),
    # mlp1 = Sequential(LayerNorm, Linear, GELU, Linear)
    RenameRule(rf"mlp1\.0\.{_WB}", r"model.multi_modal_projector.layer_norm.\1"),
    RenameRule(rf"mlp1\.1\.{_WB}", r"model.multi_modal_projector.linear_1.\1"),
    RenameRule(rf"mlp1\.3\.{_WB}", r"model.multi_modal_projector.linear_2.\1"),
    # the LLM is the same transformers class in both layouts: only the prefix moves
    RenameRule(r"language_model\.model\.(.+)", r"model.language_model.\1"),
    RenameRule(r"language_model\.lm_head\.weight", r"lm_head.weight"),
]
_QKV = rf"{_L_ORIG}\.attn\.qkv\.{_WB}"

# native -> original (inverse of the table above); q/k/v are fused separately (_QKV_NATIVE)
_N = r"model\.vision_tower"
_NL = r"model\.vision_tower\.encoder\.layer\.(\d+)"
_TO_ORIGINAL: list[RenameRule] = [
    RenameRule(rf"{_N}\.embeddings\.cls_token", "vision_model.embeddings.class_embedding"),
    RenameRule(rf"{_N}\.embeddings\.position_embeddings", "vision_model.embeddings.position_embedding"),
    RenameRule(rf"{_N}\.embeddings\.patch_embeddings\.projection\.{_WB}", r"vision_model.embeddings.patch_embedding.\1"),
    RenameRule(rf"{_NL}\.attention\.projection_layer\.{_WB}", r"vision_model.encoder.layers.\1.attn.proj.\2"),
    RenameRule(rf"{_NL}\.attention\.(q_norm|k_norm)\.weight", r"vision_model.encoder.layers.\1.attn.\2.weight"),
    RenameRule(rf"{_NL}\.layernorm_before\.{_WB}", r"vision_model.encoder.layers.\1.norm1.\2"),
    RenameRule(rf"{_NL}\.layernorm_after\.{_WB}", r"vision_model.encoder.layers.\1.norm2.\2"),
    RenameRule(rf"{_NL}\.mlp\.(fc1|fc2)\.{_WB}", r"vision_model.encoder.layers.\1.mlp.\2.\3"),
    RenameRule(rf"{_NL}\.lambda_([12])", r"vision_model.encoder.layers.\1.ls\2"),
    RenameRule(rf"model\.multi_modal_projector\.layer_norm\.{_WB}", r"mlp1.0.\1"),
    RenameRule(rf"model\.multi_modal_projector\.linear_1\.{_WB}", r"mlp1.1.\1"),
    RenameRule(rf"model\.multi_modal_projector\.linear_2\.{_WB}", r"mlp1.3.\1"),
    RenameRule(r"model\.language_model\.(.+)", r"language_model.model.\1"),
    RenameRule(r"lm_head\.weight", r"language_model.lm_head.weight"),
]
_QKV_NATIVE = rf"{_NL}\.attention\.(q_proj|k_proj|v_proj)\.{_WB}"

# Keys an original checkpoint may carry that the native model legitimately lacks: rotary
# ``inv_freq`` buffers, which checkpoints saved by older transformers serialised and transformers
# now recomputes from the config (non-persistent buffers).
IGNORED_ORIGINAL_KEYS = (
    r"language_model\.model\.rotary_emb\.inv_freq",
    r"language_model\.model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq",
)


def convert_internvl_state_dict(orig_sd: Mapping[str, torch.Tensor], config: InternVLConfig) -> dict[str, torch.Tensor]:
    """Original-layout weights -> native ``InternVLForConditionalGeneration`` weights.

    The fused ``attn.qkv`` (rows ``[q; k; v]``, as the original reshapes it to ``(3, heads, head_dim)``)
    is split in three. Any key no rule covers raises :class:`CheckpointMismatchError`."""
    keys = [k for k in orig_sd if not matches_any(k, IGNORED_ORIGINAL_KEYS)]
    qkv_keys = [k for k in keys if matches_any(k, [_QKV])]
    mapping = rename_keys([k for k in keys if k not in qkv_keys], _TO_NATIVE, source="original InternVL state dict")
    out = {new: orig_sd[old] for old, new in mapping.items()}
    dim = config.vision_config.hidden_size
    for key in qkv_keys:
        fused = orig_sd[key]
        if fused.shape[0] != 3 * dim:
            expected = (3 * dim, *fused.shape[1:])
            raise CheckpointMismatchError(
                mismatched=[(key, tuple(fused.shape), expected)], source="original InternVL state dict"
            )
        layer, param = re.fullmatch(_QKV, key).groups()
        for name, part in zip(("q_proj", "k_proj", "v_proj"), fused.split(dim, dim=0)):
            out[f"model.vision_tower.encoder.layer.{layer}.attention.{name}.{param}"] = part
    if config.tie_word_embeddings:
        embed = out["model.language_model.embed_tokens.weight"]
        if "lm_head.weight" in out and not torch.equal(out["lm_head.weight"], embed):
            raise ValueError("config ties word embeddings but the checkpoint's lm_head differs from embed_tokens")
        out["lm_head.weight"] = embed
    return out


def convert_internvl_state_dict_to_original(
    native_sd: Mapping[str, torch.Tensor], config: InternVLConfig
) -> dict[str, torch.Tensor]:
    """Native weights -> original layout (q/k/v fused back into ``attn.qkv``). With tied word
    embeddings the lm_head is left out, as the original checkpoints do."""
    keys = [k for k in native_sd if not (config.tie_word_embeddings and k == "lm_head.weight")]
    qkv_keys = [k for k in keys if matches_any(k, [_QKV_NATIVE])]
    mapping = rename_keys([k for k in keys if k not in qkv_keys], _TO_ORIGINAL, source="native InternVL state dict")
    out = {new: native_sd[old].clone() for old, new in mapping.items()}
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key in qkv_keys:
        layer, proj, param = re.fullmatch(_QKV_NATIVE, key).groups()
        groups.setdefault(f"vision_model.encoder.layers.{layer}.attn.qkv.{param}", {})[proj] = native_sd[key]
    for fused_key, parts in groups.items():
        if sorted(parts) != ["k_proj", "q_proj", "v_proj"]:
            absent = {"q_proj", "k_proj", "v_proj"} - set(parts)
            raise CheckpointMismatchError(missing=[f"{fused_key} ({p})" for p in absent], source="native InternVL state dict")
        out[fused_key] = torch.cat([parts["q_proj"], parts["k_proj"], parts["v_proj"]], dim=0)
    return out


def save_internvl_original_layout(
    model: InternVLForConditionalGeneration, folder: str | Path, *, num_shards: int = 2
) -> Path:
    """Write ``model`` in the original remote-code layout: original-style config.json, safetensors
    split into ``num_shards`` shards, and ``model.safetensors.index.json``."""
    folder = Path(folder)
    state_dict = convert_internvl_state_dict_to_original(model.state_dict(), model.config)
    save_sharded_safetensors(state_dict, folder, num_shards=num_shards)
    config = internvl_config_to_original(model.config)
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return folder


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _stored_dtype(state_dict: Mapping[str, torch.Tensor]) -> torch.dtype:
    counts = Counter(t.dtype for t in state_dict.values() if t.is_floating_point())
    return counts.most_common(1)[0][0]


def _load_native(folder: Path, dtype: torch.dtype | None, **kwargs) -> InternVLForConditionalGeneration:
    model, info = InternVLForConditionalGeneration.from_pretrained(
        folder, local_files_only=True, trust_remote_code=False, dtype=dtype if dtype is not None else "auto",
        output_loading_info=True, **kwargs,
    )
    if info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"]:
        raise CheckpointMismatchError(
            missing=info["missing_keys"],
            unexpected=info["unexpected_keys"],
            mismatched=[(k, tuple(a), tuple(b)) for k, a, b in info["mismatched_keys"]],
            source=str(folder),
        )
    return model.eval()


def _load_original(
    folder: Path,
    config_dict: dict,
    dtype: torch.dtype | None,
    image_token_id: int | None,
    orig_sd: Mapping[str, torch.Tensor] | None = None,
    **kwargs,
) -> InternVLForConditionalGeneration:
    """Build from an original config and its weights (read from ``folder`` unless given)."""
    if image_token_id is None:
        image_token_id = find_image_token_id(folder)
    config = internvl_config_from_original(config_dict, image_token_id=image_token_id)
    if orig_sd is None:
        orig_sd = load_safetensors_folder(folder)
    state_dict = convert_internvl_state_dict(orig_sd, config)
    model = InternVLForConditionalGeneration._from_config(config, dtype=dtype or _stored_dtype(orig_sd), **kwargs)
    check_state_dict(state_dict, model.state_dict(), source=str(folder))
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def load_internvl(
    path: str | Path,
    *,
    dtype: torch.dtype | None = None,
    image_token_id: int | None = None,
    **model_kwargs,
) -> InternVLForConditionalGeneration:
    """Load InternVL from a local folder in either layout.

    - native (``model_type: internvl``): ``from_pretrained(path, local_files_only=True)``, with
      missing / unexpected / mismatched keys raised as :class:`CheckpointMismatchError`;
    - original (``InternVLChatModel``): converted on the fly from the sharded safetensors;
    - a Sa2VA release (``Sa2VAChatModel``, see :mod:`.sa2va`): its InternVL part, converted likewise.

    ``dtype`` None keeps the stored dtype. ``image_token_id`` defaults to the tokenizer's
    ``<IMG_CONTEXT>`` (original layout only; a native config has it). ``model_kwargs`` (e.g.
    ``attn_implementation``) go to the model constructor."""
    folder = Path(path)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{folder}: no config.json")
    config_dict = json.loads(config_path.read_text(encoding="utf-8"))
    if is_original_internvl(config_dict):
        return _load_original(folder, config_dict, dtype, image_token_id, **model_kwargs)
    if is_sa2va_config(config_dict):
        return _load_original(folder, sa2va_internvl_config(config_dict, source=str(folder)), dtype, image_token_id,
                              orig_sd=read_sa2va_part(folder, "internvl"), **model_kwargs)
    if config_dict.get("model_type") == "internvl":
        if image_token_id is not None and image_token_id != config_dict.get("image_token_id"):
            found = config_dict.get("image_token_id")
            raise ValueError(f"{folder}: image_token_id {image_token_id} given, its config has {found}")
        return _load_native(folder, dtype, **model_kwargs)
    raise ValueError(f"{folder}: neither an original InternVLChatModel, a Sa2VAChatModel nor a native 'internvl' config")


_TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.json", "merges.txt", "tokenizer.model", "chat_template.json", "chat_template.jinja",
)


def convert_internvl_checkpoint(
    model_dir: str | Path, out_dir: str | Path, *, dtype: torch.dtype | None = None, image_token_id: int | None = None
) -> Path:
    """Original-layout folder -> native folder (``save_pretrained``), copying the tokenizer files."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    model = load_internvl(model_dir, dtype=dtype, image_token_id=image_token_id)
    model.save_pretrained(out_dir)
    for name in _TOKENIZER_FILES:
        if (model_dir / name).is_file():
            (out_dir / name).write_bytes((model_dir / name).read_bytes())
    return out_dir
