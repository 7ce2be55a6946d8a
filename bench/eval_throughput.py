"""Evaluation throughput: every prompt predicted from scratch vs an item's prompts sharing its inputs.

Two paths through the exported model (``SALMAModel.predict``, the code ``tools/test.py`` runs), on
the same weights and inputs, in interleaved repetitions (A B, B A, ...):

- per-prompt: one ``predict`` call per sentence / expression, each encoding the image or video
  again (vision tower, SAM-2, prior; for a video, SAM-2 tracking per expression): the structure
  of Sa2VA's evaluators (one ``predict_forward`` per sentence) and of RES evaluation with
  ``test_options.share_item_inputs=False``;
- shared: one call with all of the item's prompts: the vision tower's features, SAM-2's features
  and the structure prior computed once (``ItemCache``), a video's expressions tracked together.

Both read the ``[SEG]`` states from the generation itself. A random LLM never answers ``[SEG]``,
so the real ``generate`` is steered to ``Sure, [SEG].`` (``projects.salma.testing.forced_answer``):
every sentence decodes a mask. Real size by default (InternVL2.5-1B + SAM-2.1 hiera-large, random
weights, as ``bench/predict_cost.py`` builds them); ``--tiny`` for the tiny test model.

    python bench/eval_throughput.py --reps 3                 # CPU, real size (minutes per repetition)
    python bench/eval_throughput.py --tiny --reps 10
    python bench/eval_throughput.py --device cuda --dtype bfloat16
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch
from mmengine.config import Config

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from projects.salma.analysis.cost import build_benchmark_model  # noqa: E402
from projects.salma.analysis.stats import mean_ci  # noqa: E402
from projects.salma.salma_model import as_salma_model  # noqa: E402
from projects.salma.salma_model import resolve_device_dtype  # noqa: E402
from projects.salma.testing import forced_answer  # noqa: E402

SENTENCES = ["the red circle on the left", "the blue square", "the small green triangle", "the larger shape",
             "the object at the top", "the second circle from the right", "the shape next to the square"]


def build(args):
    cfg = Config.fromfile(args.config)
    cfg.test_options = dict(propagation="memory", sam2_memory="random", num_llm_frames=5, llm_frame_sampling="uniform")
    torch.manual_seed(0)
    model = build_benchmark_model(tiny=args.tiny, dtype="float32", config=args.config)
    return as_salma_model(cfg, model.eval())


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def interleaved(per_prompt, shared, reps: int) -> tuple[list[float], list[float]]:
    """Seconds of each path per repetition; even repetitions run per-prompt first, odd ones shared."""
    a, b = [], []
    for k in range(reps):
        if k % 2 == 0:
            a.append(timed(per_prompt))
            b.append(timed(shared))
        else:
            b.append(timed(shared))
            a.append(timed(per_prompt))
    return a, b


def report(name: str, unit: str, count: int, per_prompt: list[float], shared: list[float]) -> None:
    ratios = [p / s for p, s in zip(per_prompt, shared)]
    ci = mean_ci(ratios)
    mean, low, high = ci.mean, ci.low, ci.high
    for label, seconds in (("per-prompt", per_prompt), ("shared", shared)):
        rates = [count / t for t in seconds]
        print(f"  {label:10s} {unit}/s median {statistics.median(rates):8.3f}  (min {min(rates):.3f}, "
              f"max {max(rates):.3f}; seconds median {statistics.median(seconds):.2f})")
    print(f"  {name} speed-up shared / per-prompt: median {statistics.median(ratios):.2f}x, "
          f"range {min(ratios):.2f}-{max(ratios):.2f}, mean {mean:.2f}x (95 % CI {low:.2f}-{high:.2f}), "
          f"{len(ratios)} interleaved pairs: " + ", ".join(f"{r:.2f}" for r in ratios))


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    """Print both benchmarks; return the per-pair ratios (shared speed / per-prompt speed)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/_base_/models/salma_1b.py")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="default: bf16 on cuda, else fp32")
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions of each path")
    parser.add_argument("--sentences", type=int, default=7, help="sentences of the image")
    parser.add_argument("--expressions", type=int, default=5, help="expressions of the video")
    parser.add_argument("--frames", type=int, default=50, help="frames of the video")
    parser.add_argument("--size", type=int, default=448, help="image / frame side (px)")
    parser.add_argument("--only", choices=["res", "video"], help="run one of the two")
    args = parser.parse_args(argv)
    if args.tiny:
        args.config = "configs/tiny/salma_tiny.py"

    device, dtype = resolve_device_dtype(args.device, args.dtype)
    salma = build(args).to(device=device, dtype=dtype).eval()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    frames = [rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8) for _ in range(args.frames)]
    texts = [SENTENCES[k % len(SENTENCES)] for k in range(max(args.sentences, args.expressions))]
    print(f"model={'tiny' if args.tiny else 'real size (InternVL2.5-1B + SAM-2.1 hiera-large, random weights)'} "
          f"device={device} dtype={str(dtype).replace('torch.', '')} threads={torch.get_num_threads()} reps={args.reps}")
    ratios = {}
    with forced_answer("Sure, [SEG]."):
        if args.only in (None, "res"):
            sentences = texts[: args.sentences]
            masks = [salma.predict(image=image, text=t)["masks"] for t in sentences]  # warm-up, and the check
            shared = [o["masks"] for o in salma.predict(image=image, text=sentences)]
            if any(m.shape[0] != 1 for m in masks) or not all(torch.equal(a, b) for a, b in zip(masks, shared)):
                raise RuntimeError("the two paths disagree (or no mask was decoded)")
            print(f"RES: one {args.size}x{args.size} image, {len(sentences)} sentences")
            a, b = interleaved(lambda: [salma.predict(image=image, text=t) for t in sentences],
                               lambda: salma.predict(image=image, text=sentences), args.reps)
            report("RES", "sentences", len(sentences), a, b)
            ratios["res"] = [x / y for x, y in zip(a, b)]
        if args.only in (None, "video"):
            expressions = texts[: args.expressions]
            print(f"video: {args.frames} frames of {args.size}x{args.size}, {len(expressions)} expressions, "
                  f"5 LLM frames, SAM-2 memory tracking")
            salma.predict(video=frames, text=expressions[0])  # warm-up
            a, b = interleaved(lambda: [salma.predict(video=frames, text=e) for e in expressions],
                               lambda: salma.predict(video=frames, text=expressions), args.reps)
            # frames/s counts each expression's frames: the work a per-expression evaluation does
            report("video", "frames", args.frames * len(expressions), a, b)
            ratios["video"] = [x / y for x, y in zip(a, b)]
    return ratios


if __name__ == "__main__":
    main()
