"""Forward latency of SALMA vs the Sa2VA baseline (CMA, prior pass and aux losses off).

Both variants are the *same* model object at real size (InternVL2.5-1B and SAM-2.1 hiera-large
shapes, random weights): the baseline switches CMA, the structure prior and the TMC / boundary
losses off, so the difference is exactly what SALMA adds. Runs are interleaved (A B A B ...) in
one process and the ratio is taken pair by pair, which holds when the machine's speed drifts.

    python bench/mba_overhead.py                  # CPU, fp32
    python bench/mba_overhead.py --device cuda --dtype bfloat16
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
from projects.salma.testing import make_batch


def build_real_size_model(config: str, dtype: str):
    cfg = Config.fromfile(config)
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.mllm.model_path = None
    model_cfg.mllm.config = cfg.internvl2_5_1b_arch
    model_cfg.mllm.torch_dtype = dtype
    model_cfg.mllm.tokenizer = dict(type="build_tiny_tokenizer")  # no tokenizer files needed
    model_cfg.grounding_encoder.sam2 = dict(size="large")
    return MODELS.build(model_cfg)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/_base_/models/salma_1b.py")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--objects", type=int, default=1)
    parser.add_argument("--frames", type=int, default=1)
    args = parser.parse_args()

    torch.manual_seed(0)
    device = torch.device(args.device)
    model = build_real_size_model(args.config, args.dtype).to(device).eval()
    batch = make_batch(model, [(args.objects, args.frames)], tile_size=448, sam_size=1024, mask_size=(480, 640))
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
    print(f"device={device} dtype={args.dtype} objects={args.objects} frames={args.frames} reps={args.reps}")
    print(f"SALMA forward  median {statistics.median(salma) * 1e3:9.1f} ms  (min {min(salma) * 1e3:.1f})")
    print(f"Sa2VA forward  median {statistics.median(sa2va) * 1e3:9.1f} ms  (min {min(sa2va) * 1e3:.1f})")
    print(f"ratio SALMA / Sa2VA: median {statistics.median(ratios):.4f}  (per pair: "
          + ", ".join(f"{r:.4f}" for r in ratios) + ")")


if __name__ == "__main__":
    main()
