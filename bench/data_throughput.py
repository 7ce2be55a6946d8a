"""Data pipeline throughput of one worker at real SALMA-1B sizes.

    python bench/data_throughput.py [--data DIR] [--iters 20] [--phases refcoco osprey ...]

Per reader (a RefCOCO image sample with 3 objects; a MeViS video sample with 5 frames and 3
expressions; an Osprey region conversation; a Chat-UniVi video QA sample, 5 frames of a 150-frame
mp4; an SA-V sample, 5 annotated frames of a 121-frame mp4 and up to 5 objects; a Ref-SAV
evaluation item, every annotated frame of its mp4 at 1024 px; Flickr and PSG grounded captions):
samples/s of an in-process loop (decode JPEG / mp4, InternVL tiles at 448 px with up to 12 + 1
tiles, SAM-2 input at 1024 px, masks, tokenisation with 256 image tokens per tile), and the peak
RSS of a process doing only that; for RefCOCO and MeViS also a per-stage breakdown. One torch
thread, as in a DataLoader worker. Without --data, a synthetic set at 480x640 is written to a
temp folder. The tokenizer is the tiny offline BPE (no weights here); the Qwen2.5 fast tokenizer
costs about the same, the image-token runs being special tokens.
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
    """Peak RSS of this process. Linux: VmHWM, the high-water mark of this process's own memory (the
    ru_maxrss of an exec'd child starts at its parent's peak, here the data generation's)."""
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


PHASES = ("refcoco", "video", "osprey", "video_qa", "sav", "ref_sav", "flickr", "psg")


def build_reader(phase: str, data: str):
    """The reader a phase measures, at SALMA-1B's sizes on the bench's synthetic set."""
    from projects.salma import datasets as D

    if phase == "refcoco":
        return D.RefCOCODataset(data_root=os.path.join(data, "refcoco_synth"),
                                image_folder=os.path.join(data, "refcoco_synth", "images"), split="train", **REAL)
    if phase == "video":
        return D.RefVOSDataset(data_root=os.path.join(data, "mevis_synth", "train"),
                               expression_file="meta_expressions.json", image_folder="JPEGImages",
                               mask_file="mask_dict.json", num_frames=5, **REAL)
    if phase == "osprey":
        return D.OspreyDataset(data_root=os.path.join(data, "osprey_synth"), data_file="Osprey-724K/osprey_conversation.json",
                               image_folder=["images/train2017", "images/val2017"], **REAL)
    if phase == "video_qa":
        return D.VideoQADataset(data_root=os.path.join(data, "video_qa_synth"), data_file="video_chat.json",
                                video_folder="videos", num_frames=5, **REAL)
    if phase == "sav":
        return D.SAVDataset(data_root=os.path.join(data, "sav_synth"), expression_file="sav_expressions.json",
                            video_folder="sav_train", num_frames=5, num_objects_per_sample=5, **REAL)
    if phase == "ref_sav":
        return D.RefSAVDataset(data_root=os.path.join(data, "sav_synth"),
                               expression_file="ref_sav_valid/meta_expressions_valid.json",
                               mask_file="ref_sav_valid/mask_dict.json", video_folder="sav_train",
                               video_file="{video_id:.7}/{video_id}.mp4", mode="eval", num_frames=5,
                               frame_sampling="first", sam_all_frames=True, **REAL)
    if phase == "flickr":
        return D.FlickrGCGDataset(data_file=os.path.join(data, "flickr_synth", "flickr_mergedGT_GCG_train.json"),
                                  image_folder=os.path.join(data, "refcoco_synth", "images"), **REAL)
    if phase == "psg":
        return D.GCGDataset(data_file=os.path.join(data, "psg_synth", "OpenPsgGCG_train.json"),
                            image_folder=os.path.join(data, "refcoco_synth", "images"), **REAL)
    raise ValueError(f"unknown phase {phase!r}; known: {PHASES}")


def stage_breakdown(phase: str, ds, sample) -> dict:
    """Per-stage times (s) of one RefCOCO / MeViS sample's inputs."""
    from projects.salma.datasets.templates import image_token_string
    from projects.salma.datasets.transforms import (internvl_pixel_values, load_image, sam_pixel_values,
                                                    to_normalized_tensor)

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
    return stages


def run_phase(phase: str, data: str, iters: int) -> dict:
    import torch

    torch.set_num_threads(1)
    ds = build_reader(phase, data)
    rss_ready = _rss_mib()
    sample = ds[0]  # warm-up
    start = time.perf_counter()
    for i in range(iters):
        sample = ds[i % len(ds)]
    per_sample = (time.perf_counter() - start) / iters
    stages = stage_breakdown(phase, ds, sample) if phase in ("refcoco", "video") else {}
    tensor_mib = sum(v.numel() * v.element_size() for k, v in sample.items()
                     if hasattr(v, "numel")) / 2 ** 20
    return {
        "phase": phase,
        "samples_per_s": 1 / per_sample,
        "ms_per_sample": 1000 * per_sample,
        "tiles": int(sample["pixel_values"].shape[0]),
        "seq_len": int(sample["input_ids"].shape[0]),
        "masks": None if sample["masks"] is None else list(sample["masks"].shape),
        "regions": None if sample.get("prompt_masks") is None else int(sample["prompt_masks"].shape[0]),
        "sample_tensors_mib": tensor_mib,
        "rss_after_index_mib": rss_ready,
        "peak_rss_mib": _rss_mib(),
        "stages_ms": {k: 1000 * v for k, v in stages.items()},
    }


def make_bench_data(out: str) -> None:
    """The synthetic set at 480x640, videos of realistic length for the mp4 readers."""
    from projects.salma.datasets.synthetic import make_synthetic, write_sav, write_video_qa

    make_synthetic(out, seed=0, num_images=20, num_val_images=0, num_videos=4, num_val_videos=0, num_frames=8,
                   height=480, width=640, num_llava=0, num_gcg=0, num_osprey=20, num_video_qa=0, num_sav_videos=0,
                   num_ref_sav_videos=0, num_flickr=20, num_psg=20)
    write_video_qa(out, seed=0, num_items=3, num_frames=150, height=480, width=640)  # 6 s at 24 fps
    write_sav(out, seed=0, num_videos=2, num_val_videos=1, num_frames=31, height=480, width=640)  # 121 frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="synthetic set written at a realistic size (default: make one)")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES))
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(run_phase(args.phase, args.data, args.iters)))
        return

    tmp = None
    if args.data is None:
        tmp = tempfile.TemporaryDirectory()
        args.data = tmp.name
        start = time.perf_counter()
        make_bench_data(args.data)
        print(f"synthetic set 480x640 written in {time.perf_counter() - start:.1f} s (20 images, 4 MeViS videos x 8 "
              f"frames, 20 Osprey / Flickr / PSG records, 3 video-QA mp4 x 150 frames, 3 SA-V mp4 x 121 frames)")
    rows = []
    for phase in args.phases:  # one process each, so the peak RSS is that phase's own
        out = subprocess.run([sys.executable, __file__, "--phase", phase, "--data", args.data,
                              "--iters", str(args.iters)], check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"\n{'sample':<10}{'samples/s':>10}{'ms/sample':>11}{'tiles':>7}{'tokens':>8}{'masks':>20}{'regions':>9}"
          f"{'tensors MiB':>13}{'peak RSS MiB':>14}")
    for r in rows:
        masks = "-" if r["masks"] is None else str(tuple(r["masks"]))
        regions = "-" if r["regions"] is None else r["regions"]
        print(f"{r['phase']:<10}{r['samples_per_s']:>10.2f}{r['ms_per_sample']:>11.1f}{r['tiles']:>7}{r['seq_len']:>8}"
              f"{masks:>20}{regions:>9}{r['sample_tensors_mib']:>13.1f}{r['peak_rss_mib']:>14.0f}")
    print("\nstage breakdown (ms, one sample):")
    for r in rows:
        if r["stages_ms"]:
            print(f"  {r['phase']:<8} " + "  ".join(f"{k} {v:.1f}" for k, v in r["stages_ms"].items()))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
