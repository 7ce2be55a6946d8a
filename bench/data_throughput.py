"""Data pipeline throughput of one worker at real SALMA-1B sizes.

    python bench/data_throughput.py [--data DIR] [--iters 20]

Per sample type (a RefCOCO image sample with 3 objects; a MeViS video sample with 5 frames and
3 expressions): samples/s of an in-process loop (decode JPEG, InternVL tiles at 448 px with up to
12 + 1 tiles, SAM-2 input at 1024 px, masks, tokenisation with 256 image tokens per tile), a
per-stage breakdown, and the peak RSS of a process doing only that. One torch thread, as in a
DataLoader worker. Without --data, a synthetic set at 480x640 is written to a temp folder.
The tokenizer is the tiny offline BPE (no weights here); the Qwen2.5 fast tokenizer costs about
the same, the image-token runs being special tokens.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

REAL = dict(tokenizer=dict(type="build_tiny_tokenizer"), image_size=448, image_seq_length=256, min_dynamic_patch=1,
            max_dynamic_patch=12, sam_image_size=1024, max_length=8192)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_phase(phase: str, data: str, iters: int) -> dict:
    import torch

    torch.set_num_threads(1)
    from projects.salma.datasets import RefCOCODataset, RefVOSDataset
    from projects.salma.datasets.templates import image_token_string
    from projects.salma.datasets.transforms import (internvl_pixel_values, load_image, sam_pixel_values,
                                                    to_normalized_tensor)

    if phase == "refcoco":
        ds = RefCOCODataset(data_root=os.path.join(data, "refcoco_synth"),
                            image_folder=os.path.join(data, "refcoco_synth", "images"), split="train", **REAL)
    else:
        ds = RefVOSDataset(data_root=os.path.join(data, "mevis_synth", "train"), expression_file="meta_expressions.json",
                           image_folder="JPEGImages", mask_file="mask_dict.json", num_frames=5, **REAL)
    rss_ready = _rss_mib()
    sample = ds[0]  # warm-up
    start = time.perf_counter()
    for i in range(iters):
        sample = ds[i % len(ds)]
    per_sample = (time.perf_counter() - start) / iters

    # Stage breakdown on the same inputs.
    paths = sample["meta"]["image_paths"]
    stages = {}
    t = time.perf_counter()
    images = [load_image(p) for p in paths]
    stages["decode_jpeg"] = time.perf_counter() - t
    t = time.perf_counter()
    if phase == "refcoco":
        tiles = internvl_pixel_values(images[0], image_size=448, max_num=12)
    else:
        tiles = [to_normalized_tensor(im, 448) for im in images]
    stages["internvl_tiles"] = time.perf_counter() - t
    t = time.perf_counter()
    for im in images:
        sam_pixel_values(im, size=1024)
    stages["sam_1024"] = time.perf_counter() - t
    t = time.perf_counter()
    ds.tokenizer(image_token_string(len(tiles), 256) + "Please segment the red circle in this image.",
                 return_offsets_mapping=True, add_special_tokens=False)
    stages["tokenise_one_turn"] = time.perf_counter() - t
    tensor_mib = sum(v.numel() * v.element_size() for k, v in sample.items()
                     if hasattr(v, "numel")) / 2 ** 20
    return {
        "phase": phase,
        "samples_per_s": 1 / per_sample,
        "ms_per_sample": 1000 * per_sample,
        "tiles": int(sample["pixel_values"].shape[0]),
        "seq_len": int(sample["input_ids"].shape[0]),
        "masks": list(sample["masks"].shape),
        "sample_tensors_mib": tensor_mib,
        "rss_after_index_mib": rss_ready,
        "peak_rss_mib": _rss_mib(),
        "stages_ms": {k: 1000 * v for k, v in stages.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="synthetic set written at a realistic size (default: make one)")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--phase", choices=["refcoco", "video"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(run_phase(args.phase, args.data, args.iters)))
        return

    tmp = None
    if args.data is None:
        from projects.salma.datasets.synthetic import make_synthetic

        tmp = tempfile.TemporaryDirectory()
        args.data = tmp.name
        start = time.perf_counter()
        make_synthetic(args.data, seed=0, num_images=20, num_val_images=0, num_videos=4, num_val_videos=0,
                       num_frames=8, height=480, width=640, num_llava=0, num_gcg=0)
        print(f"synthetic set 480x640 (20 images, 4 videos x 8 frames) written in {time.perf_counter() - start:.1f} s")
    rows = []
    for phase in ("refcoco", "video"):  # one process each, so the peak RSS is that phase's own
        out = subprocess.run([sys.executable, __file__, "--phase", phase, "--data", args.data,
                              "--iters", str(args.iters)], check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"\n{'sample':<10}{'samples/s':>10}{'ms/sample':>11}{'tiles':>7}{'tokens':>8}{'masks':>18}"
          f"{'tensors MiB':>13}{'peak RSS MiB':>14}")
    for r in rows:
        print(f"{r['phase']:<10}{r['samples_per_s']:>10.2f}{r['ms_per_sample']:>11.1f}{r['tiles']:>7}{r['seq_len']:>8}"
              f"{str(tuple(r['masks'])):>18}{r['sample_tensors_mib']:>13.1f}{r['peak_rss_mib']:>14.0f}")
    print("\nstage breakdown (ms, one sample):")
    for r in rows:
        print(f"  {r['phase']:<8} " + "  ".join(f"{k} {v:.1f}" for k, v in r["stages_ms"].items()))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
