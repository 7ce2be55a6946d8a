"""CPU demo: write synthetic data, train the tiny SALMA on it, report held-out RES cIoU.

    python3 tools/demo_cpu.py [--iters 2000] [--work-dir work_dirs/demo] [--data data/synthetic]
"""
import argparse
import json
import os
import subprocess
import sys

from projects.salma.engine.demo import run_demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/tiny/salma_tiny_synthetic.py")
    parser.add_argument("--data", default="data/synthetic")
    parser.add_argument("--work-dir", default="work_dirs/demo")
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not os.path.isdir(os.path.join(args.data, "refcoco_synth")):
        subprocess.run([sys.executable, "tools/data/make_synthetic.py", "--out", args.data, "--seed", str(args.seed)],
                       check=True)
    report = run_demo(args.config, args.work_dir, args.data, args.iters, seed=args.seed)
    print(f"\ntrained {report['iterations']} iterations in {report['train_minutes']:.1f} min (2 CPU cores)")
    print(f"{'held-out synthetic RefCOCO val':34s} {'cIoU':>7s} {'gIoU':>7s}")
    for name, s in report["scores"].items():
        print(f"{name:34s} {s['cIoU']:7.3f} {s['gIoU']:7.3f}")
    with open(os.path.join(args.work_dir, "demo_report.json"), "w") as f:
        json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
