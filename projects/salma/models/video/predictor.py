"""Video inference: the LLM sees K frames, SAM-2's memory carries the masks to every frame.

For one video and its expressions (one generation prompt each, the K LLM frames as one InternVL
tile per frame):

1. ``model.predict`` generates every answer and decodes each generated ``[SEG]`` on the K LLM
   frames exactly as in training: SAM-2 features, the structure-prior pre-pass, CMA gated by the
   prior, the decoder with the ``[SEG]`` embedding appended to the sparse prompts.
2. ``propagation='memory'`` (default): :class:`SAM2MemoryTracker` runs transformers'
   ``Sam2VideoModel`` on *all* frames. The K decoded masks enter as SAM-2 mask inputs on their
   frames (conditioning frames: mask as output, memory encoded from it, object pointer from the
   decoder's mask-prompt pass), then SAM-2's memory attention + object pointers track every
   object through the other frames, forwards and, when the first LLM frame is not frame 0,
   backwards. This is Sa2VA's inference (language-prompted conditioning frames, memory-tracked
   rest). On the K conditioning frames the output is the language decode itself (or SAM-2's
   rendering of it: ``llm_frame_masks='tracker'``, Sa2VA-i's choice); on tracked frames the
   decoder sees memory-conditioned features and no language, so CMA and the prior (which exist
   only for language-conditioned decodes, as in training) are not applied there.
3. ``propagation='decode_all'`` (ablation, Sa2VA's "no memory" variant): every frame is decoded
   independently with the same ``[SEG]`` embedding (CMA + prior on every frame), no memory,
   ``decode_chunk`` frames per call.

Streamed, so a video of any length costs the memory of a few frames: frames are read when the
tracker reaches them (any sequence of SAM-2 inputs, e.g. ``datasets.frames.SamFrames``), encoded
and released; the session keeps only what SAM-2's memory attention will read again
(:class:`MemoryWindow`); masks leave frame by frame (:meth:`VideoPredictor.stream`).

The tracker shares the grounding runner's image encoder, prompt encoder and (fine-tuned) mask
decoder by reference (``tracker_decoder='shared'``); ``'original'`` keeps the SAM-2 checkpoint's
own prompt encoder and decoder for tracking (Sa2VA-i's choice: the fine-tuned decoder never saw
memory-conditioned features). The video-only modules (memory encoder, memory attention, object
pointer projection, temporal encodings) come from the Meta SAM-2 checkpoint, or are random for
tiny test models (``memory_weights='random'``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import nn
from tqdm import tqdm

from ..llava_sam2 import FrameCache
from .sam2_video import PROPAGATION_MODES, FrameSource
from .tracker import SAM2MemoryTracker

LLM_FRAME_MASKS = ("language", "tracker")


@dataclass
class VideoStream:
    """One video's answers now, its masks frame by frame as SAM-2 produces them.

    ``answers``: per row (expression) ``text``, ``n_seg`` (``[SEG]`` in the answer), ``n_masks``
    (how many of them get masks: all, or the first only) and ``meta``. Iterating yields
    ``(frame index, masks)`` for every frame once, ``masks`` a list over rows of bool
    (n_masks, H, W) tensors on the CPU. Frames come in propagation order: from the first LLM
    frame to the end, then backwards to frame 0 (``'memory'``), or in order (``'decode_all'``,
    or no ``[SEG]`` at all). Nothing of earlier frames is kept: memory does not grow with the
    video's length.
    """

    answers: list[dict]
    n_frames: int
    size: tuple[int, int]
    frames: Iterator[tuple[int, list[torch.Tensor]]]

    def __iter__(self) -> Iterator[tuple[int, list[torch.Tensor]]]:
        return self.frames

    def collect(self) -> list[torch.Tensor]:
        """Every row's masks on every frame: bool (n_masks, N, H, W) per row (short videos)."""
        out = [torch.zeros(a["n_masks"], self.n_frames, *self.size, dtype=torch.bool) for a in self.answers]
        for t, masks in self:
            for row, m in enumerate(masks):
                out[row][:, t] = m
        return out


class VideoPredictor:
    """Answers and masks on every frame for the expressions of one video.

    Args:
        model: the SALMA model (``VideoLLaVASAMModel``), in eval mode.
        propagation: ``'memory'`` (default) or ``'decode_all'`` (see the module docstring).
        tracker: required for ``'memory'``.
        max_new_tokens: generation budget per answer.
        track_all_seg: give every ``[SEG]`` of an answer its masks (the inference API); by default
            only the first (the evaluation: one object per expression).
        progress: show a progress bar over the frames.
        llm_frame_masks: ``'memory'`` only: what an LLM frame's mask is: ``'language'`` (default)
            its language decode (CMA + prior), which is also what conditions SAM-2 there;
            ``'tracker'`` SAM-2's output on it (its rendering of that decode as a mask prompt,
            Sa2VA-i's choice: every frame's mask comes from the tracker).
        decode_chunk: ``'decode_all'`` only: frames encoded and decoded per call (memory).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        propagation: str = "memory",
        tracker: SAM2MemoryTracker | None = None,
        max_new_tokens: int = 32,
        track_all_seg: bool = False,
        progress: bool = False,
        llm_frame_masks: str = "language",
        decode_chunk: int = 16,
    ) -> None:
        if propagation not in PROPAGATION_MODES:
            raise ValueError(f"propagation must be one of {PROPAGATION_MODES}, got {propagation!r}")
        if propagation == "memory" and tracker is None:
            raise ValueError("propagation='memory' needs a SAM2MemoryTracker")
        if llm_frame_masks not in LLM_FRAME_MASKS:
            raise ValueError(f"llm_frame_masks must be one of {LLM_FRAME_MASKS}, got {llm_frame_masks!r}")
        if decode_chunk < 1:
            raise ValueError(f"decode_chunk must be >= 1, got {decode_chunk}")
        self.model = model
        self.propagation = propagation
        self.tracker = tracker
        self.max_new_tokens = max_new_tokens
        self.track_all_seg = track_all_seg
        self.progress = progress
        self.llm_frame_masks = llm_frame_masks
        self.decode_chunk = decode_chunk

    @torch.no_grad()
    def __call__(
        self,
        batch: dict,
        frames: FrameSource,
        llm_frame_indices: Sequence[int],
        out_size: tuple[int, int],
    ) -> list[dict]:
        """Predict every row of ``batch`` (one expression per row, all of one video), the masks of
        every frame in memory (short videos; :meth:`stream` for any length).

        Returns:
            per row: ``text``, ``n_seg``, ``masks`` bool (1, N, H, W) on every frame, or
            (0, N, H, W) when the answer has no ``[SEG]``, and ``meta``; with ``track_all_seg``
            masks are (n_seg, N, H, W).
        """
        stream = self.stream(batch, frames, llm_frame_indices, out_size)
        masks = stream.collect()
        return [{"text": a["text"], "n_seg": a["n_seg"], "masks": m, "meta": a["meta"]}
                for a, m in zip(stream.answers, masks)]

    @torch.no_grad()
    def stream(
        self,
        batch: dict,
        frames: FrameSource,
        llm_frame_indices: Sequence[int],
        out_size: tuple[int, int],
    ) -> VideoStream:
        """Generate every row's answer now; masks follow frame by frame (:class:`VideoStream`).

        The answer's first ``[SEG]`` is the expression's object (as in the RES evaluation);
        further ``[SEG]`` tokens are counted in ``n_seg`` but not tracked (unless ``track_all_seg``).

        Args:
            batch: collated rows whose ``g_pixel_values`` are the K LLM frames (K, 3, S, S).
            frames: SAM-2 input of every frame of the video: (N, 3, S, S), or a sequence that
                reads a frame when asked (``datasets.frames.SamFrames``).
            llm_frame_indices: (K,) index in the video of each LLM frame (repeats allowed).
            out_size: the video's (H, W).
        """
        n_frames = len(frames)
        if self.propagation == "decode_all":
            rows = len(batch["g_pixel_values"])
            outputs = self.model.predict(dict(batch, g_pixel_values=[None] * rows), self.max_new_tokens,
                                         keep_queries=True)
            answers = self._answers(outputs)
            return VideoStream(answers, n_frames, tuple(out_size),
                               self._progress(self._decode_all(outputs, answers, frames, out_size), n_frames))

        outputs = self.model.predict(batch, self.max_new_tokens)  # masks on the K LLM frames
        answers = self._answers(outputs)
        first = {}  # video frame -> position among the LLM frames (a repeated frame: its first copy)
        for k, t in enumerate(llm_frame_indices):
            first.setdefault(int(t), k)
        objects = [(row, s) for row, a in enumerate(answers) for s in range(a["n_masks"])]  # (row, [SEG])
        if not objects:
            frames_out = ((t, [torch.zeros(0, *out_size, dtype=torch.bool) for _ in answers]) for t in range(n_frames))
            return VideoStream(answers, n_frames, tuple(out_size), self._progress(frames_out, n_frames))
        cond = {t: torch.stack([outputs[row]["mask_logits"][s, k] for row, s in objects]) for t, k in first.items()}
        language = {t: torch.stack([outputs[row]["masks"][s, k] for row, s in objects]) for t, k in first.items()}
        owners = [[i for i, (r, _) in enumerate(objects) if r == row] for row in range(len(answers))]

        def tracked() -> Iterator[tuple[int, list[torch.Tensor]]]:
            for t, logits in self.tracker.propagate(frames, cond):  # logits (n_obj, 1, h, w)
                if self.llm_frame_masks == "language" and t in language:
                    masks = language[t]  # the LLM frames keep the language decode itself
                else:
                    masks = self.tracker.to_masks(logits, out_size)  # (n_obj, H, W)
                yield t, [masks[mine] for mine in owners]

        return VideoStream(answers, n_frames, tuple(out_size), self._progress(tracked(), n_frames))

    def _answers(self, outputs: list[dict]) -> list[dict]:
        """Per row: text, n_seg, n_masks (the [SEG] that get masks), meta."""
        answers = []
        for o in outputs:
            if "masks" in o:
                n_seg = int(o["masks"].shape[0])
            else:  # decode_all: the queries only, masks come later
                n_seg = 0 if o["queries"] is None else int(o["queries"].seg.shape[0])
            n_masks = n_seg if self.track_all_seg else min(n_seg, 1)
            answers.append({"text": o["text"], "n_seg": n_seg, "n_masks": n_masks, "meta": o["meta"]})
        return answers

    def _decode_all(self, outputs, answers, frames: FrameSource, out_size) -> Iterator[tuple[int, list[torch.Tensor]]]:
        """Every frame decoded with each answer's [SEG] embeddings, ``decode_chunk`` frames per call
        (their SAM-2 features and prior computed once for all rows)."""
        sam2 = next(self.model.grounding_encoder.parameters())
        for start in range(0, len(frames), self.decode_chunk):
            chunk = range(start, min(start + self.decode_chunk, len(frames)))
            pixels = torch.stack([torch.as_tensor(frames[t]) for t in chunk])  # (C, 3, S, S)
            pixels = pixels.to(sam2.device, sam2.dtype)
            cache = FrameCache()
            decoded = [self.model.decode_frames(o["queries"], pixels, tuple(out_size), cache)["masks"][: a["n_masks"]]
                       for o, a in zip(outputs, answers)]  # per row (n_masks, C, H, W)
            for i, t in enumerate(chunk):
                yield t, [m[:, i] for m in decoded]

    def _progress(self, frames: Iterator, n_frames: int) -> Iterator:
        if not self.progress:
            return frames

        def counted():
            with tqdm(total=n_frames, desc="masks", unit="frame") as bar:
                for item in frames:
                    yield item
                    bar.update()
        return counted()
