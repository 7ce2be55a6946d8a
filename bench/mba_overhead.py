"""Forward latency of SALMA vs the Sa2VA baseline (CMA, prior pass and aux losses off).

Both variants are the *same* model object at real size (InternVL2.5-1B and SAM-2.1 hiera-large
shapes, random weights): the baseline switches CMA, the structure prior and the TMC / boundary
losses off, so the difference is exactly what SALMA adds. Runs are interleaved (A B A B ...) in
one process and the ratio is taken pair by pair, which holds when the machine's speed drifts.

    python bench/mba_overhead.py                  # CPU, fp32
    python bench/mba_overhead.py --device cuda --dtype bfloat16
    python bench/mba_overhead.py --tiny --reps 1          # the tiny test model (smoke test)
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import time

import torch
from mmengine.config import Config

from projects.salma.registry import MODELS
from projects.salma.testing import make_batch, real_size_model_cfg


def build_real_size_model(config: str, dtype: str):
    return MODELS.build(real_size_model_cfg(Config.fromfile(config), llm_dtype=dtype))


@contextlib.contextmanager
def baseline(model):
    """Sa2VA: no CMA, no prior pass, no TMC / boundary losses (restored on exit)."""
    runner = model.grounding_encoder
    saved = runner.cma, runner.mask_source, model.loss_tmc_weight, model.loss_boundary_weight
    runner.cma, runner.mask_source, model.loss_tmc_weight, model.loss_boundary_weight = None, "none", 0.0, 0.0
    try:
        yield
    finally:
        runner.cma, runner.mask_source, model.loss_tmc_weight, model.loss_boundary_weight = saved


def timed_forward(model, batch, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.no_grad():
        model(batch, mode="loss")
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


TINY_CONFIG = "configs/tiny/salma_tiny.py"


def build_tiny_model(dtype: str):
    """The tiny test model (smoke runs), its InternVL in ``dtype``."""
    model_cfg = copy.deepcopy(Config.fromfile(TINY_CONFIG).model)
    model_cfg.mllm.torch_dtype = dtype
    return MODELS.build(model_cfg)


def main(argv: list[str] | None = None) -> list[float]:
    """Print the interleaved timings; return the per-pair ratios SALMA / Sa2VA."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/_base_/models/salma_1b.py")
    parser.add_argument("--tiny", action="store_true", help="the tiny test model instead of the real size")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--objects", type=int, default=1)
    parser.add_argument("--frames", type=int, default=1)
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    device = torch.device(args.device)
    if args.tiny:
        model = build_tiny_model(args.dtype).to(device).eval()
        sizes = dict(tile_size=128, sam_size=128, mask_size=(48, 64))
    else:
        model = build_real_size_model(args.config, args.dtype).to(device).eval()
        sizes = dict(tile_size=448, sam_size=1024, mask_size=(480, 640))
    batch = make_batch(model, [(args.objects, args.frames)], **sizes)
    batch = model.data_preprocessor(dict(data=batch), training=False)["data"]
    if args.dtype == "bfloat16":
        batch["pixel_values"] = batch["pixel_values"].to(torch.bfloat16)
        batch["g_pixel_values"] = [g.to(torch.bfloat16) for g in batch["g_pixel_values"]]

    timed_forward(model, batch, device)  # warm-up both paths
    with baseline(model):
        timed_forward(model, batch, device)
    salma, sa2va = [], []
    for _ in range(args.reps):
        salma.append(timed_forward(model, batch, device))
        with baseline(model):
            sa2va.append(timed_forward(model, batch, device))
    ratios = [a / b for a, b in zip(salma, sa2va)]
    print(f"model={'tiny' if args.tiny else 'real size'} device={device} dtype={args.dtype} objects={args.objects} "
          f"frames={args.frames} reps={args.reps}")
    print(f"SALMA forward  median {statistics.median(salma) * 1e3:9.1f} ms  (min {min(salma) * 1e3:.1f})")
    print(f"Sa2VA forward  median {statistics.median(sa2va) * 1e3:9.1f} ms  (min {min(sa2va) * 1e3:.1f})")
    print(f"ratio SALMA / Sa2VA: median {statistics.median(ratios):.4f}  (per pair: "
          + ", ".join(f"{r:.4f}" for r in ratios) + ")")
    return ratios


if __name__ == "__main__":
    main()
