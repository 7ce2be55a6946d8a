"""Warm-up hooks: ramp the CMA residual and the auxiliary-loss weights from 0 to 1.

Both ramps are linear over the first ``warmup_ratio`` of the training iterations and start at
the first iteration: iteration ``i`` (0-based) trains with ``min(1, i / warmup_iters)``. They run
before every iteration, so a resumed run recomputes the scale from the restored iteration.
"""
from __future__ import annotations

import logging
import random

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_dist_info
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from ..registry import HOOKS


def linear_warmup(iteration: int, max_iters: int, warmup_ratio: float) -> float:
    """Scale at 0-based ``iteration``: 0 at the first one, 1 from ``warmup_ratio * max_iters`` on."""
    warmup_iters = warmup_ratio * max_iters
    if warmup_iters <= 0:
        return 1.0
    return min(1.0, iteration / warmup_iters)


class _WarmupHook(Hook):
    """Calls ``setter_name(scale)`` on the model before each training iteration and logs it."""

    priority = "NORMAL"
    setter_name: str
    log_key: str

    def __init__(self, warmup_ratio: float) -> None:
        if not 0 <= warmup_ratio <= 1:
            raise ValueError(f"warmup_ratio must be in [0, 1], got {warmup_ratio}")
        self.warmup_ratio = warmup_ratio
        self._train_scale: float | None = None

    def _model(self, runner):
        model = runner.model
        while is_model_wrapper(model) or (hasattr(model, "module") and not hasattr(model, self.setter_name)):
            model = model.module  # DDP / DeepSpeed engine
        if not hasattr(model, self.setter_name):
            raise AttributeError(f"{type(self).__name__}: the model has no {self.setter_name}()")
        return model

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._train_scale = linear_warmup(runner.iter, runner.max_iters, self.warmup_ratio)
        getattr(self._model(runner), self.setter_name)(self._train_scale)
        runner.message_hub.update_scalar(f"train/{self.log_key}", self._train_scale)

    def before_val(self, runner) -> None:
        """Validation predicts with the full modules, as the exported model does."""
        getattr(self._model(runner), self.setter_name)(1.0)

    def after_val(self, runner) -> None:
        """Back to the training scale when validation ran in the middle of training."""
        if self._train_scale is not None:
            getattr(self._model(runner), self.setter_name)(self._train_scale)


@HOOKS.register_module()
class CMAWarmupHook(_WarmupHook):
    """Ramps the CMA residual (``gamma * scale``) so early, random CMA does not disturb SAM-2."""

    setter_name = "set_cma_warmup_scale"
    log_key = "cma_warmup_scale"


@HOOKS.register_module()
class AuxLossWarmupHook(_WarmupHook):
    """Ramps the TMC and boundary weights so they act once the masks are meaningful."""

    setter_name = "set_aux_loss_warmup_scale"
    log_key = "aux_loss_warmup_scale"


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Make a resumed run draw the same random numbers as an uninterrupted one, on every rank.

    mmengine 0.10.7 saves no generator state: a resumed run re-seeds, so LoRA dropout and the
    random point sampling of the mask losses draw different numbers from iteration k+1 on. This
    hook records the global generators (torch CPU, CUDA of the current device, numpy, python)
    after every iteration in the message hub, which both Runner and FlexibleRunner/DeepSpeed save
    in their checkpoints and restore on resume (DeepSpeedStrategy calls no checkpoint hooks), and
    puts that state back before the next iteration. Re-installing it every iteration, not only
    after a resume, keeps draws made between iterations (a DataLoader starting a new epoch seeds
    its workers from the global generator; validation) out of the training stream in both runs.

    Several processes: each rank draws from its own generators (different batches consume
    different amounts), and only rank 0 writes the message hub into the checkpoint. So the hub
    holds the states of all ranks, gathered after every iteration (a few kB per rank), and rank
    ``r`` restores entry ``r``. A run resumed with another number of processes cannot repeat the
    draws: it keeps its seeded generators and says so.
    """

    priority = "LOW"  # after the optimizer step and logging, before CheckpointHook (VERY_LOW)
    info_key = "rng_state"

    def __init__(self) -> None:
        self._warned = False

    @staticmethod
    def capture(iteration: int) -> dict:
        state = dict(iter=iteration, torch=torch.get_rng_state(), numpy=np.random.get_state(),
                     python=random.getstate())
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state()
        return state

    @staticmethod
    def restore(state: dict) -> None:
        torch.set_rng_state(state["torch"])
        np.random.set_state(state["numpy"])
        random.setstate(state["python"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda"])

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        states = runner.message_hub.get_info(self.info_key)
        if states is None:
            return
        if isinstance(states, dict):  # one process, written before states were kept per rank
            states = [states]
        rank, world_size = get_dist_info()
        if len(states) != world_size:
            if not self._warned and states[0]["iter"] == runner.iter:
                print_log(f"RNGStateHook: the checkpoint holds the generators of {len(states)} processes, this run has "
                          f"{world_size}; dropout and point sampling start from the seeded generators and do not "
                          "repeat the interrupted run's draws", logger="current", level=logging.WARNING)
                self._warned = True
            return
        if states[rank]["iter"] == runner.iter:
            self.restore(states[rank])

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        runner.message_hub.update_info(self.info_key, all_gather_object(self.capture(runner.iter + 1)))


@HOOKS.register_module()
class DeepSpeedGradNormHook(Hook):
    """Log ZeRO's global gradient norm as ``grad_norm``, as OptimWrapper's clipping does.

    mmengine's DeepSpeedOptimWrapper records none; the DeepSpeed engine keeps the norm it computed
    for clipping (before clipping, like ``clip_grad_norm_``). ``apply_cli(deepspeed=...)`` adds it.
    """

    priority = "NORMAL"  # before LoggerHook (BELOW_NORMAL) formats the line

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        norm = runner.model.get_global_grad_norm()
        if norm is not None:
            runner.message_hub.update_scalar("train/grad_norm", float(norm))
