"""Write synthetic sets in the layouts the converters read: Ref-YouTube-VOS and Ref-DAVIS17 as
downloaded, and the own-data format (projects/salma/datasets/synthetic_raw.py).

    python tools/data/make_synthetic_raw.py --out data/synthetic_raw
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

from projects.salma.datasets.synthetic_raw import make_synthetic_raw  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-frames", type=int, default=4)
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--width", type=int, default=128)
    args = parser.parse_args(argv)
    paths = make_synthetic_raw(args.out, seed=args.seed, num_frames=args.num_frames, height=args.height,
                               width=args.width)
    print(json.dumps(paths, indent=2))
    return paths


if __name__ == "__main__":
    main()
