"""What every SALMA reader shares: tokenizer, image settings, error policy, seeded randomness.

A reader builds its index in ``__init__`` (dropping and counting bad entries when that is cheap and
``on_error='skip'``) and implements ``prepare(index, rng) -> sample``. ``get_sample`` wraps it with
the bounded, deterministic skip: on a DataError with ``on_error='skip'`` it tries index+1, index+2,
... at most ``max_skip_attempts`` times, then raises.

Randomness (frames, expressions, templates) comes from ``numpy.random.default_rng([seed, index,
repeat])``: a sample is a pure function of its index (reproducible, worker-independent), and the
``repeat`` counter of :class:`DatasetMix` makes repeated copies of a dataset differ.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from ..constants import SEG_TOKEN
from .chat import DEFAULT_SYSTEM, ExprSpan, Turn
from .encode import EncodedConversation, encode_conversation
from .errors import DataError, SkipLog, check_on_error
from .templates import REASONING_SUFFIX, fill_template
from .tokenizer import build_tokenizer
from .transforms import check_sam_pixel_stats, stack_normalized
from .vision_inputs import VisionInput, build_vision_inputs

_TOKENIZERS: dict[str, PreTrainedTokenizerBase] = {}


def cached_tokenizer(cfg: dict | PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """One tokenizer per distinct config in a process (a mix builds many readers from one dict)."""
    if isinstance(cfg, PreTrainedTokenizerBase):
        return build_tokenizer(cfg)
    key = repr(sorted(dict(cfg).items()))
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = build_tokenizer(dict(cfg))
    return _TOKENIZERS[key]


class SalmaDataset(Dataset):
    """Base reader. Keyword arguments (defaults = the real SALMA-1B setup):

    Args:
        tokenizer: tokenizer config dict (``dict(type='load_pretrained_tokenizer', path=...)``) or
            a tokenizer; SALMA's special tokens are added.
        name: dataset name reported in ``meta['dataset']`` and in logs (default: class name).
        mode: ``'train'`` (random sampling, trailing turns may be dropped to fit) or ``'eval'``
            (deterministic, everything kept, one item per image / video).
        max_length: token budget of a sample.
        system: system message ('' = none, as Sa2VA).
        image_size: InternVL tile size; image_seq_length: ``<IMG_CONTEXT>`` tokens per tile.
        min_dynamic_patch, max_dynamic_patch, use_thumbnail: InternVL dynamic tiling.
        vision: the LLM family's image inputs (:mod:`.vision_inputs`): None (InternVL's tiles with
            the arguments above) or ``dict(family='qwen_vl', ...)`` (Qwen2.5-VL / Qwen3-VL).
        sam_image_size: SAM-2 input size.
        sam_pixel_stats: SAM-2 input normalisation, ``'imagenet'`` (training and SALMA's models) or
            ``'sa2va_release'`` (Sa2VA's released inference: bf16 statistics; ``transforms``).
        on_error: ``'raise'`` or ``'skip'`` (drop and count bad items; in eval mode only while the
            index is built, an evaluation item is never replaced by another).
        max_skip_attempts: bound on consecutive skips in ``__getitem__``.
        seed: base seed of the per-item random generator.
    """

    def __init__(
        self,
        *,
        tokenizer: dict | PreTrainedTokenizerBase,
        name: str | None = None,
        mode: str = "train",
        max_length: int = 8192,
        system: str = DEFAULT_SYSTEM,
        image_size: int = 448,
        image_seq_length: int = 256,
        min_dynamic_patch: int = 1,
        max_dynamic_patch: int = 12,
        use_thumbnail: bool = True,
        sam_image_size: int = 1024,
        sam_pixel_stats: str = "imagenet",
        vision: dict | None = None,
        on_error: str = "raise",
        max_skip_attempts: int = 16,
        seed: int = 0,
    ) -> None:
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
        self.tokenizer = cached_tokenizer(tokenizer)
        self.name = name or type(self).__name__
        self.mode = mode
        self.max_length = max_length
        self.system = system
        self.image_size = image_size
        self.image_seq_length = image_seq_length
        self.min_dynamic_patch = min_dynamic_patch
        self.max_dynamic_patch = max_dynamic_patch
        self.use_thumbnail = use_thumbnail
        self.sam_image_size = sam_image_size
        self.sam_pixel_stats = check_sam_pixel_stats(sam_pixel_stats)
        self.vision = build_vision_inputs(vision, image_size=image_size, image_seq_length=image_seq_length,
                                          min_dynamic_patch=min_dynamic_patch, max_dynamic_patch=max_dynamic_patch,
                                          use_thumbnail=use_thumbnail)
        self.on_error = check_on_error(on_error)
        self.max_skip_attempts = max_skip_attempts
        self.seed = seed
        self.skips = SkipLog(self.name)
        self.items: list[Any] = []
        # > 0: sample with image(s)/video, < 0: text only (LLaVA's modality_lengths convention).
        self.modality_lengths: list[int] = []

    # ---- dataset protocol -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return self.get_sample(index)

    @property
    def lengths(self) -> list[int]:
        return [abs(n) for n in self.modality_lengths]

    @property
    def skip_counts(self) -> dict[str, int]:
        """Skips per reason counted in this process (index build + ``__getitem__``)."""
        return self.skips.totals()

    @property
    def index_skip_counts(self) -> dict[str, int]:
        """Entries dropped while building the index (exact even with DataLoader workers)."""
        return dict(self.skips.index)

    def get_sample(self, index: int, repeat: int = 0) -> dict:
        """The sample at ``index`` (``repeat``: which copy in a :class:`DatasetMix`)."""
        if not 0 <= index < len(self):
            raise IndexError(f"{self.name}: index {index} out of range ({len(self)} items)")
        # An evaluation item is never replaced by another (it would be scored twice): in eval mode
        # 'skip' only drops entries while the index is built.
        substitute = self.on_error == "skip" and self.mode == "train"
        attempts = 1 + (self.max_skip_attempts if substitute else 0)
        skipped: Counter[str] = Counter()
        last: DataError | None = None
        for attempt in range(attempts):
            i = (index + attempt) % len(self)
            try:
                sample = self.prepare(i, np.random.default_rng([self.seed, i, repeat]))
            except DataError as err:
                if not substitute:
                    raise
                self.skips.record(err, at_index_build=False)
                skipped[err.reason] += 1
                last = err
                continue
            sample["meta"]["skipped"] = dict(skipped)
            return sample
        raise DataError(
            f"{self.name}: {attempts} consecutive items from index {index} are bad; last: {last}",
            reason="too_many_skips",
        )

    def prepare(self, index: int, rng: np.random.Generator) -> dict:
        raise NotImplementedError

    def item_fingerprint(self, index: int) -> str:
        """A digest of what item ``index`` is computed from (annotation records, file sizes and
        modification times): evaluation resume recomputes an item whose fingerprint changed.
        Readers that ``tools/test.py`` evaluates implement it."""
        raise NotImplementedError(f"{self.name}: item_fingerprint is needed to evaluate (and resume) this reader")

    # ---- helpers for subclasses -----------------------------------------------------------------
    def index_error(self, err: DataError) -> None:
        """A bad entry found while building the index: raise, or count it (caller drops it)."""
        if self.on_error == "raise":
            raise err
        self.skips.record(err, at_index_build=True)

    def checked_records(self, records: Sequence[Any], parse: Callable[[Any, int], Any]) -> Iterator[Any]:
        """``parse(record, i)`` of every record it accepts; a record it rejects with a DataError
        stops the build or, with ``on_error='skip'``, is dropped and counted (:meth:`index_error`)."""
        for i, record in enumerate(records):
            try:
                yield parse(record, i)
            except DataError as err:
                self.index_error(err)

    def image_inputs(self, image: Image.Image) -> VisionInput:
        """The LLM's input of one image in this reader's family (InternVL: its tiles)."""
        return self.vision.image(image)

    def video_inputs(self, frames: Sequence[Image.Image]) -> VisionInput:
        """The LLM's input of a video's frames (InternVL: one tile per frame)."""
        return self.vision.video(frames)

    def check_regions_supported(self, source: str) -> None:
        """Visual prompts need a fixed grid of vision tokens per tile (InternVL); refused otherwise."""
        if not self.vision.regions_supported:
            raise ValueError(f"{source}: visual prompts (regions) need InternVL's fixed token grid per tile; the "
                             f"{self.vision.family} family's dynamic resolution has none (vision.family="
                             f"{self.vision.family!r})")

    def sam_inputs(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """SAM-2 input (T, 3, G, G): direct resize, see :func:`transforms.sam_pixel_values`."""
        return stack_normalized(list(images), self.sam_image_size, stats=self.sam_pixel_stats)

    def seg_turns(self, expressions: Sequence[str], *, prefix: str, templates: Sequence[str],
                  answers: Sequence[str], rng: np.random.Generator | None) -> list[Turn]:
        """One question (with its expression span) and one ``[SEG]`` answer per expression.

        ``prefix`` (the image tokens) opens the first question. With ``rng=None`` the first
        template and answer are used (evaluation). A question-like expression ("... ?", ReVOS
        reasoning) is asked as is.
        """
        turns = []
        for k, expression in enumerate(expressions):
            if expression.endswith("?"):
                question, span = expression + REASONING_SUFFIX, (0, len(expression))
            else:
                template = templates[0] if rng is None else templates[rng.integers(len(templates))]
                question, span = fill_template(template, expression)
            answer = answers[0] if rng is None else answers[rng.integers(len(answers))]
            head = prefix if k == 0 else ""
            turns.append(Turn(head + question, answer,
                              [ExprSpan("question", len(head) + span[0], len(head) + span[1])]))
        return turns

    @staticmethod
    def questions(turns: Sequence[Turn], prefix: str) -> list[str]:
        """Each turn's question without the image tokens ``prefix`` that open the first one."""
        return [t.question[len(prefix):] if k == 0 else t.question for k, t in enumerate(turns)]

    def encode(self, turns: Sequence[Turn], *, objects_per_turn: Sequence[int] | None, image_tokens: int,
               source: str) -> EncodedConversation:
        return encode_conversation(turns, self.tokenizer, max_length=self.max_length, system=self.system,
                                   objects_per_turn=objects_per_turn, image_tokens=image_tokens,
                                   drop_turns=self.mode == "train", source=source,
                                   context_token=self.vision.context_token)

    def eval_prompts(self, turns: Sequence[Turn], *, prefix: str, image_tokens: int, source: str) -> list[dict]:
        """Stand-alone inference prompt of each turn (image tokens + its question, no answer).

        Evaluation items carry these in ``meta['prompts']`` (``input_ids``, ``expr_ids``: k = 0 on
        the question's expression) so each sentence can be predicted on its own, exactly as
        inference would ask it (see :func:`collate.expand_eval_sample`).
        """
        prompts = []
        for k, turn in enumerate(turns):
            shift = 0 if k == 0 else len(prefix)
            spans = [ExprSpan("question", s.start + shift, s.end + shift)
                     for s in turn.expr_spans if s is not None and s.where == "question"]
            question = turn.question if k == 0 else prefix + turn.question
            enc = encode_conversation([Turn(question, None, spans)], self.tokenizer, max_length=self.max_length,
                                      system=self.system, objects_per_turn=[0], image_tokens=image_tokens,
                                      drop_turns=False, source=f"{source} (prompt {k})",
                                      context_token=self.vision.context_token)
            prompts.append({"input_ids": enc.input_ids, "expr_ids": enc.expr_ids})
        return prompts

    def make_sample(self, enc: EncodedConversation, *, vision: VisionInput | None,
                    g_pixel_values: torch.Tensor | None, masks: np.ndarray | torch.Tensor | None,
                    meta: dict, prompt_masks: torch.Tensor | None = None) -> dict:
        """The per-sample dict (collate's input); checks the ``[SEG]`` / mask count once more.

        ``vision``: the LLM's image input (:meth:`image_inputs` / :meth:`video_inputs`), None for text.

        ``prompt_masks``: bool (n_regions, g, g) visual-prompt cells of the last tile
        (``datasets.visual_prompts``), or None for a sample without regions.
        """
        if masks is not None:
            masks = torch.as_tensor(masks, dtype=torch.uint8)
            if masks.shape[0] != int((enc.input_ids == self.tokenizer.convert_tokens_to_ids(SEG_TOKEN)).sum()):
                raise AssertionError(f"{self.name} {meta.get('sample_id')}: masks and {SEG_TOKEN} count differ")
        meta = {"dataset": self.name, "index": meta.pop("index"), "pad_token_id": self.tokenizer.pad_token_id,
                **meta}
        return {
            "input_ids": enc.input_ids,  # (L,)
            "labels": enc.labels,  # (L,)
            "expr_ids": enc.expr_ids,  # (L,)
            "pixel_values": None if vision is None else vision.pixel_values,  # (n_tiles, 3, S, S) | (n_patches, D_p)
            "image_grid_thw": None if vision is None else vision.grid_thw,  # Qwen-VL (n_images, 3) | None
            "g_pixel_values": g_pixel_values,  # (T, 3, G, G) | None
            "masks": masks,  # (n_obj, T, H, W) uint8 | None
            "prompt_masks": prompt_masks,  # (n_regions, g, g) bool | None
            "meta": meta,
        }
