"""Convert Ref-YouTube-VOS, as downloaded, to the MeViS layout (projects/salma/datasets/convert/ref_ytvos.py).

    python tools/data/convert_ref_ytvos.py --root data/raw/ref_ytvos --out data/ref_ytvos
    # configs/SALMA-1B.py reads data/ref_ytvos/train with mask_dict.pkl (Sa2VA's file name):
    python tools/data/convert_ref_ytvos.py --root data/raw/ref_ytvos --out data/ref_ytvos --mask-file mask_dict.pkl
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

from projects.salma.datasets.convert.ref_ytvos import SPLITS, convert_ref_ytvos  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="folder with meta_expressions/, train/, valid/")
    parser.add_argument("--out", required=True)
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS)
    parser.add_argument("--mask-file", default="mask_dict.json", help="mask_dict.json or mask_dict.pkl")
    parser.add_argument("--copy-frames", action="store_true", help="copy the frames (default: JPEGImages is a link)")
    parser.add_argument("--skip-bad", action="store_true", help="leave bad records out (listed) instead of stopping")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    report = convert_ref_ytvos(args.root, args.out, splits=tuple(args.splits), mask_file=args.mask_file,
                               copy_frames=args.copy_frames, on_error="skip" if args.skip_bad else "raise")
    print(json.dumps(report, indent=2))
    print(f"converted in {time.perf_counter() - start:.1f} s")
    return report


if __name__ == "__main__":
    main()
