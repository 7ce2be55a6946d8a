"""Peak memory and latency of ``SALMAModel.predict``: one 448x448 image, one expression.

Real size (InternVL2.5-1B architecture + SAM-2.1 hiera-large, random weights, built as
``bench/mba_overhead.py`` builds them) in the exported form: LoRA merged, the evaluation's
readers' preprocessing. A random LLM never answers ``[SEG]``, so generation is steered
(``projects.salma.testing.forced_answer``): the real ``generate`` runs and emits ``--answer`` (its
true cost for that many tokens), so the mask path (teacher-forced pass, SAM-2 encoder, prior pass,
CMA, decoder) runs too. Latency: median and min over ``--reps`` after one warm-up call. Memory: CUDA
``max_memory_allocated`` during predict; on CPU the peak RSS sampled while predict runs (psutil)
and the process's ``ru_maxrss`` (which includes building the model).

    python bench/predict_cost.py                                   # CPU, fp32 (minutes per call)
    python bench/predict_cost.py --device cuda --dtype bfloat16
    python bench/predict_cost.py --tiny --reps 2                   # the tiny test model (smoke test)
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import os
import resource
import statistics
import sys
import threading
import time

import numpy as np
import torch
from mmengine.config import Config

from projects.salma.salma_model import as_salma_model
from projects.salma.models.mllm import InternVLMLLM
from projects.salma.salma_model import resolve_device_dtype
from projects.salma.registry import MODELS
from projects.salma.testing import forced_answer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mba_overhead import build_real_size_model  # noqa: E402

TINY_CONFIG = "configs/tiny/salma_tiny.py"


def build(args) -> torch.nn.Module:
    """The exported-form model (CPU, fp32 build), before moving to the device."""
    config = TINY_CONFIG if args.tiny else args.config
    cfg = Config.fromfile(config)
    cfg.test_options = dict(propagation="decode_all")  # images only: no video memory modules needed
    torch.manual_seed(0)
    if args.tiny:
        model = MODELS.build(copy.deepcopy(cfg.model))
    else:
        model = build_real_size_model(config, "float32")  # with the tiny tokenizer (no files needed)
    return as_salma_model(cfg, model.eval())


@contextlib.contextmanager
def timed_generation(timings: list[float]):
    """Record the wall time of every ``InternVLMLLM.generate`` call (inside ``forced_answer``: the
    real generation of the forced answer's tokens)."""
    inner = InternVLMLLM.generate

    def generate(self, input_ids, *args, **kwargs):
        start = time.perf_counter()
        out = inner(self, input_ids, *args, **kwargs)
        synchronize(input_ids.device)
        timings.append(time.perf_counter() - start)
        return out

    InternVLMLLM.generate = generate
    try:
        yield
    finally:
        InternVLMLLM.generate = inner


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class RSSSampler:
    """Peak resident memory of this process while the block runs (psutil, every few ms)."""

    def __init__(self, interval: float = 0.005) -> None:
        import psutil

        self.process, self.interval, self.peak = psutil.Process(), interval, 0
        self._stop = threading.Event()

    def __enter__(self):
        self.peak = self.process.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.2f} GiB"


def main(argv: list[str] | None = None) -> float:
    """Print latency and memory of predict; return the median latency in seconds."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/_base_/models/salma_1b.py")
    parser.add_argument("--tiny", action="store_true", help="the tiny test model instead of the real size")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="default: bf16 on cuda, else fp32")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--size", type=int, default=448, help="image side (px)")
    parser.add_argument("--answer", default="Sure, [SEG].", help="forced answer (its length sets the generated tokens)")
    args = parser.parse_args(argv)

    device, dtype = resolve_device_dtype(args.device, args.dtype)
    start = time.perf_counter()
    salma = build(args).to(device=device, dtype=dtype).eval()
    build_s = time.perf_counter() - start
    weights = sum(t.numel() * t.element_size() for t in salma.state_to_save().values())
    image = np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    text = "the red circle on the left"

    gen_times: list[float] = []
    n_tokens = len(salma.tokenizer(args.answer, add_special_tokens=False).input_ids) + 1  # + eos
    with forced_answer(args.answer), timed_generation(gen_times):
        out = salma.predict(image=image, text=text)  # warm-up
        if out["masks"].shape != (1, args.size, args.size):
            raise RuntimeError(f"the forced answer gave masks {tuple(out['masks'].shape)}")
        gen_times.clear()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        has_psutil = importlib.util.find_spec("psutil") is not None
        sampler = RSSSampler() if device.type == "cpu" and has_psutil else contextlib.nullcontext()
        latencies = []
        with sampler:
            for _ in range(args.reps):
                synchronize(device)
                t0 = time.perf_counter()
                salma.predict(image=image, text=text)
                synchronize(device)
                latencies.append(time.perf_counter() - t0)

    print(f"model={'tiny' if args.tiny else 'real size (InternVL2.5-1B + SAM-2.1 hiera-large)'} device={device} "
          f"dtype={str(dtype).replace('torch.', '')} image={args.size}x{args.size} reps={args.reps} "
          f"answer={args.answer!r} ({n_tokens} generated tokens)")
    print(f"build {build_s:.1f} s, weights {gib(weights)}")
    print(f"predict latency  median {statistics.median(latencies) * 1e3:9.1f} ms  (min {min(latencies) * 1e3:.1f})")
    print(f"  of which generation  median {statistics.median(gen_times) * 1e3:9.1f} ms")
    if device.type == "cuda":
        print(f"peak CUDA memory allocated during predict: {gib(torch.cuda.max_memory_allocated(device))} "
              f"(weights {gib(weights)})")
    else:
        if isinstance(sampler, RSSSampler):
            print(f"peak RSS during predict: {gib(sampler.peak)}")
        print(f"process peak RSS (ru_maxrss, includes the build): "
              f"{gib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)}")
    return statistics.median(latencies)


if __name__ == "__main__":
    main()
