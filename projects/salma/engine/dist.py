"""Joining the launcher's process group, on GPUs and on machines without one.

mmengine 0.10.7's ``init_dist('pytorch')`` calls ``torch.cuda.set_device(LOCAL_RANK)`` before
anything else, so ``tools/dist_train.sh`` / ``tools/dist_test.sh`` died at start-up on a CPU
machine (``module 'torch._C' has no attribute '_cuda_setDevice'``). Runner, FlexibleRunner and
DeepSpeed initialise the group only when none exists yet, so on a machine without CUDA SALMA joins
torchrun's group itself, with gloo, before they look; with CUDA nothing changes (NCCL, one device
per ``LOCAL_RANK``, initialised by mmengine or DeepSpeed as before).
"""
from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.dist import init_dist
from mmengine.logging import print_log

LAUNCHERS = ("none", "pytorch", "slurm")
DDP_WRAPPERS = ("MMDistributedDataParallel", "DistributedDataParallel")


def join_process_group(launcher: str, *, backend: str = "nccl", timeout: float | None = None) -> None:
    """Join the process group of ``launcher`` ('pytorch': torchrun's ``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``, ``MASTER_PORT`` variables); nothing for 'none' or when already joined.

    With CUDA: mmengine's ``init_dist`` (sets the device of ``LOCAL_RANK``; ``backend``). Without:
    gloo, whatever ``backend`` says (the configs name NCCL, which needs GPUs).
    ``timeout``: seconds a collective may wait (None: torch's default).
    """
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {LAUNCHERS}, got {launcher!r}")
    if launcher == "none" or torch_dist.is_initialized():
        return
    if torch.cuda.is_available():
        init_dist(launcher, backend=backend, **({} if timeout is None else {"timeout": timeout}))
        return
    if launcher != "pytorch":
        raise ValueError(f"launcher {launcher!r} without CUDA: mmengine's {launcher} set-up needs GPUs; launch "
                         "CPU processes with torchrun (tools/dist_train.sh, tools/dist_test.sh)")
    torch_dist.init_process_group(
        backend="gloo", **({} if timeout is None else {"timeout": datetime.timedelta(seconds=timeout)}))
    print_log(f"no CUDA: joined the process group with gloo as rank {torch_dist.get_rank()} of "
              f"{torch_dist.get_world_size()} (node rank {os.environ.get('GROUP_RANK', '?')})", logger="current")


def leave_process_group() -> None:
    """Wait for every rank, then leave the group; nothing when none was joined.

    The launched tools call it last. A rank that exits still in a gloo group can abort in
    interpreter shutdown (SIGABRT, "terminate called without an active exception": gloo's worker
    threads still hold tensors), and torchrun then fails the whole run after its last checkpoint.
    The barrier first: no rank leaves while rank 0 is still writing that checkpoint.
    """
    if not torch_dist.is_initialized():
        return
    torch_dist.barrier()
    torch_dist.destroy_process_group()


def prepare_cpu_processes(cfg: Config) -> Config:
    """Make a training config with a launcher run as several CPU processes (no CUDA).

    Joins the group (gloo) before the runner would try NCCL; builds plain DDP without device ids
    (mmengine passes ``device_ids=[LOCAL_RANK]``, which DDP refuses for a CPU module); and keeps
    DeepSpeed from JIT-compiling its shared-memory all-reduce, which only DeepSpeed inference's
    tensor parallelism calls (ZeRO training uses torch.distributed's collectives, here gloo) and
    which needs a C++ toolchain and ninja and a build of about 100 s on 2 cores at every fresh start.
    """
    dist_cfg = cfg.get("env_cfg", {}).get("dist_cfg", {})
    join_process_group(cfg.launcher, backend=dist_cfg.get("backend", "nccl"), timeout=dist_cfg.get("timeout"))
    if cfg.get("runner_type") == "FlexibleRunner":
        _skip_deepspeed_shm_allreduce()
        return cfg
    wrapper = cfg.get("model_wrapper_cfg") or dict(type="MMDistributedDataParallel", broadcast_buffers=False,
                                                    find_unused_parameters=cfg.get("find_unused_parameters", False))
    if wrapper.get("type", "MMDistributedDataParallel") in DDP_WRAPPERS:
        wrapper = {**wrapper, "device_ids": None}
    cfg.model_wrapper_cfg = wrapper
    return cfg


def _skip_deepspeed_shm_allreduce() -> None:
    """DeepSpeed's CPU communication backend builds ``deepspeed_shm_comm`` when it is listed as
    compatible; listed as not, the backend falls back to plain torch.distributed (gloo)."""
    import deepspeed.ops
    from deepspeed.ops.op_builder.cpu.comm import ShareMemCommBuilder

    deepspeed.ops.__compatible_ops__[ShareMemCommBuilder.NAME] = False
