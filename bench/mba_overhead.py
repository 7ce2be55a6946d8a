"""Forward latency of SALMA vs the Sa2VA baseline (CMA, prior pass and aux losses off), with a 95 % CI.

Both variants are the *same* model object at real size (InternVL2.5-1B and SAM-2.1 hiera-large
shapes, random weights): the baseline switches CMA, the structure prior and the TMC / boundary
losses off, so the difference is exactly what SALMA adds. The two run in pairs, in one process,
and the ratio is taken pair by pair, which holds when the machine's speed drifts; the order inside a
pair alternates (SALMA first, then Sa2VA first, ...), so a cost of being first or second (caches,
the allocator) falls on both alike. The mean of the per-pair ratios gets a Student t interval.

    python bench/mba_overhead.py --pairs 10       # CPU, fp32
    python bench/mba_overhead.py --device cuda --dtype bfloat16
    python bench/mba_overhead.py --tiny --pairs 4 # the tiny test model (smoke test)
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from projects.salma.analysis.cost import (REAL_SIZE_CONFIG, benchmark_batch, build_benchmark_model,  # noqa: E402
                                          sa2va_baseline, synchronize)
from projects.salma.analysis.stats import mean_ci  # noqa: E402

baseline = sa2va_baseline  # the Sa2VA switch, as other scripts import it from here


def build_real_size_model(config: str, dtype: str):
    return build_benchmark_model(tiny=False, dtype=dtype, config=config)


def timed_forward(model, batch, device) -> float:
    synchronize(device)
    start = time.perf_counter()
    with torch.no_grad():
        model(batch, mode="loss")
    synchronize(device)
    return time.perf_counter() - start


def interleaved_pairs(model, batch, device, pairs: int) -> tuple[list[float], list[float]]:
    """(SALMA seconds, Sa2VA seconds) per pair; even pairs run SALMA first, odd pairs Sa2VA first."""
    salma, sa2va = [], []
    for k in range(pairs):
        if k % 2 == 0:
            salma.append(timed_forward(model, batch, device))
            with sa2va_baseline(model):
                sa2va.append(timed_forward(model, batch, device))
        else:
            with sa2va_baseline(model):
                sa2va.append(timed_forward(model, batch, device))
            salma.append(timed_forward(model, batch, device))
    return salma, sa2va


def main(argv: list[str] | None = None) -> list[float]:
    """Print the interleaved timings; return the per-pair ratios SALMA / Sa2VA."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=REAL_SIZE_CONFIG)
    parser.add_argument("--tiny", action="store_true", help="the tiny test model instead of the real size")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--pairs", "--reps", dest="pairs", type=int, default=10,
                        help="interleaved (SALMA, Sa2VA) pairs (default 10)")
    parser.add_argument("--objects", type=int, default=1)
    parser.add_argument("--frames", type=int, default=1)
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    device = torch.device(args.device)
    model = build_benchmark_model(tiny=args.tiny, dtype=args.dtype, config=None if args.tiny else args.config)
    model = model.to(device).eval()
    batch = benchmark_batch(model, tiny=args.tiny, objects=args.objects, frames=args.frames, dtype=args.dtype)

    timed_forward(model, batch, device)  # warm-up both paths
    with sa2va_baseline(model):
        timed_forward(model, batch, device)
    salma, sa2va = interleaved_pairs(model, batch, device, args.pairs)
    ratios = [a / b for a, b in zip(salma, sa2va)]
    print(f"model={'tiny' if args.tiny else 'real size'} device={device} dtype={args.dtype} objects={args.objects} "
          f"frames={args.frames} pairs={args.pairs} threads={torch.get_num_threads()}")
    print(f"SALMA forward  median {statistics.median(salma) * 1e3:9.1f} ms  (min {min(salma) * 1e3:.1f})")
    print(f"Sa2VA forward  median {statistics.median(sa2va) * 1e3:9.1f} ms  (min {min(sa2va) * 1e3:.1f})")
    print(f"ratio SALMA / Sa2VA: median {statistics.median(ratios):.4f}  (per pair: "
          + ", ".join(f"{r:.4f}" for r in ratios) + ")")
    if len(ratios) > 1:
        ci = mean_ci(ratios)
        print(f"ratio SALMA / Sa2VA: mean {ci.mean:.4f} ± {ci.half_width:.4f} (95 % CI, Student t over {ci.n} pairs: "
              f"{ci.low:.4f} .. {ci.high:.4f})")
    return ratios


if __name__ == "__main__":
    main()
