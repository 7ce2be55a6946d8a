"""Turn a config plus command-line choices into an mmengine Runner (or FlexibleRunner + DeepSpeed).

``tools/train.py`` is a thin wrapper around ``build_runner``; tests call it directly.
"""
from __future__ import annotations

import copy
import os.path as osp

import torch
from mmengine.config import Config

from ..datasets.io import read_json
from .checkpoint import allow_mmengine_checkpoints
from .dist import prepare_cpu_processes
from .safe_checkpoint import make_crash_safe

# ZeRO-2 as shipped in configs/deepspeed_zero2.json; accumulation, clipping and micro-batch size
# are taken from the config so one source of truth drives both runners. Found from this file's
# location (repo/projects/salma/engine/), not the current directory, so `--deepspeed zero2` works
# wherever the job is launched from (an editable install; a plain one has no configs/).
REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
ZERO2 = osp.join(REPO_ROOT, "configs", "deepspeed_zero2.json")


def load_config(path: str, cfg_options: dict | None = None) -> Config:
    """``Config.fromfile(path)`` with the ``--cfg-options`` overrides merged in (what every tool starts with)."""
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def deepspeed_strategy(cfg: Config, deepspeed: str) -> dict:
    """mmengine DeepSpeedStrategy dict from a JSON file (``zero2`` = the shipped one, else a path)."""
    path = ZERO2 if deepspeed == "zero2" else deepspeed  # a given path is the user's: relative to the cwd
    if not osp.isfile(path):
        raise FileNotFoundError(f"--deepspeed: no such JSON file: {path}")
    ds = read_json(path, expect=dict, what="of DeepSpeed settings", max_bytes=1 << 20, max_depth=16)
    for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping"):
        if key in ds:
            raise ValueError(f"{path}: '{key}' comes from the mmengine config; remove it from the JSON")
    optim = cfg.optim_wrapper
    clip = (optim.get("clip_grad") or {}).get("max_norm")
    return dict(
        type="DeepSpeedStrategy",
        **ds,
        train_micro_batch_size_per_gpu=cfg.train_dataloader.batch_size,
        gradient_accumulation_steps=optim.get("accumulative_counts", 1),
        **({"gradient_clipping": clip} if clip else {}),
    )


def resolve_deepspeed(deepspeed: str | None, *, cuda: bool) -> str | None:
    """The DeepSpeed choice of ``--deepspeed``: ``'auto'`` (what ``tools/dist_train.sh`` passes
    unless told otherwise) is ZeRO-2 on GPUs, the original's launch (Sa2VA's ``tools/dist.sh``
    trains under ``--deepspeed deepspeed_zero2``), and nothing on CPU (gloo processes); ``'none'``
    is the opt-out (mmengine's AMP wrapper + DDP); ``'zero2'`` or a JSON path as given."""
    if deepspeed == "auto":
        return "zero2" if cuda else None
    return None if deepspeed in (None, "none") else deepspeed


def apply_cli(
    cfg: Config,
    *,
    work_dir: str | None = None,
    resume: str | bool | None = None,
    deepspeed: str | None = None,
    launcher: str = "none",
    cfg_options: dict | None = None,
    config_path: str | None = None,
) -> Config:
    """Merge command-line choices into the config (work dir, resume, launcher, DeepSpeed)."""
    cfg = copy.deepcopy(cfg)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get("work_dir") is None:
        stem = osp.splitext(osp.basename(config_path or "salma"))[0]
        cfg.work_dir = osp.join("work_dirs", stem)
    cfg.launcher = launcher
    if resume:
        cfg.resume = True
        cfg.load_from = None if resume is True else resume  # None: the latest in work_dir
    deepspeed = resolve_deepspeed(deepspeed, cuda=torch.cuda.is_available())
    if deepspeed:
        cfg.strategy = deepspeed_strategy(cfg, deepspeed)
        optim = cfg.optim_wrapper
        cfg.optim_wrapper = dict(type="DeepSpeedOptimWrapper", optimizer=optim.optimizer)
        cfg.runner_type = "FlexibleRunner"
        cfg.custom_hooks = [*cfg.get("custom_hooks", []), dict(type="DeepSpeedGradNormHook")]
    return cfg


def build_runner(cfg: Config):
    """Runner, or FlexibleRunner when the config carries a DeepSpeed strategy.

    Checkpoints are crash-safe and checked (:func:`~projects.salma.engine.safe_checkpoint.make_crash_safe`).
    Several processes without CUDA (``tools/dist_train.sh CFG N`` on a CPU machine): gloo, see
    :func:`~projects.salma.engine.dist.prepare_cpu_processes`; with CUDA the config is used as is.
    """
    allow_mmengine_checkpoints()
    cfg = copy.deepcopy(cfg)
    note = make_crash_safe(cfg)  # atomic checkpoints, non-finite losses stop the run, --resume checks what it loads
    if cfg.get("launcher", "none") != "none" and not torch.cuda.is_available():
        cfg = prepare_cpu_processes(cfg)
    if cfg.get("runner_type") == "FlexibleRunner":
        from mmengine.runner import FlexibleRunner as runner_type
    else:
        from mmengine.runner import Runner as runner_type
    runner = runner_type.from_cfg(cfg)
    if note:
        runner.logger.warning(note)  # in the run's log file
    return runner
