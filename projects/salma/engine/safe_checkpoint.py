"""Training checkpoints that survive a kill, are checked before use, and never hold NaN.

mmengine 0.10.7's ``CheckpointHook`` deletes the oldest checkpoint *before* writing the new one,
writes the new one in place and then ``last_checkpoint``: a kill while saving leaves a stub, no
older checkpoint, and a ``last_checkpoint`` naming a deleted file. :class:`SafeCheckpointHook`
writes the checkpoint under a temporary name (flushed, then renamed: :func:`~projects.salma.safe_io.atomic_path`),
then ``last_checkpoint`` the same way, and only then removes the checkpoints beyond
``max_keep_ckpts``. It refuses to save non-finite weights and records a BLAKE2b hash of every
tensor of the model and optimizer state in ``meta`` (:data:`HASH_KEY`).

:func:`resume_checkpoint` picks what ``--resume`` loads: a named checkpoint must be intact (an error
names it otherwise); without a name, the newest intact checkpoint of the work dir, each damaged
newer one named in a warning. A work dir whose checkpoints are all damaged is an error, never a
silent restart from scratch. :class:`NonFiniteLossHook` stops a run at the first non-finite loss
(or skips such batches, counted), before the optimizer step can spread it into the weights.
"""
from __future__ import annotations

import hashlib
import logging
import os
import pickle
import re
import zipfile
from collections import deque

import torch
from mmengine.dist import get_world_size, is_main_process
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log

from ..registry import HOOKS
from ..safe_io import atomic_path, write_text_atomic
from .checkpoint import allow_mmengine_checkpoints

HASH_KEY = "content_hash"  # checkpoint['meta'][HASH_KEY] = {'blake2b': hex, 'covers': [...]}
HASHED_PARTS = ("state_dict", "optimizer")
_CHECKPOINT_NAME = re.compile(r"^(?:iter|epoch)_(\d+)\.pth$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (damaged, changed since it was saved, non-finite)."""


# ------------------------------------------------------------------ content
def _feed(h, obj, name: str) -> None:
    """Hash ``obj`` in a canonical order: names, dtypes, shapes and bytes of tensors, repr of scalars."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{obj.dtype}:{tuple(obj.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, dict):
        for key in sorted(obj, key=str):
            _feed(h, obj[key], f"{name}.{key}")
    elif isinstance(obj, (list, tuple)):
        for k, item in enumerate(obj):
            _feed(h, item, f"{name}[{k}]")
    else:
        h.update(f"{name}={obj!r}".encode())


def content_hash(checkpoint: dict) -> str:
    """Hex BLAKE2b of the checkpoint's model and optimizer state (what training resumes from)."""
    h = hashlib.blake2b()
    for part in HASHED_PARTS:
        if part in checkpoint:
            _feed(h, checkpoint[part], part)
    return h.hexdigest()


def nonfinite_tensors(state_dict: dict) -> list[str]:
    """Names of the floating tensors of ``state_dict`` holding NaN or infinity."""
    return [k for k, v in state_dict.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


def _nonfinite_message(names: list[str], total: int) -> str:
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    return f"non-finite values (NaN / inf) in {len(names)} of {total} tensors ({shown})"


def read_checkpoint(path: str):
    """``torch.load`` of ``path`` (CPU, mmengine's safe types only); CheckpointError names the file
    when it cannot be read (torch's own message names none)."""
    allow_mmengine_checkpoints()
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise CheckpointError(f"{path}: checkpoint not found") from err
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError,
            KeyError, TypeError, AttributeError) as err:
        first_line = str(err).splitlines()[0] if str(err) else ""
        raise CheckpointError(f"{path}: damaged checkpoint, cannot be read ({type(err).__name__}: "
                              f"{first_line})") from err


def check_content(path: str, checkpoint: dict, *, weights_key: str = "state_dict") -> None:
    """CheckpointError naming ``path`` if the hash recorded at save (when there is one) does not
    match the content, or the weights hold NaN / inf."""
    recorded = (checkpoint.get("meta") or {}).get(HASH_KEY)
    if isinstance(recorded, dict):
        found = content_hash(checkpoint)
        if found != recorded.get("blake2b"):
            raise CheckpointError(f"{path}: content hash blake2b {found[:16]}... does not match "
                                  f"{str(recorded.get('blake2b'))[:16]}... recorded when it was saved: the file is "
                                  "damaged")
    bad = nonfinite_tensors(checkpoint[weights_key])
    if bad:
        raise CheckpointError(f"{path}: {_nonfinite_message(bad, len(checkpoint[weights_key]))}")


def load_checked(path: str) -> dict:
    """The training checkpoint at ``path``, readable, as hashed at save, with finite weights."""
    checkpoint = read_checkpoint(path)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(f"{path}: not a training checkpoint (no 'state_dict')")
    check_content(path, checkpoint)
    return checkpoint


def verify_checkpoint(path: str) -> None:
    """Raise CheckpointError naming ``path`` unless it is an intact checkpoint (see :func:`load_checked`).
    A DeepSpeed checkpoint folder is not hashed and passes."""
    if not os.path.isdir(path):
        load_checked(path)


# ------------------------------------------------------------------ which checkpoint --resume loads
def _candidates(work_dir: str) -> list[str]:
    """The work dir's checkpoints, newest first: ``last_checkpoint``'s target, then ``iter_N.pth`` /
    ``epoch_N.pth`` by decreasing N (temporary files start with a dot and never match)."""
    found = []
    pointer = os.path.join(work_dir, "last_checkpoint")
    if os.path.isfile(pointer):
        with open(pointer, encoding="utf-8") as f:
            target = f.read().strip()
        if target:
            found.append(target)
    numbered = [(int(m.group(1)), name) for name in os.listdir(work_dir) if (m := _CHECKPOINT_NAME.match(name))]
    for _, name in sorted(numbered, reverse=True):
        path = os.path.join(work_dir, name)
        if all(os.path.abspath(path) != os.path.abspath(p) for p in found):
            found.append(path)
    return found


def resume_checkpoint(work_dir: str, load_from: str | None) -> tuple[str | None, str | None]:
    """(the checkpoint ``--resume`` loads, what to log about the choice).

    ``load_from`` if given (an error names it if damaged), else the newest intact checkpoint of
    ``work_dir`` (the note names each damaged newer one); None when the work dir holds no
    checkpoint at all (a first run starts from scratch, and the note says so). A work dir whose
    checkpoints are all damaged is a CheckpointError naming each."""
    if load_from:
        verify_checkpoint(load_from)
        return load_from, None
    candidates = _candidates(work_dir) if os.path.isdir(work_dir) else []
    if not candidates:
        return None, f"--resume: no checkpoint in {work_dir}; training starts from scratch"
    damaged = []
    for path in candidates:
        try:
            verify_checkpoint(path)
        except CheckpointError as err:
            damaged.append(str(err))
            continue
        return path, ("--resume: skipped damaged checkpoints: " + "; ".join(damaged) + f"; resuming from {path}"
                      if damaged else None)
    raise CheckpointError(f"--resume: no intact checkpoint in {work_dir}: " + "; ".join(damaged))


# ------------------------------------------------------------------ saving
@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """mmengine's CheckpointHook, crash-safe: write the new checkpoint (temporary name, flushed,
    renamed), then ``last_checkpoint``, then remove the old ones; refuse non-finite weights; record
    the content hash. ``build_runner`` puts it in place of ``CheckpointHook``."""

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        bad = nonfinite_tensors(checkpoint["state_dict"])
        if bad:
            raise CheckpointError(f"iteration {runner.iter + 1}: not saving a checkpoint with "
                                  f"{_nonfinite_message(bad, len(checkpoint['state_dict']))}")
        checkpoint.setdefault("meta", {})[HASH_KEY] = {"blake2b": content_hash(checkpoint),
                                                      "covers": [p for p in HASHED_PARTS if p in checkpoint]}

    def _save_checkpoint_with_step(self, runner, step, meta):
        expired = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            keep = deque(self.keep_ckpt_ids)
            keep.append(step)
            while len(keep) > self.max_keep_ckpts:
                expired.append(keep.popleft())
            self.keep_ckpt_ids = keep
            runner.message_hub.update_info("keep_ckpt_ids", list(keep))
        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
        runner.message_hub.update_info("last_ckpt", self.last_ckpt)
        save = dict(save_optimizer=self.save_optimizer, save_param_scheduler=self.save_param_scheduler, meta=meta,
                    by_epoch=self.by_epoch, backend_args=self.backend_args, **self.args)
        if get_world_size() > 1:
            # Several processes take part (DeepSpeed writes one shard per rank into one folder) and
            # each would pick its own temporary name: write under the final name; the pointer and
            # the removal of old checkpoints still come only after it.
            runner.save_checkpoint(self.out_dir, ckpt_filename, self.file_client_args, **save)
        else:
            with atomic_path(self.last_ckpt) as tmp:
                runner.save_checkpoint(self.out_dir, os.path.basename(tmp), self.file_client_args, **save)
        if not is_main_process():
            return
        write_text_atomic(os.path.join(runner.work_dir, "last_checkpoint"), self.last_ckpt)
        for old in expired:  # only now: the new checkpoint and its pointer are complete
            path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(old))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):
                self.file_backend.rmtree(path)  # DeepSpeed checkpoints are folders


# ------------------------------------------------------------------ non-finite losses
def _plain_model(model):
    while hasattr(model, "module") and not hasattr(model, "parse_losses"):
        model = model.module
    while hasattr(model, "module") and hasattr(model.module, "parse_losses"):
        model = model.module  # DDP / DeepSpeed wrappers call module.parse_losses
    return model


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Stop training at the first non-finite loss, naming the iteration and every loss term; with
    ``action='skip'`` drop that batch instead (no backward, no step; counted in the log as
    ``nonfinite_skipped``) and stop after ``max_skips`` of them.

    The check sits in the model's ``parse_losses``, between the forward and the optimizer step, so
    a NaN never reaches the weights (nor, through them, a checkpoint)."""

    priority = "VERY_HIGH"
    ACTIONS = ("raise", "skip")

    def __init__(self, action: str = "raise", max_skips: int = 10) -> None:
        if action not in self.ACTIONS:
            raise ValueError(f"NonFiniteLossHook: action must be one of {self.ACTIONS}, got {action!r}")
        self.action, self.max_skips, self.skipped = action, max_skips, 0
        self._model = None

    def before_train(self, runner) -> None:
        self._model = _plain_model(runner.model)
        plain = type(self._model).parse_losses.__get__(self._model)
        self._model.parse_losses = lambda losses: self._checked(runner, *plain(losses))

    def after_train(self, runner) -> None:
        if self._model is not None:
            self._model.__dict__.pop("parse_losses", None)

    def _checked(self, runner, loss: torch.Tensor, log_vars: dict):
        if bool(torch.isfinite(loss)):
            return loss, log_vars
        terms = ", ".join(f"{k}={float(v):.4g}" for k, v in log_vars.items())
        where = f"iteration {runner.iter + 1}: the loss is not finite ({terms})"
        if self.action == "raise":
            raise FloatingPointError(f"{where}; stopped before the optimizer step (the weights and checkpoints are "
                                     "finite). NonFiniteLossHook(action='skip') drops such batches instead")
        self.skipped += 1
        if self.skipped > self.max_skips:
            raise FloatingPointError(f"{where}; {self.skipped} batches with a non-finite loss, more than "
                                     f"max_skips={self.max_skips}")
        print_log(f"{where}; batch skipped ({self.skipped} so far)", logger="current", level=logging.WARNING)
        finite = {k: v for k, v in log_vars.items() if bool(torch.isfinite(torch.as_tensor(v)))}
        zero = torch.zeros((), device=loss.device, dtype=loss.dtype, requires_grad=True)  # no gradient anywhere
        return zero, {**finite, "nonfinite_skipped": torch.tensor(float(self.skipped))}


def make_crash_safe(cfg) -> str | None:
    """In place: ``CheckpointHook`` becomes :class:`SafeCheckpointHook`, and a :class:`NonFiniteLossHook`
    (raise) is added unless the config has one; ``--resume`` loads :func:`resume_checkpoint`'s choice.
    Returns the note on that choice, for the run's log."""
    hook = (cfg.get("default_hooks") or {}).get("checkpoint")
    if hook is not None and hook.get("type") in ("CheckpointHook", CheckpointHook):
        hook["type"] = "SafeCheckpointHook"
    custom = list(cfg.get("custom_hooks") or [])
    if not any(h.get("type") in ("NonFiniteLossHook", NonFiniteLossHook) for h in custom):
        cfg.custom_hooks = [*custom, dict(type="NonFiniteLossHook")]
    if not cfg.get("resume"):
        return None
    cfg.load_from, note = resume_checkpoint(cfg.work_dir, cfg.get("load_from"))
    cfg.resume = cfg.load_from is not None
    return note
