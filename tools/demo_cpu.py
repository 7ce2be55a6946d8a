"""CPU demo. Until the training loop lands, it builds the tiny SALMA model from its config and
runs one forward/backward on a random batch, printing every loss term (no training yet)."""
import argparse
import time

import torch
from mmengine.config import Config

from projects.salma.registry import MODELS
from projects.salma.testing import make_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="configs/tiny/salma_tiny.py")
    args = parser.parse_args()
    torch.manual_seed(0)
    start = time.perf_counter()
    model = MODELS.build(Config.fromfile(args.config).model)
    print(f"built tiny SALMA in {time.perf_counter() - start:.1f}s")
    losses = model(make_batch(model, [(2, 1), (1, 3)], tile_size=128, sam_size=128), mode="loss")
    sum(losses.values()).backward()
    print("one forward/backward (no training yet):", {k: round(float(v), 4) for k, v in losses.items()})


if __name__ == "__main__":
    main()
