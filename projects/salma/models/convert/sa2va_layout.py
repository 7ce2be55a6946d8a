"""Which tensor of a Sa2VA release folder is which part (InternVL, SAM-2, ``text_hidden_fcs``), and
reading one part: what the InternVL and SAM-2 loaders need to take their part of a release (the
folder's format: :mod:`.sa2va`, docs/formats.md)."""
from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch

from ...datasets.io import read_json
from ..export_format import CONFIG_MAX_BYTES, CONFIG_MAX_DEPTH
from .common import CheckpointMismatchError, RenameRule, load_safetensors_folder, rename_keys, safetensors_weight_map

SA2VA_ARCHITECTURE = "Sa2VAChatModel"
SA2VA_MODEL_TYPE = "sa2va_chat"
SA2VA_SAM2_PREFIX = "grounding_encoder.sam2_model."
SA2VA_QWEN_ARCHITECTURE = "Sa2VAChatModelQwen"  # a Qwen-VL release (Sa2VA-Qwen2_5-VL-3B, Sa2VA-Qwen3-VL-4B)

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


# A Qwen-VL release's parts (the rest of its format: .sa2va_qwen): the MLLM part keeps the folder's
# names (``model.`` + the native model's; older transformers' names renamed to them); SAM-2 and
# text_hidden_fcs are the InternVL release's.
QWEN_PARTS: dict[str, tuple[str, list[RenameRule]]] = {
    "qwen_vl": (
        r"model\..+",
        [
            RenameRule(r"model\.model\.(?:visual|language_model)\..+", r"\g<0>"),
            RenameRule(r"model\.lm_head\..+", r"\g<0>"),
            RenameRule(r"model\.visual\.(.+)", r"model.model.visual.\1"),  # transformers < 4.52
            RenameRule(r"model\.model\.(.+)", r"model.model.language_model.\1"),  # transformers < 4.52
        ],
    ),
    "sam2": _PARTS["sam2"],
    "text_hidden_fcs": _PARTS["text_hidden_fcs"],
}


def is_sa2va_qwen_config(config_dict: Mapping) -> bool:
    """Whether a Sa2VA config.json is a Qwen-VL release (``Sa2VAChatModelQwen``, or a ``sa2va_chat``
    config with a ``text_config`` and no InternVL ``llm_config``)."""
    if SA2VA_QWEN_ARCHITECTURE in (config_dict.get("architectures") or []):
        return True
    return (config_dict.get("model_type") == "sa2va_chat" and "text_config" in config_dict
            and "llm_config" not in config_dict)


def read_user_json(path: Path) -> dict:
    """A folder's config.json through the project's JSON reader (file named; size and depth bounded)."""
    return read_json(str(path), expect=dict, max_bytes=CONFIG_MAX_BYTES, max_depth=CONFIG_MAX_DEPTH)


def is_sa2va_config(config_dict: Mapping) -> bool:
    """Whether a config.json is a Sa2VA release (``Sa2VAChatModel``; or ``Sa2VAChatModelQwen``, the
    Qwen-VL releases of :mod:`.sa2va_qwen`, whose ``model_type`` is ``sa2va_chat`` too)."""
    architectures = config_dict.get("architectures") or []
    return (SA2VA_ARCHITECTURE in architectures or "Sa2VAChatModelQwen" in architectures
            or config_dict.get("model_type") == SA2VA_MODEL_TYPE)


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


def sa2va_parts(config_dict: Mapping) -> dict[str, tuple[str, list[RenameRule]]]:
    """The parts of a release of this config: InternVL's (``internvl``, ``sam2``,
    ``text_hidden_fcs``) or, for a Qwen-VL release, :data:`QWEN_PARTS` (``qwen_vl``
    in place of ``internvl``)."""
    return QWEN_PARTS if is_sa2va_qwen_config(config_dict) else _PARTS


def split_sa2va_keys(names: list[str], *, source: str,
                     parts: Mapping[str, tuple[str, list[RenameRule]]] | None = None) -> dict[str, dict[str, str]]:
    """``{part: {folder key: key in the part's own layout}}`` for every key of a release folder
    (``parts``: :func:`sa2va_parts`; default InternVL's).

    Raises :class:`CheckpointMismatchError` naming every key that belongs to no part (a CMA weight,
    another model's key, a typo) and any two keys of a part that land on the same name."""
    parts = _PARTS if parts is None else parts
    by_part: dict[str, list[str]] = {part: [] for part in parts}
    unexpected = []
    for name in names:
        part = next((p for p, (pattern, _) in parts.items() if re.fullmatch(pattern, name)), None)
        if part is None:
            unexpected.append(name)
        else:
            by_part[part].append(name)
    if unexpected:
        raise CheckpointMismatchError(unexpected=unexpected, source=f"{source} (Sa2VA release layout)")
    return {part: rename_keys(keys, parts[part][1], source=source) for part, keys in by_part.items()}


def read_sa2va_part(folder: str | Path, part: str) -> dict[str, torch.Tensor]:
    """The tensors of one part ('internvl', 'sam2' or 'text_hidden_fcs'; a Qwen-VL release: 'qwen_vl'
    in place of 'internvl') under its own layout's names; only that part is read. Every key of the
    folder is checked first (:func:`split_sa2va_keys`)."""
    parts = sa2va_parts(read_sa2va_config(folder))
    if part not in parts:
        raise ValueError(f"{folder}: a release of this kind has the parts {sorted(parts)}, not {part!r}")
    mapping = split_sa2va_keys(list(safetensors_weight_map(folder)), source=str(folder), parts=parts)[part]
    tensors = load_safetensors_folder(folder, keys=mapping)
    return {mapping[k]: v for k, v in tensors.items()}


def sa2va_internvl_config(config_dict: Mapping, *, source: str = "config.json") -> dict:
    """The InternVL part of a ``Sa2VAChatConfig`` as InternVL's original config dict (what
    :func:`.internvl.internvl_config_from_original` reads). Sa2VA's own fields (``auto_map``,
    ``template``, ``pad2square``, ...) describe its remote code or its preprocessing, not weights."""
    if is_sa2va_qwen_config(config_dict):
        raise ValueError(f"{source}: a Sa2VA Qwen-VL release (Sa2VAChatModelQwen) has no InternVL part: build it "
                         "with mllm.type='QwenVLMLLM' (projects/salma/models/convert/sa2va_qwen.py)")
    for key in ("use_backbone_lora", "use_llm_lora"):
        if config_dict.get(key):
            raise ValueError(
                f"{source}: {key}={config_dict[key]}: the weights would carry peft's LoRA names; a release "
                "folder has them merged (Sa2VA's exporter merges LoRA before saving)"
            )
    return {**config_dict, "architectures": ["InternVLChatModel"], "model_type": "internvl_chat"}
