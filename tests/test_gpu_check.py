"""tools/gpu_check.py (the prepared GPU check) runs here in its CPU smoke form, so it cannot rot:
the tiny model through the same runner paths (AMP wrapper, ZeRO-2 in one process) and benchmarks."""
import importlib.util
import math
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LEG = re.compile(r"^\[(SALMA|Sa2VA) (amp|zero2)\] losses: (.+)$", re.M)


def load_tool():
    spec = importlib.util.spec_from_file_location("salma_gpu_check", os.path.join(ROOT, "tools", "gpu_check.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_baseline_differs_from_salma_where_the_sa2va_config_does():
    configs = load_tool().model_configs(tiny=True)
    salma, sa2va = configs["SALMA"].model, configs["Sa2VA"].model
    assert salma.grounding_encoder.enable_cma and salma.grounding_encoder.mask_source == "pred"
    assert salma.loss_tmc_weight > 0 and salma.loss_boundary_weight > 0
    assert not sa2va.grounding_encoder.enable_cma and sa2va.grounding_encoder.mask_source == "none"
    assert sa2va.loss_tmc_weight == 0 and sa2va.loss_boundary_weight == 0
    assert sa2va.mllm == salma.mllm and sa2va.grounding_encoder.sam2 == salma.grounding_encoder.sam2
    assert [h["type"] for h in configs["Sa2VA"].custom_hooks] == ["DataSkipLoggerHook"]
    for cfg in configs.values():  # the real regime: InternVL in bf16, the AMP wrapper; the tiny optimiser
        assert cfg.model.mllm.torch_dtype == "bfloat16"
        assert cfg.optim_wrapper.type == "AmpOptimWrapper" and cfg.optim_wrapper.dtype == "bfloat16"
        assert cfg.optim_wrapper.optimizer.lr == 1e-3


@pytest.mark.slow
def test_cpu_tiny_run_trains_every_leg_and_runs_the_benchmarks():
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "tools/gpu_check.py", "--device", "cpu", "--tiny", "--steps", "6",
                           "--reps", "1"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    legs = {(name, optim): [float(x) for x in losses.split()] for name, optim, losses in LEG.findall(out)}
    assert set(legs) == {(n, o) for n in ("SALMA", "Sa2VA") for o in ("amp", "zero2")}, out
    for leg, losses in legs.items():
        assert len(losses) == 6 and all(math.isfinite(x) for x in losses), (leg, losses)
        assert sum(losses[-3:]) < sum(losses[:3]), (leg, losses)  # falls on the repeated batch
    assert legs[("SALMA", "amp")] != legs[("Sa2VA", "amp")]  # two different models were trained
    assert re.search(r"ratio SALMA / Sa2VA: median \d+\.\d+", out)  # bench/mba_overhead.py, bf16
    assert "dtype=bfloat16" in out and re.search(r"predict latency\s+median\s+\d+\.\d+ ms", out)
    assert out.rstrip().endswith("GPU CHECK PASSED")
