"""Question and answer templates (Sa2VA / GLaMM style) and the image-token strings.

``{class_name}`` is where a referring expression goes; templates never put an article before it
(RefCOCO sentences and our synthetic ones carry their own), so the expression's span in the
rendered question is exactly the expression.
"""
from __future__ import annotations

from ..constants import IMG_CONTEXT_TOKEN, IMG_END_TOKEN, IMG_START_TOKEN, SEG_TOKEN

SEG_QUESTIONS = (
    "Can you segment {class_name} in this image?",
    "Please segment {class_name} in this image.",
    "What is {class_name} in this image? Please respond with segmentation mask.",
    "What is {class_name} in this image? Please output segmentation mask.",
    "Could you provide a segmentation mask for {class_name} in this image?",
    "Please identify and segment {class_name} in this image.",
    "Where is {class_name} in this picture? Please respond with a segmentation mask.",
    "Can you highlight {class_name} in this image with a segmentation mask?",
)

VIDEO_SEG_QUESTIONS = (
    "Can you segment {class_name} in this video?",
    "Please segment {class_name} in this video.",
    "What is {class_name} in this video? Please respond with segmentation mask.",
    "What is {class_name} in this video? Please output segmentation mask.",
    "Could you provide a segmentation mask for {class_name} in this video?",
    "Please identify and segment {class_name} in this video.",
    "Where is {class_name} in this video? Please respond with a segmentation mask.",
)

# A reasoning expression (ReVOS type 1, "... ?") is asked as is, followed by this request.
REASONING_SUFFIX = " Please respond with segmentation mask."

ANSWER_LIST = (
    f"It is {SEG_TOKEN}.",
    f"Sure, {SEG_TOKEN}.",
    f"Sure, it is {SEG_TOKEN}.",
    f"Sure, the segmentation result is {SEG_TOKEN}.",
    f"{SEG_TOKEN}.",
)

GCG_QUESTIONS = (
    "Could you please give me a brief description of the image? Please respond with interleaved "
    "segmentation masks for the corresponding parts of the answer.",
    "Can you provide a brief description of this image? Please output with interleaved segmentation "
    "masks for the corresponding phrases.",
    "Please briefly describe the contents of the image. Please respond with interleaved segmentation "
    "masks for the corresponding parts of the answer.",
    "Could you describe what can be found in this picture? Please output with interleaved segmentation "
    "masks for the corresponding phrases.",
)

# Osprey detailed descriptions: one question per region ("<region>" becomes "region1", ...).
VP_DESCRIPTION_QUESTIONS = (
    "Can you provide me with a detailed description of the region in the picture marked by <region>?",
    "What can you tell me about the region indicated by <region> in the image?",
    "Please describe the region <region> in the image in detail.",
    "What details can you give me about the region outlined by <region> in the photo?",
    "Could you elaborate on the region highlighted by <region> in the picture provided?",
    "Examine the region <region> closely and share its details.",
)
# Osprey short-form questions ask for one word or phrase.
SHORT_ANSWER_SUFFIX = " Answer the question using a single word or phrase."
# SA-V pseudo-label videos (Sa2VA's video_sam2_dataset): long, formatted object descriptions.
SAV_LONG_QUESTION = "Please segment the object according to the description: {class_name}"

# Deterministic choices for evaluation items (teacher-forced conversations, per-sentence prompts).
EVAL_SEG_QUESTION = "Please segment {class_name} in this image."
EVAL_VIDEO_SEG_QUESTION = "Please segment {class_name} in this video."
EVAL_ANSWER = f"Sure, {SEG_TOKEN}."


def fill_template(template: str, expression: str) -> tuple[str, tuple[int, int]]:
    """Insert ``expression`` at ``{class_name}``; return the text and the expression's char span."""
    head, sep, tail = template.partition("{class_name}")
    if not sep:
        raise ValueError(f"template has no {{class_name}}: {template!r}")
    return head + expression + tail, (len(head), len(head) + len(expression))


def image_token_string(num_tiles: int, image_seq_length: int) -> str:
    """One image: ``<img>`` + n_tiles * image_seq_length ``<IMG_CONTEXT>`` + ``</img>`` + newline.

    As InternVL2.5 (chat code and transformers' InternVLProcessor) was trained: one ``<img>`` pair
    around all tiles of an image, tiles in ``dynamic_preprocess`` order.
    """
    return f"{IMG_START_TOKEN}{IMG_CONTEXT_TOKEN * (num_tiles * image_seq_length)}{IMG_END_TOKEN}\n"


def video_token_string(num_frames: int, image_seq_length: int) -> str:
    """Video: one tile per frame, each frame on its own line (InternVL2.5's ``Frame{i}:`` style)."""
    frame = f"{IMG_START_TOKEN}{IMG_CONTEXT_TOKEN * image_seq_length}{IMG_END_TOKEN}\n"
    return "".join(f"Frame{i + 1}: {frame}" for i in range(num_frames))


def clean_expression(text: str) -> str:
    """Strip whitespace and a trailing period (questions keep their '?')."""
    text = " ".join(text.split())
    return text[:-1].rstrip() if text.endswith(".") else text
