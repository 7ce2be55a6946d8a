"""Convert your own images / frame folders / videos, masks and sentences (one annotations.json, format in
projects/salma/datasets/convert/own_data.py and README "Fine-tune on your own data") to the RefCOCO
layout (OUT/res) and the MeViS layout (OUT/rvos/<split>).

    python tools/data/convert_own_data.py --annotations my_data/annotations.json --out data/my_data
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

from projects.salma.datasets.convert.own_data import convert_own_data  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--annotations", required=True, help="annotations.json (paths relative to its folder)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--skip-bad", action="store_true", help="leave items with a bad record out (listed)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    report = convert_own_data(args.annotations, args.out, on_error="skip" if args.skip_bad else "raise")
    print(json.dumps(report, indent=2))
    print(f"converted in {time.perf_counter() - start:.1f} s")
    return report


if __name__ == "__main__":
    main()
