"""mmengine glue: hooks and runner helpers."""
from .hooks import AuxLossWarmupHook, CMAWarmupHook, DeepSpeedGradNormHook, RNGStateHook, linear_warmup

__all__ = ["AuxLossWarmupHook", "CMAWarmupHook", "DeepSpeedGradNormHook", "RNGStateHook", "linear_warmup"]
