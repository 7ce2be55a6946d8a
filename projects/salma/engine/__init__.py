"""mmengine glue: hooks, the resumable train loop and runner helpers."""
from .hooks import AuxLossWarmupHook, CMAWarmupHook, DeepSpeedGradNormHook, RNGStateHook, linear_warmup
from .loops import ResumableEpochBasedTrainLoop

__all__ = ["AuxLossWarmupHook", "CMAWarmupHook", "DeepSpeedGradNormHook", "RNGStateHook",
           "ResumableEpochBasedTrainLoop", "linear_warmup"]
