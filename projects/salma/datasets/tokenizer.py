"""Tokenizers: a real one from a local model folder, or a tiny byte-level BPE built offline.

The tiny tokenizer exists so that tests and the CPU demo need no downloaded files: it is trained
in milliseconds on a fixed corpus (deterministic), is byte-level (any text encodes), supports
offset mappings, and knows the Qwen2.5 chat and InternVL image tokens like the real one.
"""
from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from ..constants import (
    IM_END,
    IM_START,
    IMG_CONTEXT_TOKEN,
    IMG_END_TOKEN,
    IMG_START_TOKEN,
    PAD_TOKEN,
    QWEN_VISION_TOKENS,
    SPECIAL_TOKENS,
)
from ..registry import FUNCTIONS

_BASE_SPECIAL_TOKENS = [PAD_TOKEN, IM_START, IM_END, IMG_START_TOKEN, IMG_END_TOKEN, IMG_CONTEXT_TOKEN]
# The vision placeholders a family's real tokenizer has besides the chat markers.
_FAMILY_TOKENS = {"internvl": (), "qwen_vl": QWEN_VISION_TOKENS}

_TINY_CORPUS = """system user assistant You are a helpful assistant.
Please segment the object in this image. Can you segment it? What is it in this image?
Please respond with segmentation mask. Sure, it is [SEG]. The segmentation result is [SEG].
the red green blue yellow purple orange cyan white black circle square triangle rectangle shape
on the left right top bottom middle larger smaller biggest smallest moving object video frame
There are frames sampled from a video. Describe the image in detail.
""".split("\n")


@FUNCTIONS.register_module()
def build_tiny_tokenizer(vocab_size: int = 512, extra_corpus: tuple[str, ...] = (),
                         family: str = "internvl") -> PreTrainedTokenizerFast:
    """Train a deterministic byte-level BPE on a small fixed corpus (no files, no network).

    ``family``: whose vision placeholders it knows besides InternVL's (``'qwen_vl'``: Qwen-VL's
    ``<|vision_start|>``, ``<|vision_end|>``, ``<|image_pad|>``, as special tokens after the others).
    """
    if family not in _FAMILY_TOKENS:
        raise ValueError(f"family must be one of {sorted(_FAMILY_TOKENS)}, got {family!r}")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=_BASE_SPECIAL_TOKENS + list(_FAMILY_TOKENS[family]),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(_TINY_CORPUS) + list(extra_corpus), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=IM_END, pad_token=PAD_TOKEN)


@FUNCTIONS.register_module()
def load_pretrained_tokenizer(path: str) -> PreTrainedTokenizerBase:
    """Load the tokenizer shipped with a local model folder (never from a hub, never its remote
    code: an ``auto_map`` in config.json, as InternVL's and Sa2VA's have, would make transformers
    prompt whether to run it; refused up front, the folder's tokenizer_config.json decides)."""
    return AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)


def build_tokenizer(cfg) -> PreTrainedTokenizerBase:
    """Build from a config dict (``type=`` a registered function) and add SALMA's tokens.

    The dataset and the model build their tokenizer from the same config dict, so both see the
    same ids for ``[SEG]`` and the image tokens. Adding the tokens is idempotent.
    """
    tokenizer = cfg if isinstance(cfg, PreTrainedTokenizerBase) else FUNCTIONS.build(cfg)
    tokenizer.add_tokens(list(SPECIAL_TOKENS), special_tokens=True)
    return tokenizer
