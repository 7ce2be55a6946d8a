"""Convert Ref-DAVIS17 (DAVIS-2017 + the text annotations) to the MeViS layout the ref_davis17
benchmark reads (projects/salma/datasets/convert/ref_davis17.py; the evaluation protocol is stated there).

    python tools/data/convert_ref_davis17.py --davis data/raw/DAVIS --text data/raw/davis_text_annotations \
        --out data/davis17                      # data/davis17/valid: tools/test.py --dataset ref_davis17
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

from projects.salma.datasets.convert.ref_davis17 import SPLITS, convert_ref_davis17  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--davis", required=True, help="DAVIS-2017 folder (JPEGImages/480p, Annotations/480p, ImageSets)")
    parser.add_argument("--text", required=True, help="folder with Davis17_annot{1,2}{,_full_video}.txt")
    parser.add_argument("--out", required=True)
    parser.add_argument("--splits", nargs="+", default=["valid"], choices=list(SPLITS))
    parser.add_argument("--annotations", default="Annotations/480p",
                        help="mask folder under --davis (ReferFormer's files: Annotations_unsupervised/480p)")
    parser.add_argument("--mask-file", default="mask_dict.json", help="mask_dict.json or mask_dict.pkl")
    parser.add_argument("--copy-frames", action="store_true", help="copy the frames (default: JPEGImages is a link)")
    parser.add_argument("--skip-bad", action="store_true", help="leave bad records out (listed) instead of stopping")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    report = convert_ref_davis17(args.davis, args.text, args.out, splits=tuple(args.splits),
                                 annotations=args.annotations, mask_file=args.mask_file, copy_frames=args.copy_frames,
                                 on_error="skip" if args.skip_bad else "raise")
    print(json.dumps(report, indent=2))
    print(f"converted in {time.perf_counter() - start:.1f} s")
    return report


if __name__ == "__main__":
    main()
