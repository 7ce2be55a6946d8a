"""SALMA models: CMA/MBA, the SAM-2 grounding runner, the InternVL wrapper, the top-level model."""
from .cma import CrossModalAttention2D
from .grounding import SAM2GroundingRunner
from .llava_sam2 import VideoLLaVASAMModel
from .mllm import InternVLMLLM

__all__ = ["CrossModalAttention2D", "InternVLMLLM", "SAM2GroundingRunner", "VideoLLaVASAMModel"]
