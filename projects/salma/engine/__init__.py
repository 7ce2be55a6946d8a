"""mmengine glue: hooks, the resumable train loop and runner helpers."""
from .hooks import AuxLossWarmupHook, CMAWarmupHook, DeepSpeedGradNormHook, RNGStateHook, linear_warmup
from .loops import ResumableEpochBasedTrainLoop
from .safe_checkpoint import NonFiniteLossHook, SafeCheckpointHook

__all__ = ["AuxLossWarmupHook", "CMAWarmupHook", "DeepSpeedGradNormHook", "NonFiniteLossHook", "RNGStateHook",
           "ResumableEpochBasedTrainLoop", "SafeCheckpointHook", "linear_warmup"]
