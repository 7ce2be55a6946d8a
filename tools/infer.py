"""Segment with an exported SALMA model: ``python tools/infer.py --model DIR (--image PATH | --video
DIR_OR_MP4) --text "the dog on the left" --out OUT [--device cuda] [--dtype bfloat16]``.

Writes the masks as PNGs, an overlay picture and result.json to OUT (see
``projects.salma.inference``) and prints the answer. A video's frames are read, tracked and written
one at a time (a progress bar counts them), so its length does not matter; ``--offload`` keeps
SAM-2's memory bank on the host when predicting on a GPU. ``--text`` is a referring expression, asked
as the evaluation asks it; ``--verbatim`` sends it as the question instead.

Regions (visual prompts, images only): ``--box x0,y0,x1,y1`` (pixels) and ``--region mask.png``
(non-zero = inside), repeatable, numbered in the order given: region1, region2, ... ``--text`` is
then a question about them, sent as is (``--text "What is in region1?"``); nothing is segmented
unless the answer has ``[SEG]``.
"""
import argparse

from projects.salma.datasets.errors import DataError
from projects.salma.datasets.image_policy import set_max_pixels
from projects.salma.inference import infer_image, infer_video
from projects.salma.salma_model import SALMAModel


class _Region(argparse.Action):
    """Collects --box / --region in command-line order (boxes parsed to 4 numbers)."""

    def __call__(self, parser, namespace, value, option_string=None):
        if option_string == "--box":
            try:
                box = tuple(float(v) for v in value.split(","))
            except ValueError:
                box = ()
            if len(box) != 4:
                parser.error(f"--box {value!r}: expected x0,y0,x1,y1 (four numbers, pixels)")
            value = box
        regions = getattr(namespace, self.dest) or []
        setattr(namespace, self.dest, regions + [value])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Segment an image or a video with an exported SALMA model")
    parser.add_argument("--model", required=True, help="folder written by tools/export.py, or a published Sa2VA folder")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", help="image file")
    source.add_argument("--video", help="folder of frames (sorted by name) or a video file (read with OpenCV)")
    parser.add_argument("--text", required=True, help="referring expression (or the question, with --verbatim or "
                                                      "regions)")
    parser.add_argument("--box", dest="regions", action=_Region, metavar="X0,Y0,X1,Y1",
                        help="a region given as a box in pixels (repeatable; regionN in order of appearance)")
    parser.add_argument("--region", dest="regions", action=_Region, metavar="MASK.PNG",
                        help="a region given as a mask image, non-zero inside (repeatable)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--device", help="default: cuda if available, else cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                        help="default: bfloat16 on cuda, float32 on cpu")
    parser.add_argument("--max-new-tokens", type=int, help="generation budget (default: the export's)")
    parser.add_argument("--verbatim", action="store_true", help="send --text as the question, without the template")
    parser.add_argument("--offload", action="store_true",
                        help="video: keep SAM-2's memory bank on the host (GPU memory: only the frame being tracked)")
    parser.add_argument("--max-pixels", type=int,
                        help="largest image (width x height) decoded, checked from the file header first (default: "
                             "SALMA_MAX_IMAGE_PIXELS, else 2^26 = 8192x8192)")
    parser.add_argument("--no-verify-weights", action="store_true",
                        help="skip the check of model.safetensors against the hash recorded in config.json")
    args = parser.parse_args(argv)
    if args.regions and args.video:
        parser.error("--box / --region are for --image (regions index an image's tiles)")
    if args.offload and not args.video:
        parser.error("--offload is for --video (SAM-2's memory bank)")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.max_pixels is not None:
        set_max_pixels(args.max_pixels)
    model = SALMAModel.from_pretrained(args.model, device=args.device, dtype=args.dtype,
                                       verify_weights=not args.no_verify_weights)
    if args.offload:
        if model.tracker is None:
            raise ValueError(f"--offload: {args.model} has no SAM-2 memory tracker (propagation 'decode_all')")
        model.tracker.offload = True
    kwargs = dict(max_new_tokens=args.max_new_tokens, template=not args.verbatim)
    if args.image:
        summary = infer_image(model, args.image, args.text, args.out, regions=args.regions, **kwargs)
    else:
        summary = infer_video(model, args.video, args.text, args.out, **kwargs)
    print(f"Q: {summary['question']}\nA: {summary['answer']}")
    print(f"{summary['n_seg']} [SEG] -> {len(summary['masks'])} mask PNGs and overlay.png in {args.out}")
    return summary


if __name__ == "__main__":
    try:
        main()
    except DataError as err:  # a bad input: its message names the file; no traceback
        raise SystemExit(f"infer.py: {err}") from err
