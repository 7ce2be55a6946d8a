"""Convert GLaMM's RefCOCOg-GCG json to the GranD-f layout GCGDataset reads.

    python tools/data/convert_gcg.py --src data/glamm/RefCOCOg_GCG_train.json \
        --out data/glamm/RefCOCOg_GCG_train_grandf.json
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

from projects.salma.datasets.gcg import convert_refcocog_gcg  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    with open(args.src, encoding="utf-8") as f:
        records, dropped = convert_refcocog_gcg(json.load(f))
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(records, f)
    print(f"{len(records)} records written to {args.out}; dropped: {dropped}")


if __name__ == "__main__":
    main()
