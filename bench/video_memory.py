"""Memory and speed of video inference against the video's length: streamed, memory must stay flat.

One expression ("the moving circle") tracked through T frames of a 480x854 synthetic video (a
textured background, a disc crossing it; frames are rendered when the reader asks for them, as a
file would be decoded) with ``SALMAModel.predict(video=..., stream=True)``: the LLM's 5 uniformly
sampled frames, the language decode on them, SAM-2's memory tracking every frame, masks consumed
frame by frame. The answer is steered to ``Sure, [SEG].`` (``projects.salma.testing.forced_answer``:
the real generation runs), so the mask path runs with random weights.

Each configuration runs in a fresh subprocess and reports its peak RSS (``VmHWM`` of
/proc/self/status: ``ru_maxrss`` would carry the parent's peak across fork + exec), the RSS once
the model is built (before the video), on CUDA the peak device memory (``max_memory_allocated``),
and frames/s of the whole predict (generation included).

    python bench/video_memory.py --tiny            # tiny model, T = 25, 100, 400, 1600; last line:
                                                   #   peak ratio 1600/25: R   (target R <= 1.2)
    python bench/video_memory.py                   # SALMA-1B shapes, random weights: T = 25, 100
    python bench/video_memory.py --device cuda --dtype bfloat16 [--offload]
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CONFIG = "configs/tiny/salma_tiny.py"
REAL_CONFIG = "configs/_base_/models/salma_1b.py"
HEIGHT, WIDTH = 480, 854
TEST_OPTIONS = dict(sam2_memory="random", num_llm_frames=5, llm_frame_sampling="uniform", propagation="memory",
                    max_new_tokens=8)


def synthetic_video(n_frames: int):
    """A :class:`~projects.salma.datasets.frames.VideoFrames` of ``n_frames`` 480x854 frames, each
    rendered when asked (nothing of the video is held but one background texture)."""
    from projects.salma.datasets.frames import VideoFrames

    class SyntheticVideo(VideoFrames):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.background = (rng.random((HEIGHT, WIDTH, 3)) * 80 + 40).astype(np.uint8)
            self.names = [f"{t:05d}" for t in range(n_frames)]
            self.size = (WIDTH, HEIGHT)
            yy, xx = np.mgrid[:HEIGHT, :WIDTH]
            self.grid = (yy - HEIGHT / 2) ** 2, xx

        def image(self, t: int) -> Image.Image:
            frame = self.background.copy()
            cx = 100 + (WIDTH - 200) * (t % 200) / 199  # crosses the frame every 200 frames
            frame[self.grid[0] + (self.grid[1] - cx) ** 2 <= 70 ** 2] = (220, 40, 40)
            return Image.fromarray(frame)

    return SyntheticVideo()


def build(model: str):
    """The exported-form model (CPU, fp32 build) with random memory modules."""
    from mmengine.config import Config

    from projects.salma.salma_model import as_salma_model
    from projects.salma.registry import MODELS

    sys.path.insert(0, os.path.join(REPO, "bench"))
    from mba_overhead import build_real_size_model

    cfg = Config.fromfile(os.path.join(REPO, TINY_CONFIG if model == "tiny" else REAL_CONFIG))
    cfg.test_options = dict(TEST_OPTIONS)
    torch.manual_seed(0)
    if model == "tiny":
        built = MODELS.build(copy.deepcopy(cfg.model))
    else:
        built = build_real_size_model(os.path.join(REPO, REAL_CONFIG), "float32")  # tiny tokenizer, no files
    return as_salma_model(cfg, built.eval())


def mib(field: str) -> float:
    with open("/proc/self/status", encoding="utf-8") as status:
        line = next(entry for entry in status if entry.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def worker(spec: dict) -> dict:
    """One configuration, in this (fresh) process."""
    from projects.salma.salma_model import resolve_device_dtype
    from projects.salma.testing import forced_answer

    torch.set_num_threads(spec["threads"])
    device, dtype = resolve_device_dtype(spec["device"], spec["dtype"])
    salma = build(spec["model"]).to(device=device, dtype=dtype).eval()
    salma.tracker.offload = spec["offload"]
    video = synthetic_video(spec["frames"])
    built = mib("VmHWM")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    frames, foreground = [], 0.0
    with forced_answer("Sure, [SEG]."):
        start = time.perf_counter()
        prediction = salma.predict(video=video, text="the moving circle", stream=True)
        for t, masks in prediction:  # (1, H, W) per frame, consumed and dropped
            frames.append(t)
            foreground += float(masks.float().mean())
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    if sorted(frames) != list(range(spec["frames"])) or prediction.answers["n_seg"] != 1:
        raise RuntimeError(f"expected every frame once with one mask, got {len(frames)} frames")
    return {**spec, "seconds": seconds, "fps": spec["frames"] / seconds, "built_rss_mib": built,
            "peak_rss_mib": mib("VmHWM"), "foreground": foreground / spec["frames"],
            "cuda_peak_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None}


def run(spec: dict) -> dict:
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)],
                         capture_output=True, text=True, cwd=REPO)
    if out.returncode:
        raise RuntimeError(f"{spec}: failed\n{out.stderr[-3000:]}")
    return json.loads(next(line for line in reversed(out.stdout.splitlines()) if line.startswith("{")))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="the tiny model (default: SALMA-1B shapes)")
    parser.add_argument("--frames", type=int, nargs="+", help="video lengths (default: tiny 25 100 400 1600, "
                                                              "real size 25 100)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="default: bf16 on cuda, else fp32")
    parser.add_argument("--offload", action="store_true", help="SAM-2's memory bank on the host (tracker offload)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    model = "tiny" if args.tiny else "salma-1b"
    lengths = args.frames or ([25, 100, 400, 1600] if args.tiny else [25, 100])
    print(f"model={model} (random weights, random SAM-2 memory modules) video={HEIGHT}x{WIDTH} device={args.device} "
          f"dtype={args.dtype or 'default'} offload={args.offload} threads={args.threads}; one expression, "
          f"5 uniform LLM frames, SAM-2 memory tracking, streamed")
    header = f"{'T':>6} {'frames/s':>9} {'seconds':>8} {'RSS built MiB':>14} {'peak RSS MiB':>13} {'peak - built':>13}"
    if args.device.startswith("cuda"):
        header += f" {'peak CUDA MiB':>14}"
    print(header)
    results = {}
    for n_frames in lengths:
        spec = dict(model=model, frames=n_frames, device=args.device, dtype=args.dtype, offload=args.offload,
                    threads=args.threads)
        r = results[n_frames] = run(spec)
        row = (f"{n_frames:>6} {r['fps']:>9.2f} {r['seconds']:>8.1f} {r['built_rss_mib']:>14.0f} "
               f"{r['peak_rss_mib']:>13.0f} {r['peak_rss_mib'] - r['built_rss_mib']:>13.0f}")
        if r["cuda_peak_mib"] is not None:
            row += f" {r['cuda_peak_mib']:>14.0f}"
        print(row, flush=True)
    first, last = min(results), max(results)
    print(f"peak ratio {last}/{first}: {results[last]['peak_rss_mib'] / results[first]['peak_rss_mib']:.3f}")


if __name__ == "__main__":
    main()
