"""The web demo: ``python3 tools/app.py --model DIR [--device cuda] [--dtype bfloat16] [--host 127.0.0.1]
[--port 7860]`` serves a local page (Gradio) and prints its address.

``--model``: a folder written by ``tools/export.py`` (or ``tools/demo_cpu.py``'s export), or a
published Sa2VA folder. The page: an image, a video file or a zip of frames, and a referring
expression or a chat question; the answer, an overlay per ``[SEG]``, the masks as PNGs (see
``projects.salma.app``). ``--host 0.0.0.0`` serves other machines too (no authentication: only
on a trusted network).
"""
import argparse

from projects.salma.app import SegmentationDemo, launch
from projects.salma.datasets.image_policy import set_max_pixels
from projects.salma.salma_model import SALMAModel


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Web demo of an exported SALMA model")
    parser.add_argument("--model", required=True, help="folder written by tools/export.py, or a published Sa2VA folder")
    parser.add_argument("--device", help="default: cuda if available, else cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                        help="default: bfloat16 on cuda, float32 on cpu")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    parser.add_argument("--max-pixels", type=int,
                        help="largest image (width x height) decoded, checked from the file header first (default: "
                             "SALMA_MAX_IMAGE_PIXELS, else 2^26 = 8192x8192)")
    parser.add_argument("--no-verify-weights", action="store_true",
                        help="skip the check of model.safetensors against the hash recorded in config.json")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.max_pixels is not None:
        set_max_pixels(args.max_pixels)
    model = SALMAModel.from_pretrained(args.model, device=args.device, dtype=args.dtype,
                                       verify_weights=not args.no_verify_weights)
    demo = SegmentationDemo(model, name=args.model)
    try:
        launch(demo, host=args.host, port=args.port)
    finally:
        demo.close()


if __name__ == "__main__":
    main()
