"""Build time and peak memory of each backbone's SALMA model at real size on the CPU (random weights,
no files): one fresh process per config, so every peak is that config's alone.

    python bench/backbone_load.py                         # the shipped configs, MLLM in bf16
    python bench/backbone_load.py --configs configs/SALMA-Qwen3-VL-4B.py --dtype float32

Per config: the parameters (all, trainable), the seconds ``MODELS.build`` takes (weights initialised
as transformers does; LoRA added; trainable weights fp32), and the process's peak resident memory
(``ru_maxrss``) after the build, beside the memory before it (Python, torch and transformers
imported). The architecture is the config's ``*_arch`` block (``projects.salma.testing.real_size_model_cfg``).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
CONFIGS = ["configs/SALMA-1B.py", "configs/SALMA-InternVL3-2B.py", "configs/SALMA-Qwen2.5-VL-3B.py",
           "configs/SALMA-Qwen3-VL-4B.py"]


def measure_one(config: str, dtype: str) -> dict:
    """Build ``config``'s model in this process; the figures of the module docstring."""
    sys.path.insert(0, REPO)
    import torch
    from mmengine.config import Config

    from projects.salma.registry import MODELS
    from projects.salma.testing import real_size_model_cfg

    torch.set_num_threads(os.cpu_count() or 1)
    cfg = Config.fromfile(os.path.join(REPO, config))
    model_cfg = real_size_model_cfg(cfg, llm_dtype=dtype)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB (ru_maxrss is in KiB)
    start = time.perf_counter()
    model = MODELS.build(model_cfg)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"config": config, "mllm": model_cfg.mllm.type, "dtype": dtype,
            "params_B": sum(p.numel() for p in model.parameters()) / 1e9,
            "trainable_M": sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6,
            "build_s": seconds, "rss_before_GiB": before, "peak_rss_GiB": peak}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=CONFIGS)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"], help="the MLLM's dtype")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure this config here
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure_one(args.one, args.dtype)))
        return []
    rows = []
    for config in args.configs:
        out = subprocess.run([sys.executable, __file__, "--one", config, "--dtype", args.dtype], cwd=REPO,
                             capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"{config}: the build failed:\n{out.stderr[-3000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n| config | MLLM | params (B) | trainable (M) | build (s) | peak RSS (GiB) | before build (GiB) |\n"
          f"|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['mllm']} ({r['dtype']}) | {r['params_B']:.2f} | {r['trainable_M']:.0f} | "
              f"{r['build_s']:.1f} | {r['peak_rss_GiB']:.2f} | {r['rss_before_GiB']:.2f} |")
    return rows


if __name__ == "__main__":
    main()
