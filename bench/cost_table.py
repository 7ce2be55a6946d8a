"""Cost of each part of one SALMA forward at real size (random weights): parameters, GFLOPs (torch's
FlopCounterMode) and latency, with SALMA's additions (pre-pass, CMA, TMC + boundary) as a share of
the whole forward, beside the seed's section 8.2 figures. See projects/salma/analysis/cost.py.

    python bench/cost_table.py                       # CPU, fp32, 1 object x 1 frame
    python bench/cost_table.py --device cuda --dtype bfloat16   # adds a GPU latency column
    python bench/cost_table.py --tiny --reps 1       # the tiny test model (smoke run)
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from projects.salma.analysis.cost import benchmark_batch, build_benchmark_model, format_table, measure, merge_devices  # noqa: E402


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="the tiny test model instead of the real size")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for a GPU column besides the CPU one")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="InternVL's dtype")
    parser.add_argument("--reps", type=int, default=3, help="timed calls per component (median)")
    parser.add_argument("--objects", type=int, default=1)
    parser.add_argument("--frames", type=int, default=1)
    parser.add_argument("--no-cpu", action="store_true", help="with --device cuda: skip the (slow) CPU column")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    start = time.perf_counter()
    model = build_benchmark_model(tiny=args.tiny, dtype=args.dtype).eval()
    print(f"model built in {time.perf_counter() - start:.0f} s; threads={torch.get_num_threads()}", flush=True)
    batch = benchmark_batch(model, tiny=args.tiny, objects=args.objects, frames=args.frames, dtype=args.dtype)
    rows = None
    if not (args.device.startswith("cuda") and args.no_cpu):
        rows = measure(model, batch, device=torch.device("cpu"), reps=args.reps)
    if args.device.startswith("cuda"):
        device = torch.device(args.device)
        model = model.to(device)
        batch = benchmark_batch(model, tiny=args.tiny, objects=args.objects, frames=args.frames, dtype=args.dtype)
        gpu = measure(model, batch, device=device, reps=args.reps)
        rows = merge_devices(rows, gpu) if rows else gpu
    table = format_table(rows)
    print(f"\nmodel={'tiny' if args.tiny else 'real size'} dtype={args.dtype} objects={args.objects} "
          f"frames={args.frames} reps={args.reps} (median)\n")
    print(table)
    return table


if __name__ == "__main__":
    main()
