"""Write the synthetic SALMA datasets (RefCOCO-, MeViS-, LLaVA- and GCG-style) to --out.

    python tools/data/make_synthetic.py --out data/synthetic --seed 0
    python tools/data/make_synthetic.py --out data/synthetic_real --height 480 --width 640 --num-images 20
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

from projects.salma.datasets.synthetic import make_synthetic  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-images", type=int, default=300, help="train images (RefCOCO-style)")
    parser.add_argument("--num-val-images", type=int, default=50)
    parser.add_argument("--num-videos", type=int, default=20, help="train videos (MeViS-style)")
    parser.add_argument("--num-val-videos", type=int, default=8, help="valid_u videos")
    parser.add_argument("--num-frames", type=int, default=8)
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--relational-fraction", type=float, default=0.25)
    parser.add_argument("--num-llava", type=int, default=40)
    parser.add_argument("--num-gcg", type=int, default=40)
    args = parser.parse_args()
    start = time.perf_counter()
    roots = make_synthetic(
        args.out, seed=args.seed, num_images=args.num_images, num_val_images=args.num_val_images,
        num_videos=args.num_videos, num_val_videos=args.num_val_videos, num_frames=args.num_frames,
        height=args.height, width=args.width, relational_fraction=args.relational_fraction,
        num_llava=args.num_llava, num_gcg=args.num_gcg)
    print(json.dumps(roots, indent=2))
    print(f"written in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
