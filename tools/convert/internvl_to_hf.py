"""Convert an InternVL2.5 folder in the original remote-code layout (``InternVLChatModel``) into
transformers' native ``InternVLForConditionalGeneration`` folder, copying the tokenizer files.

    python tools/convert/internvl_to_hf.py --model checkpoints/InternVL2_5-1B --out checkpoints/InternVL2_5-1B-hf

Not required for training: ``load_internvl`` converts the original layout on the fly.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from projects.salma.models.convert.common import DTYPES
from projects.salma.models.convert.internvl import convert_internvl_checkpoint


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="original-layout folder (config.json, safetensors shards, tokenizer)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default: the stored dtype")
    parser.add_argument("--image-token-id", type=int, default=None, help="default: <IMG_CONTEXT> from the tokenizer files")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    out = convert_internvl_checkpoint(
        args.model,
        args.out,
        dtype=DTYPES[args.dtype] if args.dtype else None,
        image_token_id=args.image_token_id,
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
