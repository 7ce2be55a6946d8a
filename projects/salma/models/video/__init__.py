"""Video inference, by job: :mod:`.sam2_video` (transformers' SAM-2 video model as the tracker runs
it), :mod:`.session` (the streamed session and its memory window), :mod:`.tracker` (SAM-2's memory
around the grounding runner), :mod:`.predictor` (answers, then masks on every frame; the data flow
is told there)."""
from .predictor import LLM_FRAME_MASKS, VideoPredictor, VideoStream
from .sam2_video import PROPAGATION_MODES, RANDOM_MEMORY, TRACKER_DECODERS, video_config_from_image
from .tracker import SAM2MemoryTracker

__all__ = ["LLM_FRAME_MASKS", "PROPAGATION_MODES", "RANDOM_MEMORY", "TRACKER_DECODERS", "SAM2MemoryTracker",
           "VideoPredictor", "VideoStream", "video_config_from_image"]
