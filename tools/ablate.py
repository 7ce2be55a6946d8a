"""Ablation with confidence intervals: train and evaluate every CONFIG with every seed, then write
ablation.md / ablation.json / ablation.png (mean ± 95 % CI over seeds per config and metric, and the
paired difference of each config to the first one).

    python tools/ablate.py configs/tiny/ablations/*.py --seeds 0 1 2 --work-dir work_dirs/ablation_tiny
    python tools/ablate.py configs/Sa2VA-1B.py configs/ablations/*.py --seeds 0 1 2 --gpus 8 --dry-run

Each run is ``tools/train.py CONFIG --work-dir ROOT/<config>/seed<s>/train --cfg-options ...
randomness.seed=<s>``, then ``tools/test.py CONFIG --checkpoint <last checkpoint> --work-dir
ROOT/<config>/seed<s>/eval``: in this process by default, with ``--gpus N`` through
``tools/dist_train.sh`` / ``tools/dist_test.sh``. Rerunning skips finished runs (a stopped training
resumes); failed runs are reported and left out of the statistics (``--retry-failed`` reruns them).
``--max-runs N`` stops after N new runs and writes the report of what is finished (a scheduler can
take one run per job). See projects/salma/analysis/ablation.py.
"""
import argparse
import importlib.util
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from projects.salma.analysis.ablation import (InProcess, Launcher, dry_run_commands, parse_cfg_options,  # noqa: E402
                                              plan_runs, run_ablation, summarize, write_reports)


def _tool_main(name: str):
    """``main(argv)`` of tools/<name>.py (loaded by path: ``tools`` is not a package)."""
    spec = importlib.util.spec_from_file_location(f"salma_tools_{name}", os.path.join(os.path.dirname(__file__),
                                                                                         f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", metavar="CONFIG", help="the first one is the reference row")
    parser.add_argument("--seeds", nargs="+", type=int, required=True)
    parser.add_argument("--work-dir", default="work_dirs/ablation")
    parser.add_argument("--dataset", nargs="+", help="test_datasets entries to evaluate (default: all)")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                        help="overrides for training and evaluation (the seed is set per run)")
    parser.add_argument("--metrics", nargs="+", metavar="PATTERN",
                        help="metrics to report, fnmatch patterns on '<run>/<metric>' (default: all)")
    parser.add_argument("--test-args", nargs=argparse.REMAINDER, default=[],
                        help="further tools/test.py arguments (last on the line)")
    parser.add_argument("--gpus", type=int, default=0,
                        help="run through tools/dist_train.sh / dist_test.sh with N processes (default: in this process)")
    parser.add_argument("--max-runs", type=int, help="run at most N runs not finished yet, then report")
    parser.add_argument("--seed-major", action="store_true",
                        help="run every config with the first seed first (a partial sweep covers every config)")
    parser.add_argument("--retry-failed", action="store_true", help="rerun runs that failed before")
    parser.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    args = parser.parse_args(argv)
    try:
        parse_cfg_options(args.cfg_options)
    except ValueError as err:
        parser.error(str(err))
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    runs = plan_runs(args.configs, args.seeds, args.work_dir, seed_major=args.seed_major)
    if args.dry_run:
        for line in dry_run_commands(runs, gpus=args.gpus, cfg_options=args.cfg_options, datasets=args.dataset,
                                     test_args=args.test_args):
            print(line)
        return {}
    execute = Launcher(args.gpus) if args.gpus > 0 else InProcess({"train": _tool_main("train"),
                                                                  "test": _tool_main("test")})
    results = run_ablation(runs, execute, cfg_options=args.cfg_options, datasets=args.dataset,
                           test_args=args.test_args, retry_failed=args.retry_failed, max_runs=args.max_runs)
    summary = summarize(runs, results, args.metrics)
    paths = write_reports(summary, args.work_dir)
    print(open(paths["md"], encoding="utf-8").read())
    print("written: " + ", ".join(paths.values()))
    return summary


if __name__ == "__main__":
    main()
