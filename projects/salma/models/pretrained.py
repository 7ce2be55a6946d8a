"""``model.pretrained=FOLDER``: a training that starts from a published Sa2VA folder or from a SALMA
export (the folder ``tools/export.py`` writes), so a model can be fine-tuned on new data.

- A Sa2VA release: :mod:`.sa2va_release` (InternVL, SAM-2 and ``text_hidden_fcs`` from the folder;
  CMA and LoRA fresh).
- A SALMA export: the architecture comes from its ``config.json`` (InternVL and SAM-2 configs,
  replacing ``mllm.model_path`` / ``mllm.config`` and ``grounding_encoder.sam2``) and every weight
  from its ``model.safetensors`` (size and hash checked). The export's LoRA is already merged into
  the LLM, so the config's LoRA is added fresh on top (B = 0): step 0 predicts exactly as the
  export. The tokenizer must be the export's (same ids: give ``load_pretrained_tokenizer`` on the
  folder); the config's grounding settings must fit the exported tensors (a missing, extra or
  mis-shaped tensor is an error naming it), except CMA, which is added fresh (zero gain) when the
  export has none. SAM-2's memory modules (``tracker.*``) are not part of the training model:
  video evaluation with ``propagation='memory'`` reads them from ``test_options.sam2_memory``.
"""
from __future__ import annotations

import os

import torch
from mmengine.logging import MMLogger
from safetensors.torch import load_file

from ..datasets.io import read_json
from ..datasets.tokenizer import build_tokenizer
from .convert.sa2va import is_sa2va_folder
from .export_format import CONFIG_NAME, WEIGHTS_KEY, WEIGHTS_NAME, check_weights_file, read_config
from .sa2va_release import init_from_release, release_submodule_cfgs

FRESH_PREFIXES = ("grounding_encoder.cma.",)  # may be absent from an export: added at zero gain
EXPORT_ONLY_PREFIX = "tracker."  # SAM-2 memory modules: the tracker's, not the training model's
WARMUP_STATE = ("aux_loss_scale",)  # the aux-loss warm-up's scale: the training's own (its hook sets it)


def is_salma_export(folder: str) -> bool:
    """A folder written by ``SALMAModel.save_pretrained`` (``config.json`` with format 'salma')."""
    path = os.path.join(str(folder), "config.json")
    return os.path.isfile(path) and read_json(path).get("format") == "salma"


def pretrained_submodule_cfgs(folder: str, mllm: dict, grounding_encoder: dict) -> tuple[dict, dict]:
    """The submodule configs of a model that starts from ``folder`` (a Sa2VA release or an export)."""
    if is_salma_export(folder):
        return export_submodule_cfgs(folder, mllm, grounding_encoder)
    return release_submodule_cfgs(folder, mllm, grounding_encoder)


def init_from_pretrained(model, folder: str) -> None:
    """Load what the submodules did not load themselves from ``folder``."""
    if is_salma_export(folder):
        init_from_export(model, folder)
    else:
        init_from_release(model, folder)


def export_submodule_cfgs(folder: str, mllm: dict, grounding_encoder: dict) -> tuple[dict, dict]:
    """InternVL and SAM-2 built from the export's architecture (random weights, loaded after)."""
    config = read_config(folder)
    section = "internvl" if config.get("internvl") is not None else "qwen_vl"
    if (section == "internvl") != (mllm.get("type", "InternVLMLLM") == "InternVLMLLM"):
        raise ValueError(f"model.pretrained={folder!r} is an export of a {section} model but model.mllm.type is "
                         f"{mllm.get('type')!r}: fine-tune it with the config of its family")
    mllm = {**mllm, "model_path": None, "config": config[section]}
    return mllm, {**grounding_encoder, "sam2": {"config": config["sam2"]}}


def export_key(key: str) -> str:
    """The exported name of a training-model tensor: peft's ``base_layer`` is the merged layer."""
    return key.replace(".base_layer.", ".")


def init_from_export(model, folder: str) -> None:
    """Every tensor of the model from the export, but LoRA's (fresh) and, if the export has none,
    CMA's; the tokenizer must give the export's ids."""
    check_export_tokenizer(folder, model.tokenizer)
    weights = os.path.join(folder, WEIGHTS_NAME)
    check_weights_file(weights, read_config(folder).get(WEIGHTS_KEY), config_path=os.path.join(folder, CONFIG_NAME))
    state = {k: v for k, v in load_file(weights).items()
             if not k.startswith(EXPORT_ONLY_PREFIX) and k not in WARMUP_STATE}
    targets = {export_key(k): (k, t) for k, t in model.state_dict(keep_vars=True).items() if "lora_" not in k}
    missing = sorted(k for k in targets if k not in state)
    fresh = [k for k in missing if k.startswith(FRESH_PREFIXES)]
    problems = [f"missing {k}" for k in missing if k not in fresh]
    problems += [f"unexpected {k} (the config has no such tensor)" for k in sorted(set(state) - set(targets))]
    problems += [f"{k}: exported {tuple(state[k].shape)}, the config builds {tuple(t.shape)}"
                 for k, (_, t) in sorted(targets.items()) if k in state and state[k].shape != t.shape]
    if problems:
        raise ValueError(f"{weights}: the config does not build the exported model ({len(problems)} tensors): "
                         + "; ".join(problems[:12]) + ("; ..." if len(problems) > 12 else ""))
    with torch.no_grad():
        for key, (_, target) in targets.items():
            if key in state:
                target.copy_(state[key])
    MMLogger.get_current_instance().info(
        f"initialised from the export {folder}: {len(targets) - len(fresh)} tensors loaded; fresh: LoRA"
        + (f", {len(fresh)} CMA tensors (not in the export)" if fresh else ""))


def check_export_tokenizer(folder: str, tokenizer) -> None:
    """The model's tokenizer must map every token as the export's does (the embeddings' rows)."""
    exported = build_tokenizer(dict(type="load_pretrained_tokenizer", path=str(folder))).get_vocab()
    ours = tokenizer.get_vocab()
    if exported != ours:
        differ = sorted(t for t in set(exported) | set(ours) if exported.get(t) != ours.get(t))
        raise ValueError(f"{folder}: the config's tokenizer is not the export's ({len(differ)} tokens differ, e.g. "
                         f"{differ[:5]}); use tokenizer=dict(type='load_pretrained_tokenizer', path={str(folder)!r}) "
                         f"for the model and the readers")


__all__ = ["is_salma_export", "is_sa2va_folder", "pretrained_submodule_cfgs", "init_from_pretrained",
           "export_submodule_cfgs", "init_from_export"]
