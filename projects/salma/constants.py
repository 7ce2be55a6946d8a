"""Tokens and constants shared by the data pipeline, the model and inference."""

IGNORE_INDEX = -100

# InternVL2.5 image placeholders: each tile becomes <img> + image_seq_length x <IMG_CONTEXT> + </img>.
IMG_START_TOKEN = "<img>"
IMG_END_TOKEN = "</img>"
IMG_CONTEXT_TOKEN = "<IMG_CONTEXT>"

# Qwen-VL image placeholders (Qwen2.5-VL, Qwen3-VL): <|vision_start|> + one <|image_pad|> per merged
# 2x2 patch group + <|vision_end|>.
QWEN_VISION_START = "<|vision_start|>"
QWEN_VISION_END = "<|vision_end|>"
QWEN_IMAGE_PAD = "<|image_pad|>"
QWEN_VISION_TOKENS = (QWEN_VISION_START, QWEN_VISION_END, QWEN_IMAGE_PAD)

# Qwen2.5 chat markers (InternVL2.5-1B's LLM).
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"

# Tokens SALMA adds to the LLM vocabulary (embeddings are resized for them).
SEG_TOKEN = "[SEG]"
PHRASE_START = "<p>"
PHRASE_END = "</p>"
VP_START = "<vp>"
VP_END = "</vp>"
SPECIAL_TOKENS = (SEG_TOKEN, PHRASE_START, PHRASE_END, VP_START, VP_END)

# InternVL and SAM-2 both normalise with ImageNet statistics (RGB, 0-1 scale).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
