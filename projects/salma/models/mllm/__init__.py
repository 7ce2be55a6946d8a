"""The multimodal LLMs SALMA runs on, one wrapper per family behind one interface (:mod:`.base`)."""
from .base import DEFAULT_LORA_TARGETS, MultimodalLLM
from .internvl import InternVLMLLM
from .qwen_vl import QwenVLMLLM

__all__ = ["DEFAULT_LORA_TARGETS", "InternVLMLLM", "MultimodalLLM", "QwenVLMLLM"]
