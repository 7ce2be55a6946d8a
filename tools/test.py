"""Evaluate SALMA: ``python tools/test.py CONFIG --checkpoint CKPT|none [--dataset NAME ...]
[--split SPLIT] [--work-dir DIR] [--cfg-options k=v ...] [--max-items N] [--show N]
[--allow-missing-weights] [--attention-stats] [--launcher none|pytorch]``.

The config's ``test_datasets`` names what can be evaluated and ``test_options`` how (see
``projects.salma.evaluation.runner``). Results are resumable: rerunning with the same work dir
skips finished items. Multi-GPU: ``tools/dist_test.sh CONFIG GPUS [args]``.
"""
import argparse
import os.path as osp

from mmengine.config import DictAction

from projects.salma.engine.dist import leave_process_group
from projects.salma.engine.runner import load_config
from projects.salma.evaluation.runner import run_evaluation


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Evaluate a SALMA model")
    parser.add_argument("config")
    parser.add_argument("--checkpoint", required=True, help="mmengine checkpoint, or 'none' (config weights)")
    parser.add_argument("--dataset", nargs="+", help="test_datasets entries to run (default: all)")
    parser.add_argument("--split", help="split of the selected entries (default: all their splits)")
    parser.add_argument("--work-dir", help="results, summary.json / summary.md (default: work_dirs/<config>_test)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config keys: k=v")
    parser.add_argument("--max-items", type=int, help="evaluate only the first N images / videos of each run")
    parser.add_argument("--show", type=int, default=0, help="draw overlays of the first N items of each run")
    parser.add_argument("--allow-missing-weights", action="store_true",
                        help="evaluate even if the checkpoint lacks trainable tensors (they keep their initial "
                             "values, e.g. CMA's zero gain); default: an error naming them")
    parser.add_argument("--attention-stats", action="store_true",
                        help="RES runs: also report the share of CMA's output on the target, on annotations flagged "
                             "as distractors and on other objects (attn_* in the summary)")
    parser.add_argument("--launcher", choices=["none", "pytorch"], default="none")
    parser.add_argument("--local-rank", "--local_rank", type=int, default=0)  # torch.distributed.launch
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    work_dir = args.work_dir or cfg.get("work_dir") or osp.join(
        "work_dirs", osp.splitext(osp.basename(args.config))[0] + "_test")
    entries = run_evaluation(cfg, checkpoint=args.checkpoint, work_dir=work_dir, datasets=args.dataset,
                             split=args.split, max_items=args.max_items, launcher=args.launcher, show=args.show,
                             allow_missing_weights=args.allow_missing_weights, attention_stats=args.attention_stats)
    leave_process_group()
    return entries


if __name__ == "__main__":
    main()
