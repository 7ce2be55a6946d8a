"""Evaluation: metrics (J, F, J&F, cIoU, gIoU, ReVOS A/R), the RES and referring-VOS evaluators,
result writers (resumable RLE json lines, submission zip, summaries), overlays and the driver of
``tools/test.py``. Importing this package registers ``RESMetric`` in ``METRICS``."""
from .ref_vos import RefVOSEvaluator
from .res import RESEvaluator, RESMetric
from .runner import EvalRun, resolve_runs, run_evaluation

__all__ = ["EvalRun", "RESEvaluator", "RESMetric", "RefVOSEvaluator", "resolve_runs",
           "run_evaluation"]
