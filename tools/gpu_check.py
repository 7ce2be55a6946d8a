"""One prepared check of SALMA-1B's real training regime on a single GPU (random weights, no files).

    python tools/gpu_check.py                        # one H100 / H200: real size, bf16 (under 8 minutes)
    python tools/gpu_check.py --device cpu --tiny    # the tiny model on the CPU (tests/test_gpu_check.py)

Builds SALMA-1B at its real size with random weights (InternVL2.5-1B and SAM-2.1 hiera-large
shapes: ``projects.salma.testing.real_size_model_cfg``) from ``configs/SALMA-1B.py`` and its
baseline ``configs/Sa2VA-1B.py``, and prints side by side:

1. ``--steps`` training steps on one repeated batch (an image with 3 objects and a 5-frame video
   with 3 expressions: the config's 2 samples per GPU) through what ``tools/train.py`` builds
   (``apply_cli`` + ``build_runner``), with each optimiser path of the config:
   mmengine's ``AmpOptimWrapper`` (bf16 autocast, the default launch) and DeepSpeed ZeRO-2
   (``--deepspeed zero2``, one process). The config's optimiser (AdamW, its lr, clipping) with no
   accumulation and a constant lr; the config's warm-up hooks. Per leg: every loss, whether all
   are finite and the loss falls (mean of the last 3 below the mean of the first 3), the median
   step time (steps after the first 2), the peak GPU memory, and how many trainable tensors moved.
2. ``bench/mba_overhead.py`` in bf16 (forward latency SALMA / Sa2VA on one model).
3. ``bench/predict_cost.py``: one ``predict`` latency (448 px image, one expression, bf16).

Exit status 1 when a leg's loss is not finite or does not fall. On the CPU (``--device cpu``)
mmengine refuses to build its AmpOptimWrapper; the check lifts that refusal for the smoke run only
(torch's GradScaler then disables itself, as bf16 needs no loss scaling, and autocast runs in bf16
on the CPU), so the same code path runs everywhere.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import math
import os
import os.path as osp
import statistics
import sys
import tempfile
import time

import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from torch.utils.data import Dataset

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(REPO, "bench"))

import mba_overhead  # noqa: E402
import predict_cost  # noqa: E402

from projects.salma.datasets.tokenizer import build_tokenizer  # noqa: E402
from projects.salma.engine.runner import apply_cli, build_runner  # noqa: E402
from projects.salma.registry import DATASETS, FUNCTIONS  # noqa: E402
from projects.salma.testing import make_batch_for, one_process_deepspeed, real_size_model_cfg  # noqa: E402

CONFIGS = {"SALMA": osp.join(REPO, "configs/SALMA-1B.py"), "Sa2VA": osp.join(REPO, "configs/Sa2VA-1B.py")}
TINY_CONFIG = osp.join(REPO, "configs/tiny/salma_tiny_synthetic.py")
# The repeated batch: (objects, frames) per sample, 2 samples as SALMA-1B.py's batch per GPU: an image
# with 3 objects and a 5-frame video with 3 expressions (the configs' training samples); smaller for
# the tiny smoke run. Sizes: InternVL tile, SAM-2 input, original mask size.
SAMPLES = {"real": [(3, 1), (3, 5)], "tiny": [(2, 1), (2, 2)]}
SIZES = {"real": dict(tile_size=448, sam_size=1024, mask_size=(480, 640)),
         "tiny": dict(tile_size=128, sam_size=128, mask_size=(48, 64))}
OPTIMS = ("amp", "zero2")
RUNNER_KEYS = ("model", "optim_wrapper", "custom_hooks", "custom_imports", "default_hooks", "default_scope", "env_cfg",
               "log_processor", "randomness", "visualizer", "load_from", "resume")


# ------------------------------------------------------------------ configs
def _flat(d, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _set(d, dotted: str, value) -> None:
    *path, last = dotted.split(".")
    for key in path:
        d = d[key]
    d[last] = value


def model_configs(tiny: bool) -> dict[str, Config]:
    """{'SALMA', 'Sa2VA'} -> training config whose model is built with random weights and no files.

    Real: SALMA-1B.py and Sa2VA-1B.py at real size. Tiny: the tiny synthetic config, and for the
    baseline the same config with every model key on which Sa2VA-1B.py differs from SALMA-1B.py
    (and Sa2VA's hooks); both with SALMA-1B.py's InternVL dtype and AMP wrapper."""
    real = {name: Config.fromfile(path) for name, path in CONFIGS.items()}
    if not tiny:
        for cfg in real.values():
            cfg.model = real_size_model_cfg(cfg)
        return real
    salma = Config.fromfile(TINY_CONFIG)
    sa2va = copy.deepcopy(salma)
    ours, theirs = _flat(real["SALMA"].model.to_dict()), _flat(real["Sa2VA"].model.to_dict())
    for key, value in theirs.items():
        if ours.get(key) != value:
            _set(sa2va.model, key, value)
    sa2va.custom_hooks = copy.deepcopy(real["Sa2VA"].custom_hooks)
    # the real regime on the tiny model: InternVL in the real config's dtype (bf16) and the real
    # configs' AMP wrapper (the tiny config trains fp32 with a plain OptimWrapper), its own optimiser
    for cfg in (salma, sa2va):
        cfg.model.mllm.torch_dtype = real["SALMA"].model.mllm.torch_dtype
        cfg.optim_wrapper = dict(real["SALMA"].optim_wrapper, optimizer=cfg.optim_wrapper.optimizer)
    return {"SALMA": salma, "Sa2VA": sa2va}


@DATASETS.register_module()
class RepeatedBatch(Dataset):
    """One fixed batch (``testing.make_batch_for``, one row per ``(objects, frames)`` sample):
    every item is that batch, and ``repeated_batch_collate`` hands it to the runner as it is."""

    def __init__(self, *, tokenizer: dict, image_tokens: int, samples: list, tile_size: int, sam_size: int,
                 mask_size: list) -> None:
        self.samples = [tuple(s) for s in samples]
        self.batch = make_batch_for(build_tokenizer(tokenizer), image_tokens, self.samples, tile_size=tile_size,
                                    sam_size=sam_size, mask_size=tuple(mask_size))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        return self.batch


@FUNCTIONS.register_module()
def repeated_batch_collate(items: list[dict]) -> dict:
    """Items of a RepeatedBatch are all the same batch: it, once, in the runner's layout."""
    return {"data": items[0], "data_samples": None}


def repeated_batch_loader(model_cfg, samples: list, sizes: dict) -> dict:
    """The train_dataloader config that gives the same batch at every step."""
    dataset = dict(type="RepeatedBatch", tokenizer=model_cfg.mllm.tokenizer,
                   image_tokens=model_cfg.mllm.config.image_seq_length, samples=samples, **sizes)
    return dict(batch_size=len(samples), num_workers=0, sampler=dict(type="InfiniteSampler", shuffle=False),
                dataset=dataset, collate_fn=dict(type="salma.repeated_batch_collate"))


def leg_config(base: Config, optim: str, steps: int, kind: str, lr: float | None, work_dir: str, name: str) -> Config:
    """``base`` with the check's schedule and data, then ``tools/train.py``'s command-line layer.
    Only what the runner reads is kept: mmengine dumps (and yapf-formats) the whole config four
    times per runner, which for the datasets and benchmarks of SALMA-1B.py takes longer than training."""
    cfg = Config({k: copy.deepcopy(base[k]) for k in RUNNER_KEYS if k in base})
    optimizer = dict(cfg.optim_wrapper.optimizer, **({"lr": lr} if lr is not None else {}))
    cfg.optim_wrapper = dict(cfg.optim_wrapper, optimizer=optimizer, accumulative_counts=1)
    cfg.param_scheduler = None  # a constant lr: the check is about the optimiser path, not the schedule
    cfg.train_cfg = dict(type="IterBasedTrainLoop", max_iters=steps)
    cfg.default_hooks.checkpoint = None  # no multi-GB checkpoint writes
    cfg.log_level = "WARNING"
    cfg.experiment_name = name  # one MessageHub / logger / visualizer per leg
    cfg.train_dataloader = repeated_batch_loader(cfg.model, SAMPLES[kind], SIZES[kind])
    return apply_cli(cfg, work_dir=work_dir, deepspeed="zero2" if optim == "zero2" else None)


# ------------------------------------------------------------------ one training leg
def _unwrap(model):
    while hasattr(model, "module"):  # DeepSpeedEngine / DDP-style wrappers
        model = model.module
    return model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepRecorder(Hook):
    """Per iteration: wall time (the train step and the loop's hooks) and the loss; over the leg:
    the trainable tensors that changed, and the peak CUDA memory."""

    priority = "VERY_LOW"

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.times: list[float] = []
        self.losses: list[float] = []
        self.moved = self.trainable = 0
        self.unmoved: list[str] = []
        self._start = 0.0
        self._before: dict[str, torch.Tensor] = {}

    def before_train(self, runner) -> None:
        self._before = {n: p.detach().to("cpu", torch.float32, copy=True)
                        for n, p in _unwrap(runner.model).named_parameters() if p.requires_grad}
        self.trainable = len(self._before)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        _sync(self.device)
        self._start = time.perf_counter()

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        _sync(self.device)
        self.times.append(time.perf_counter() - self._start)
        loss = outputs["loss"]
        self.losses.append(float(loss.detach() if torch.is_tensor(loss) else loss))

    def after_train(self, runner) -> None:
        params = dict(_unwrap(runner.model).named_parameters())
        self.unmoved = [n for n, before in self._before.items()
                        if torch.equal(params[n].detach().to("cpu", torch.float32), before)]
        self.moved = self.trainable - len(self.unmoved)
        self._before = {}


@contextlib.contextmanager
def amp_wrapper_allowed(device: torch.device):
    """mmengine builds ``AmpOptimWrapper`` only with an accelerator; on the CPU smoke run its check
    is lifted (see the module docstring). Nothing changes on a GPU."""
    if device.type != "cpu":
        yield
        return
    import mmengine.optim.optimizer.amp_optimizer_wrapper as amp

    available = amp.is_cuda_available
    amp.is_cuda_available = lambda: True
    try:
        yield
    finally:
        amp.is_cuda_available = available


def optimiser_context(optim: str, device: torch.device):
    """What the legs of one optimiser path run in: one DeepSpeed process group for all ZeRO-2 legs
    (DeepSpeed keeps its groups for the process), or the CPU allowance for the AMP wrapper."""
    return one_process_deepspeed(device) if optim == "zero2" else amp_wrapper_allowed(device)


def train_leg(cfg: Config, device: torch.device) -> dict:
    """Train one leg; returns its losses, step times, peak memory and moved tensors."""
    baseline = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    recorder = StepRecorder(device)
    runner = build_runner(cfg)
    runner.register_hook(recorder)
    runner.train()
    del runner
    gc.collect()
    peak = torch.cuda.max_memory_allocated(device) - baseline if device.type == "cuda" else float("nan")
    if device.type == "cuda":
        torch.cuda.empty_cache()
    losses = recorder.losses
    k = min(3, len(losses) // 2)
    return dict(
        losses=losses,
        finite=all(math.isfinite(x) for x in losses),
        falling=k > 0 and statistics.fmean(losses[-k:]) < statistics.fmean(losses[:k]),
        first_step=recorder.times[0],
        step=statistics.median(recorder.times[2:] or recorder.times),
        peak_gib=peak / 2**30,
        moved=recorder.moved,
        trainable=recorder.trainable,
        unmoved=recorder.unmoved,
    )


# ------------------------------------------------------------------ report
def print_leg(name: str, optim: str, r: dict) -> None:
    print(f"[{name} {optim}] losses: " + " ".join(f"{x:.4f}" for x in r["losses"]))
    print(f"[{name} {optim}] finite={r['finite']} falling={r['falling']} step {r['step'] * 1e3:.0f} ms "
          f"(first {r['first_step'] * 1e3:.0f} ms) peak {r['peak_gib']:.2f} GiB "
          f"moved {r['moved']}/{r['trainable']} trainable tensors", flush=True)
    if r["unmoved"]:
        print(f"[{name} {optim}] unchanged after training: {summarise(r['unmoved'])}")


def summarise(names: list[str]) -> str:
    """Parameter names with their numeric parts collapsed: 'a.*.weight x3, ...'."""
    counts: dict[str, int] = {}
    for n in names:
        pattern = ".".join("*" if part.isdigit() else part for part in n.split("."))
        counts[pattern] = counts.get(pattern, 0) + 1
    return ", ".join(f"{p} x{c}" if c > 1 else p for p, c in counts.items())


def print_table(results: dict) -> None:
    columns = [(n, o) for o in OPTIMS for n in CONFIGS]
    rows = [
        ("loss first -> last", lambda r: f"{r['losses'][0]:.3f} -> {r['losses'][-1]:.3f}"),
        ("finite / falling", lambda r: f"{r['finite']} / {r['falling']}"),
        ("step (median)", lambda r: f"{r['step'] * 1e3:.0f} ms"),
        ("peak GPU memory", lambda r: f"{r['peak_gib']:.2f} GiB"),
        ("trainable moved", lambda r: f"{r['moved']}/{r['trainable']}"),
    ]
    width = 22
    print("".ljust(20) + "".join(f"{n} {o}".rjust(width) for n, o in columns))
    for label, cell in rows:
        print(label.ljust(20) + "".join(cell(results[c]).rjust(width) for c in columns))
    for optim in OPTIMS:
        ours, theirs = results[("SALMA", optim)], results[("Sa2VA", optim)]
        memory = ours["peak_gib"] / theirs["peak_gib"] if theirs["peak_gib"] > 0 else float("nan")
        print(f"SALMA / Sa2VA ({optim}): step time x{ours['step'] / theirs['step']:.3f}, peak memory x{memory:.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--tiny", action="store_true", help="the tiny model (smoke run) instead of the real size")
    parser.add_argument("--steps", type=int, default=20, help="training steps per leg")
    parser.add_argument("--lr", type=float, help="override the config's learning rate")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of the benchmarks")
    args = parser.parse_args(argv)
    os.chdir(REPO)  # the benchmarks read configs/ relative to the checkout
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # mmengine's runner puts the model on a GPU when it sees one
    elif not torch.cuda.is_available():
        parser.error("--device cuda: no GPU visible (use --device cpu --tiny for the smoke run)")
    device = torch.device(args.device)
    kind = "tiny" if args.tiny else "real"
    import deepspeed
    import mmengine
    import transformers

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"gpu_check: model={kind} device={gpu} steps={args.steps} torch {torch.__version__} transformers "
          f"{transformers.__version__} mmengine {mmengine.__version__} deepspeed {deepspeed.__version__}", flush=True)

    start = time.perf_counter()
    configs = model_configs(args.tiny)
    results = {}
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as work:
        for optim in OPTIMS:
            with optimiser_context(optim, device):
                for name, base in configs.items():
                    leg = f"gpu_check_{name}_{optim}_{os.getpid()}"
                    cfg = leg_config(base, optim, args.steps, kind, args.lr, osp.join(work, leg), leg)
                    results[(name, optim)] = train_leg(cfg, device)
                    print_leg(name, optim, results[(name, optim)])
    print(f"\n== training, {args.steps} steps on one repeated batch {SAMPLES[kind]} (objects, frames)")
    print_table(results)
    print(f"(training legs took {time.perf_counter() - start:.0f} s)", flush=True)

    bench = ["--device", args.device, "--dtype", "bfloat16", "--reps", str(args.reps)]
    bench += ["--tiny"] if args.tiny else []
    print("\n== bench/mba_overhead.py in bf16", flush=True)
    mba_overhead.main(bench)
    print("\n== bench/predict_cost.py (one predict)", flush=True)
    predict_cost.main(bench)
    print(f"\n(total {time.perf_counter() - start:.0f} s)")

    failed = [f"{n} {o}" for (n, o), r in results.items() if not (r["finite"] and r["falling"])]
    print("GPU CHECK " + (f"FAILED: loss not finite or not falling in {', '.join(failed)}" if failed else "PASSED"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
