"""Export a trained SALMA checkpoint: ``python tools/export.py CONFIG CKPT --out DIR
[--sam2-memory PATH|random] [--dtype bfloat16] [--cfg-options k=v ...]``.

Writes one self-contained folder (config.json, model.safetensors with LoRA merged, tokenizer and
chat template) that ``SALMAModel.from_pretrained(DIR)`` and ``tools/infer.py`` load without the
config (see ``projects.salma.export``). The readers' image settings and the video options come
from the config's datasets and ``test_options``; change them with ``--cfg-options``.
"""
import argparse

from mmengine.config import DictAction

from projects.salma.engine.runner import load_config
from projects.salma.export import export_model


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Export a trained SALMA checkpoint as a self-contained folder")
    parser.add_argument("config")
    parser.add_argument("checkpoint", help="mmengine checkpoint file or DeepSpeed checkpoint folder")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--sam2-memory", help="SAM-2 .pt / HF sam2_video folder with the video memory modules "
                        "(default: test_options.sam2_memory, else the config's SAM-2 checkpoint); 'random' for "
                        "tiny test models")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                        help="cast the saved weights (default: as trained)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config keys: k=v")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    if args.sam2_memory:
        cfg.merge_from_dict({"test_options.sam2_memory": args.sam2_memory})
    export_model(cfg, args.checkpoint, args.out, dtype=args.dtype)
    print(f"exported to {args.out}")


if __name__ == "__main__":
    main()
