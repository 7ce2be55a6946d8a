"""Test-only hook for processes started by tools/dist_train.sh (tests/test_distributed.py).

Imported through the test config's ``custom_imports`` (the tests put tests/ on PYTHONPATH).
mmengine logs rank 0 only, and rounds; this writes, per rank, one JSON line per iteration to
``<work_dir>/probe_rank<r>.jsonl``: the items of the batch, which of them have masks, and every
loss term at full precision; a first line says how the process was launched and wrapped.
"""
import json
import os
import os.path as osp

import torch
import torch.distributed as torch_dist
from mmengine.dist import get_dist_info
from mmengine.hooks import Hook

from projects.salma.registry import HOOKS

LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "GROUP_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                    "MASTER_PORT")


@HOOKS.register_module(force=True)
class RankProbeHook(Hook):
    priority = "LOWEST"  # after_train_iter: the losses are final; before_train_iter: after RNGStateHook

    def _write(self, runner, row: dict) -> None:
        rank, _ = get_dist_info()
        with open(osp.join(runner.work_dir, f"probe_rank{rank}.jsonl"), "a") as f:
            f.write(json.dumps(row) + "\n")

    def before_train(self, runner) -> None:
        model = runner.model
        engine = getattr(model, "model", None)  # mmengine's DeepSpeed wrapper holds the engine
        zero_stage = engine.zero_optimization_stage() if hasattr(engine, "zero_optimization_stage") else None
        self._write(runner, dict(
            event="start",
            env={k: os.environ.get(k) for k in LAUNCH_VARIABLES},
            rank_world=list(get_dist_info()),
            backend=torch_dist.get_backend() if torch_dist.is_initialized() else None,
            wrapper=type(model).__name__,
            find_unused_parameters=getattr(model, "find_unused_parameters", None),
            zero_stage=zero_stage,
        ))

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        data = data_batch["data"]
        self._batch = dict(items=[[m["dataset"], m["index"]] for m in data["meta"]],
                           has_mask=[m is not None for m in data["masks"]])

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._write(runner, dict(event="iter", iter=runner.iter, batch_idx=batch_idx, **self._batch,
                                 losses={k: float(v.detach()) if torch.is_tensor(v) else float(v)
                                         for k, v in outputs.items()}))
