"""mmengine glue: hooks and runner helpers."""
from .hooks import AuxLossWarmupHook, CMAWarmupHook, linear_warmup

__all__ = ["AuxLossWarmupHook", "CMAWarmupHook", "linear_warmup"]
