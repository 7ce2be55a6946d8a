"""Draw where CMA attends, per sample and model: image | structure prior | gate | attention to [SEG]
| to the expression tokens | to the null key | norm of CMA's output | predicted mask; one PNG per
sample, one row per model (``--compare`` adds rows, e.g. the baseline).

    python tools/visualize_attention.py --config CFG --checkpoint CKPT --image a.jpg --text "the red circle"
    python tools/visualize_attention.py --config CFG --checkpoint CKPT --dataset refcoco_synth --max-items 3 \
        --compare configs/tiny/ablations/0_baseline.py BASELINE_CKPT --out work_dirs/attention

With a RES dataset whose annotations flag distractors (the synthetic distractor mode), the share of
CMA's output on the target / distractor / other objects is written above the output panel and to
``attention.json``. Each model answers with its own generation (no [SEG]: its row says so).
"""
import argparse
import json
import os

import torch
from mmengine.config import DictAction

from projects.salma.analysis.attention import dataset_samples, image_samples, predict_row, render_rows
from projects.salma.engine.runner import load_config
from projects.salma.build import EvalOptions, build_model


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--checkpoint", required=True, help="mmengine checkpoint, or 'none' (config weights)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", nargs="+", help="image files (each with every --text)")
    source.add_argument("--dataset", help="a RES test_datasets entry of the config")
    parser.add_argument("--text", nargs="+", help="referring expressions (with --image)")
    parser.add_argument("--split", help="the entry's split (when it has several)")
    parser.add_argument("--max-items", type=int, default=3, help="images of --dataset")
    parser.add_argument("--sentences-per-item", type=int, default=1, help="sentences per --dataset image")
    parser.add_argument("--compare", nargs=2, action="append", default=[], metavar=("CONFIG", "CHECKPOINT"),
                        help="another model drawn below (repeatable)")
    parser.add_argument("--out", default="work_dirs/attention")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, help="override keys of every config: k=v")
    parser.add_argument("--allow-missing-weights", action="store_true")
    args = parser.parse_args(argv)
    if args.image and not args.text:
        parser.error("--image needs --text")
    return args


def main(argv=None) -> dict[str, list]:
    args = parse_args(argv)
    device = torch.device(args.device)
    models = []
    for config, checkpoint in [(args.config, args.checkpoint), *args.compare]:
        cfg = load_config(config, args.cfg_options)
        model = build_model(cfg, checkpoint, device, allow_missing_weights=args.allow_missing_weights)
        label = os.path.splitext(os.path.basename(config))[0]
        tokens = EvalOptions.from_config(cfg).max_new_tokens
        if args.dataset:
            samples, objects = dataset_samples(cfg, model, args.dataset, split=args.split, max_items=args.max_items,
                                               per_item=args.sentences_per_item)
        else:
            samples, objects = image_samples(cfg, model, args.image, args.text), None
        models.append((label, model, samples, objects, tokens))
    keys = [s.key for s in models[0][2]]
    if any([s.key for s in m[2]] != keys for m in models[1:]):
        raise ValueError("the compared configs read different samples (another dataset or split)")
    os.makedirs(args.out, exist_ok=True)
    drawn, report = {}, {}
    for i, key in enumerate(keys):
        rows = [predict_row(model, samples[i].row, samples[i].image, label, max_new_tokens=tokens, objects=objects)
                for label, model, samples, objects, tokens in models]
        path = render_rows(rows, os.path.join(args.out, f"{key}.png"), title=f"{key}: {rows[0].text}")
        drawn[key] = rows
        report[key] = {"png": path, "text": rows[0].text, "models": {r.label: {"answer": r.answer, "note": r.note,
                                                                               "shares": r.shares} for r in rows}}
        print(f"{path}: " + "; ".join(f"{r.label}: {r.answer!r}" + (f" ({r.note})" if r.note else "") for r in rows))
    with open(os.path.join(args.out, "attention.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    return drawn


if __name__ == "__main__":
    main()
