"""Convert Meta's SAM-2 checkpoint (``sam2[.1]_hiera_*.pt``) into an HF-format folder.

    python tools/convert/sam2_to_hf.py --checkpoint sam2.1_hiera_large.pt --size large --out work_dirs/sam2.1-hiera-large

The default ``--target video`` keeps every weight (image model + memory modules); the project's
``load_sam2(folder, target="image")`` reads such a folder as the image model too. Size and
version are read from the checkpoint; ``--size`` / ``--version`` are checked against it.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from projects.salma.models.convert.common import DTYPES
from projects.salma.models.convert.sam2 import convert_sam2_checkpoint, sam2_config_from_json


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="Meta .pt file ({'model': state_dict})")
    parser.add_argument("--out", required=True, help="output folder (config.json + model.safetensors)")
    parser.add_argument("--size", default=None, help="tiny | small | base_plus | large (checked against the checkpoint)")
    parser.add_argument("--version", default=None, help="2.0 | 2.1 (checked against the checkpoint)")
    parser.add_argument("--target", choices=("video", "image"), default="video", help="Sam2VideoModel (all weights) or Sam2Model")
    parser.add_argument("--config", default=None, help="HF config.json to use instead of the published size (custom models)")
    parser.add_argument("--image-size", type=int, default=1024)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="cast before saving (default: keep)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    out = convert_sam2_checkpoint(
        args.checkpoint,
        args.out,
        size=args.size,
        version=args.version,
        target=args.target,
        config=sam2_config_from_json(args.config) if args.config else None,
        image_size=args.image_size,
        dtype=DTYPES[args.dtype] if args.dtype else None,
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
