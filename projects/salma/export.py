"""Export a trained SALMA checkpoint as one self-contained folder (``tools/export.py``).

    export_model(Config.fromfile(CONFIG), CKPT, OUT_DIR)

1. The model is built from the mmengine config and the checkpoint loaded exactly as the
   evaluation does (``build.build_model`` + ``checkpoint``): a trainable tensor missing from the
   checkpoint is an error (it would ship untrained), with no opt-out here.
2. :func:`~projects.salma.salma_model.as_salma_model` merges LoRA into the LLM's weights (peft's
   ``merge``: W += scaling * B @ A, computed in fp32 and stored in the base weight's dtype), builds
   the video tracker as the evaluation builds it (``test_options.sam2_memory`` or the SAM-2
   checkpoint, so its memory modules are exported too) and records the architecture and the
   readers' settings in :class:`~projects.salma.salma_model.SALMAConfig`.
3. ``SALMAModel.save_pretrained`` writes the folder.
"""
from __future__ import annotations

import torch
from mmengine.config import Config
from mmengine.logging import MMLogger

from .build import EvalOptions, build_model, plain
from .checkpoint import load_trained_weights
from .salma_model import SALMAModel, as_salma_model


def export_model(cfg: Config, checkpoint: str, out_dir: str, *, dtype: str | None = None) -> SALMAModel:
    """Build, load ``checkpoint``, merge LoRA, save the folder; returns the exported model (CPU).

    ``dtype``: cast the saved floating weights ('bfloat16' halves the folder); default: as trained.
    """
    grounding = plain(cfg.model)["grounding_encoder"]
    if grounding.get("mask_source", "pred") == "gt" and grounding.get("enable_cma", True):
        raise ValueError("model.grounding_encoder.mask_source='gt' is an oracle prior: it cannot run at inference")
    model = build_model(cfg, "none", torch.device("cpu"), int(EvalOptions.from_config(cfg).seed))
    load_trained_weights(model, checkpoint)  # a trainable tensor missing from the checkpoint is an error
    exported = as_salma_model(cfg, model, source={"checkpoint": checkpoint})
    exported.save_pretrained(out_dir, dtype=dtype)
    MMLogger.get_current_instance().info(
        f"exported {checkpoint} to {out_dir}: {exported.config.source['lora_merged_layers']} LoRA layers merged, "
        f"{len(exported.state_to_save())} tensors, propagation {exported.config.video['propagation']}")
    return exported
