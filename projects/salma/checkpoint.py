"""Load a trained SALMA checkpoint into a model built from its config, for evaluation.

An mmengine checkpoint file holds ``state_dict`` (optimizer / message-hub state are ignored); the
folder mmengine's DeepSpeed strategy writes holds the weights under ``module``. Either may hold
every weight or only the trainable ones (LoRA, embeddings, decoder, CMA, projection): the frozen
rest comes from the pretrained paths in the model config. So loading is non-strict, but never
blind: a checkpoint key the model does not have, or a shape mismatch, is an error (wrong config or
wrong file), and so are trainable weights the checkpoint lacks (they would stay as initialised: a
missing CMA, whose gain starts at 0, silently evaluates a Sa2VA), unless explicitly allowed.

:func:`checkpoint_fingerprint` hashes the file the weights come from, so a rerun notices a new
checkpoint copied to the same path (evaluation resume keys its saved results on it).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import torch
from mmengine.logging import MMLogger
from torch import nn

from .engine.checkpoint import allow_mmengine_checkpoints
from .engine.safe_checkpoint import check_content, read_checkpoint
from .fingerprint import HASH, file_digest

DEEPSPEED_MODEL_FILE = "mp_rank_00_model_states.pt"


@dataclass
class LoadReport:
    path: str
    loaded: int = 0
    missing_trainable: list[str] = field(default_factory=list)
    missing_frozen: int = 0


def weights_file(path: str) -> str:
    """The file a checkpoint's model weights are read from: the file itself, or the model file of
    a DeepSpeed checkpoint folder."""
    if os.path.isdir(path):
        return os.path.join(path, DEEPSPEED_MODEL_FILE)
    return path


def checkpoint_fingerprint(path: str) -> dict | str:
    """``{'bytes', 'blake2b'}`` of the checkpoint's weights file ('none': no checkpoint)."""
    if path == "none":
        return "none"
    file = weights_file(path)
    start = time.perf_counter()
    value = {"bytes": os.path.getsize(file), HASH: file_digest(file)}
    seconds = time.perf_counter() - start
    MMLogger.get_current_instance().info(
        f"{file}: {HASH} {value[HASH][:16]}... ({value['bytes'] / 2 ** 20:.1f} MiB hashed in {seconds:.2f} s)")
    return value


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """The model weights of an mmengine checkpoint file (``state_dict``) or of the folder that
    mmengine's DeepSpeed strategy (ZeRO-1/2) saves with the optimizer
    (``<path>/mp_rank_00_model_states.pt``, key ``module``)."""
    allow_mmengine_checkpoints()
    if os.path.isdir(path):
        file, key = os.path.join(path, DEEPSPEED_MODEL_FILE), "module"
        if not os.path.isfile(file):
            raise FileNotFoundError(f"{path} is a folder without {DEEPSPEED_MODEL_FILE} (found {sorted(os.listdir(path))[:10]})")
    else:
        file, key = path, "state_dict"
    checkpoint = read_checkpoint(file)
    if not isinstance(checkpoint, dict) or key not in checkpoint:
        keys = sorted(checkpoint)[:10] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(f"{file}: no {key!r} in this checkpoint (found {keys})")
    check_content(file, checkpoint, weights_key=key)  # the hash recorded at save; finite weights
    return checkpoint[key]


def load_trained_weights(model: nn.Module, path: str, *, allow_missing: bool = False) -> LoadReport:
    """Load ``path``'s model weights into ``model``; raise on unexpected keys or shapes, and on
    trainable tensors the checkpoint lacks unless ``allow_missing`` (then they are only logged).

    Uses torch's safe unpickler with mmengine's checkpoint types allowed
    (``engine.checkpoint.allow_mmengine_checkpoints``), never arbitrary pickles.
    """
    state = read_state_dict(path)
    own = model.state_dict()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    unexpected = sorted(k for k in state if k not in own)
    if unexpected:
        raise ValueError(
            f"{path}: {len(unexpected)} checkpoint keys are not in the model built from the config "
            f"(wrong config?): {unexpected[:10]}")
    mismatched = [f"{k}: {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in state if state[k].shape != own[k].shape]
    if mismatched:
        raise ValueError(f"{path}: shape mismatch: {mismatched[:10]}")
    missing_trainable = sorted(trainable - set(state))
    if missing_trainable and not allow_missing:
        raise ValueError(
            f"{path}: {len(missing_trainable)} trainable tensors are not in the checkpoint and would stay as "
            f"initialised (wrong or partial checkpoint?): {missing_trainable[:10]}. To evaluate such a model "
            f"deliberately: tools/test.py --allow-missing-weights")
    model.load_state_dict(state, strict=False)
    report = LoadReport(
        path=path,
        loaded=len(state),
        missing_trainable=missing_trainable,
        missing_frozen=len(set(own) - set(state) - trainable),
    )
    logger = MMLogger.get_current_instance()
    logger.info(f"{path}: loaded {report.loaded} tensors; {report.missing_frozen} frozen tensors keep the "
                f"config's pretrained weights")
    if report.missing_trainable:
        logger.warning(f"{path}: {len(report.missing_trainable)} trainable tensors are NOT in the checkpoint and "
                       f"stay as initialised: {report.missing_trainable[:10]}")
    return report
