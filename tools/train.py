"""Train SALMA: ``python tools/train.py CONFIG [--work-dir DIR] [--cfg-options k=v ...]
[--resume [CKPT]] [--deepspeed JSON|zero2|auto|none] [--launcher none|pytorch|slurm]``."""
import argparse

from mmengine.config import Config, DictAction

from projects.salma.engine.dist import leave_process_group
from projects.salma.engine.runner import apply_cli, build_runner


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Train a SALMA model")
    parser.add_argument("config")
    parser.add_argument("--work-dir")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config keys: k=v")
    parser.add_argument("--resume", nargs="?", const=True, default=None,
                        help="resume from CKPT, or from the latest checkpoint in the work dir")
    parser.add_argument("--deepspeed", help="DeepSpeed JSON, 'zero2' for configs/deepspeed_zero2.json, 'auto' "
                        "(ZeRO-2 on GPUs, none on CPU; tools/dist_train.sh's default) or 'none' (AMP + DDP)")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm"], default="none")
    parser.add_argument("--local-rank", "--local_rank", type=int, default=0)  # torch.distributed.launch
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = apply_cli(Config.fromfile(args.config), work_dir=args.work_dir, resume=args.resume,
                    deepspeed=args.deepspeed, launcher=args.launcher, cfg_options=args.cfg_options,
                    config_path=args.config)
    runner = build_runner(cfg)
    runner.train()
    leave_process_group()
    return runner


if __name__ == "__main__":
    main()
