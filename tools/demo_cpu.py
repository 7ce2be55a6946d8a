"""CPU demo: write synthetic data, train the tiny SALMA on it, report held-out scores beside baselines,
export the trained model.

    python3 tools/demo_cpu.py [--seeds 0 1 2] [--iters N] [--work-dir work_dirs/demo] [--data data/synthetic_demo]
                              [--backbone internvl2.5|internvl3.5|qwen2.5-vl|qwen3-vl]

For each seed: the demo's synthetic data (``projects.salma.demo.DEMO_DATA``; written under
``<data>/seed<N>`` unless already there with the same arguments), training with that seed, RES cIoU /
gIoU on synthetic RefCOCO val (and on its relational sentences: "the circle on the left", "the larger
blue shape") and J / F / J&F on synthetic MeViS valid_u, for the trained model, an empty mask and the
union of all objects. Under ``<work-dir>/seed<N>``: the checkpoint, the evaluation results and overlay
PNGs (``eval/*/vis``), ``demo_report.json``, and the exported model (``export``, a folder
``SALMAModel.from_pretrained`` and ``tools/infer.py`` load). Several seeds end with mean ± standard
deviation over the seeds (``<work-dir>/demo_seeds.json``). ``--backbone``: the MLLM family's tiny twin
(``projects.salma.demo.BACKBONES``; SAM-2, CMA/MBA, losses, data and schedule unchanged).
"""
import argparse
import json
import os

from projects.salma.demo import (BACKBONES, format_report, format_seed_table, prepare_demo_data, run_demo,
                                 summarize_seeds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/tiny/salma_tiny_synthetic.py")
    parser.add_argument("--data", default="data/synthetic_demo", help="synthetic data root (one folder per seed)")
    parser.add_argument("--work-dir", default="work_dirs/demo")
    parser.add_argument("--iters", type=int, help="training iterations (default: the config's max_iters)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed (data and training)")
    parser.add_argument("--no-export", action="store_true", help="do not export the trained models")
    parser.add_argument("--backbone", choices=sorted(BACKBONES), default="internvl2.5",
                        help="the MLLM family's tiny twin (default: the config's InternVL2.5)")
    args = parser.parse_args()
    reports = []
    for seed in args.seeds:
        data = prepare_demo_data(os.path.join(args.data, f"seed{seed}"), seed)
        work_dir = os.path.join(args.work_dir, f"seed{seed}")
        export_dir = None if args.no_export else os.path.join(work_dir, "export")
        report = run_demo(args.config, work_dir, data, args.iters, seed=seed, export_dir=export_dir,
                          backbone=args.backbone)
        with open(os.path.join(work_dir, "demo_report.json"), "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
        print("\n" + format_report(report), flush=True)
        reports.append(report)
    print("\n" + format_seed_table(reports))
    if len(reports) > 1:
        with open(os.path.join(args.work_dir, "demo_seeds.json"), "w", encoding="utf-8") as f:
            json.dump({"seeds": args.seeds, "summary": summarize_seeds(reports)}, f, indent=2)
    for report in reports:
        if "export" in report:
            print(f"seed {report['seed']}: exported model in {report['export']}")


if __name__ == "__main__":
    main()
