"""Evaluation items built from in-memory inputs: one image or video and some text.

The inference API (``salma_model.SALMAModel.predict``) must see exactly what the
evaluation sees, so an item here is built by the same code as the evaluation readers' items
(``RefCOCODataset`` / ``RefVOSDataset`` in ``mode='eval'``, ``stream_frames=True``):

* image: InternVL dynamic tiles (``SalmaDataset.image_inputs``), ``image_token_string``, the
  question template ``EVAL_SEG_QUESTION`` (``SalmaDataset.seg_turns``), SAM-2 input of the image;
* video: the LLM's ``num_frames`` frames (``sample_frame_indices``), one tile each,
  ``video_token_string``, ``EVAL_VIDEO_SEG_QUESTION``, SAM-2 input of the LLM frames, and of every
  frame made when the tracker reads it (``sam_frames``: the video is never held in memory);
* each text is its own stand-alone generation prompt (``SalmaDataset.eval_prompts``), so
  ``collate.salma_eval_collate`` / ``expand_eval_sample`` turn the item into the rows that
  ``VideoLLaVASAMModel.predict`` takes.

A text is a referring expression (cleaned like the readers' expressions and put into the
template; an expression ending in '?' is asked as is, as ReVOS reasoning expressions are), or,
with ``template=False``, the user's question verbatim (then no prompt token is tagged as the
expression: CMA attends to the ``[SEG]`` embedding alone). A verbatim question may continue a chat:
``history`` holds the earlier (question, answer) turns, rendered before it as ``chat.build_prompt``
renders a conversation (the image tokens open the first question).

Regions (visual prompts, as ``OspreyDataset`` builds them): an image item may carry regions, each a
mask (bool / uint8 array (H, W), a PIL image or a PNG path: non-zero = inside) or a box (x0, y0,
x1, y1) in pixels. They become the region list after the image tokens
(``visual_prompts.region_prompt``) and ``prompt_masks``; each text is then a question about
``region1``, ``region2``, ... sent verbatim (``<region1>`` is accepted too).
"""
from __future__ import annotations

import os
from typing import Sequence, Union

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..constants import SEG_TOKEN
from .base import SalmaDataset
from .chat import Turn
from .encode import encode_conversation
from .frames import (FRAME_EXTENSIONS, VIDEO_EXTENSIONS, ImageFrames, ImageInput, SamFrames,  # noqa: F401
                     VideoFrames, as_rgb_image, open_video)
from .ref_vos import sample_frame_indices
from .templates import EVAL_ANSWER, EVAL_SEG_QUESTION, EVAL_VIDEO_SEG_QUESTION, clean_expression
from .transforms import load_image
from .vision_inputs import VisionInput
from .visual_prompts import (box_to_mask, check_region_cells, last_tile_layout, named_regions, region_cells,
                             region_prompt, token_grid, untag_regions)

RegionInput = Union[np.ndarray, Image.Image, str, os.PathLike, Sequence[float]]


def as_region_mask(region: RegionInput, height: int, width: int, *, name: str = "region") -> np.ndarray:
    """A region as a uint8 (H, W) mask: a box (x0, y0, x1, y1) in pixels, or a mask (array, PIL
    image or image file; non-zero = inside) of the image's size."""
    if isinstance(region, (tuple, list)) and all(isinstance(v, (int, float)) for v in region):
        try:
            return box_to_mask(region, height, width)
        except ValueError as err:
            raise ValueError(f"{name}: {err}") from err
    if isinstance(region, (str, os.PathLike)):
        region = load_image(os.fspath(region)).convert("L")
    mask = np.asarray(region.convert("L") if isinstance(region, Image.Image) else region)
    if mask.ndim != 2 or mask.shape != (height, width):
        raise ValueError(f"{name}: mask of shape {tuple(mask.shape)}, the image is ({height}, {width})")
    return (mask != 0).astype(np.uint8)


def read_video(path: str | os.PathLike, *, progress: bool = False) -> tuple[list[Image.Image], list[str]]:
    """Every frame of a video decoded into memory, and their names (short videos; see
    :func:`frames.open_video` for the folder / file rules, which reads a frame when asked)."""
    video = open_video(path)
    frames = [video.image(t) for t in tqdm(range(len(video)), desc="frames", disable=not progress)]
    video.close()
    return frames, list(video.names)


class InferenceReader(SalmaDataset):
    """Builds evaluation items from in-memory images and videos (no files, no annotations).

    Args:
        num_frames: frames the LLM sees of a video (the evaluation's ``num_llm_frames``).
        frame_sampling: how they are picked (the evaluation's ``llm_frame_sampling``).
        **kwargs: :class:`SalmaDataset` arguments (tokenizer, image sizes, tiling, system, max_length).
    """

    def __init__(self, *, num_frames: int = 5, frame_sampling: str = "first", **kwargs) -> None:
        super().__init__(mode="eval", name="inference", **kwargs)
        self.num_frames = num_frames
        self.frame_sampling = frame_sampling
        sample_frame_indices(1, 1, frame_sampling, np.random.default_rng(0))  # validate the strategy

    def image_item(self, image: ImageInput, texts: Sequence[str], *, template: bool = True,
                   regions: Sequence[RegionInput] | None = None, history: Sequence[tuple[str, str]] = ()) -> dict:
        """An item of one image with one generation prompt per text (as ``RefCOCODataset``), or, with
        ``regions``, one question about them per text (as ``OspreyDataset``; ``template`` unused).
        ``history``: earlier (question, answer) turns of a chat that one verbatim text continues."""
        image = as_rgb_image(image)
        vision = self.image_inputs(image)
        prefix, image_tokens = vision.prefix, vision.num_tokens
        meta = {"orig_size": (image.height, image.width)}
        if not regions:
            turns = self._turns(texts, prefix, EVAL_SEG_QUESTION, template)
            return self._item(turns, prefix, image_tokens, vision, self.sam_inputs([image]), meta, history)
        self.check_regions_supported("regions")
        masks = np.stack([as_region_mask(r, image.height, image.width, name=f"region {k + 1}")
                          for k, r in enumerate(regions)])  # (n_regions, H, W)
        layout = last_tile_layout(image.width, image.height, n_tiles=len(vision.pixel_values), use_thumbnail=self.use_thumbnail,
                                  min_num=self.min_dynamic_patch, max_num=self.max_dynamic_patch,
                                  image_size=self.image_size)
        cells = region_cells(masks, grid=token_grid(self.image_seq_length), layout=layout)  # (n_regions, g, g)
        counts = check_region_cells(cells, source="regions")
        prefix += region_prompt(counts)
        turns = self._region_turns(texts, prefix, len(counts))
        item = self._item(turns, prefix, image_tokens + sum(counts), vision, self.sam_inputs([image]), meta,
                          history)
        item["prompt_masks"] = cells
        return item

    def video_item(self, frames: Sequence[ImageInput] | VideoFrames, texts: Sequence[str], *,
                   template: bool = True, history: Sequence[tuple[str, str]] = ()) -> dict:
        """An item of one video, as ``RefVOSDataset`` builds it for the evaluation
        (``stream_frames=True``): the LLM's frames as one tile each and as SAM-2 input
        (``g_pixel_values`` (K, 3, G, G)), ``meta['frame_indices']`` the LLM frames, and
        ``sam_frames`` (:class:`frames.SamFrames`): SAM-2 input of every frame, made when the
        tracker asks. ``frames``: images (PIL, paths, arrays) or an opened video
        (:func:`frames.open_video`); only the LLM frames are decoded here. ``history``: as for
        :meth:`image_item`."""
        video = frames if isinstance(frames, VideoFrames) else ImageFrames(frames)
        width, height = video.size
        rng = np.random.default_rng([self.seed, 0, 0])  # what the readers use for item 0 (only 'random' draws)
        frame_indices = sample_frame_indices(len(video), self.num_frames, self.frame_sampling, rng)
        loaded = {t: video.image(t) for t in sorted(set(frame_indices))}
        images = [loaded[t] for t in frame_indices]
        vision = self.video_inputs(images)  # InternVL: (K, 3, S, S), one tile per frame
        prefix = vision.prefix
        turns = self._turns(texts, prefix, EVAL_VIDEO_SEG_QUESTION, template)
        meta = {"orig_size": (height, width), "frame_indices": frame_indices, "sam_frame_indices": frame_indices,
                "n_frames": len(video), "frame_names": list(video.names)}
        item = self._item(turns, prefix, vision.num_tokens, vision, self.sam_inputs(images), meta, history)
        item["sam_frames"] = SamFrames(video, self.sam_image_size, stats=self.sam_pixel_stats)
        return item

    def _turns(self, texts: Sequence[str], prefix: str, question: str, template: bool) -> list[Turn]:
        """One turn per text: the evaluation's question template around the expression, or verbatim."""
        if isinstance(texts, str) or not texts:
            raise ValueError(f"texts must be a non-empty sequence of strings, got {texts!r}")
        bad = [t for t in texts if SEG_TOKEN in t]
        if bad:
            raise ValueError(f"a text may not contain {SEG_TOKEN} (the model generates it): {bad}")
        if not template:
            return [Turn((prefix if k == 0 else "") + text, None) for k, text in enumerate(texts)]
        expressions = [clean_expression(t) for t in texts]
        empty = [t for t, e in zip(texts, expressions) if not e]
        if empty:
            raise ValueError(f"empty expression(s): {empty}")
        return self.seg_turns(expressions, prefix=prefix, templates=(question,), answers=(EVAL_ANSWER,), rng=None)

    def _region_turns(self, texts: Sequence[str], prefix: str, n_regions: int) -> list[Turn]:
        """One verbatim question per text, each naming only regions 1..n_regions."""
        if isinstance(texts, str) or not texts:
            raise ValueError(f"texts must be a non-empty sequence of strings, got {texts!r}")
        turns = []
        for k, text in enumerate(texts):
            text = untag_regions(text).strip()
            if not text or SEG_TOKEN in text:
                raise ValueError(f"a question about regions must be non-empty and without {SEG_TOKEN}: {text!r}")
            unknown = sorted(n for n in named_regions(text) if not 1 <= n <= n_regions)
            if unknown:
                given = f"{n_regions} region{'s were' if n_regions > 1 else ' was'} given"
                raise ValueError(f"{text!r} names region{unknown[0]} but {given}")
            turns.append(Turn((prefix if k == 0 else "") + text, None))
        return turns

    def _item(self, turns: list[Turn], prefix: str, image_tokens: int, vision: VisionInput, g_pixel_values,
              meta: dict, history: Sequence[tuple[str, str]] = ()) -> dict:
        """The item dict ``expand_eval_sample`` reads (no GT, no teacher-forced conversation)."""
        if history:
            prompts = self._chat_prompts(turns, prefix, image_tokens, history)
        else:
            prompts = self.eval_prompts(turns, prefix=prefix, image_tokens=image_tokens, source="inference input")
        return {
            "pixel_values": vision.pixel_values,  # InternVL (n_tiles, 3, S, S), Qwen-VL (n_patches, D_p)
            "image_grid_thw": vision.grid_thw,  # Qwen-VL (n_images, 3) | None
            "g_pixel_values": g_pixel_values,  # (T, 3, G, G)
            "masks": None,
            "meta": {"dataset": self.name, "index": 0, "pad_token_id": self.tokenizer.pad_token_id, **meta,
                     "questions": self.questions(turns, prefix), "prompts": prompts,
                     "prompt_objects": [[k] for k in range(len(turns))]},
        }

    def _chat_prompts(self, turns: list[Turn], prefix: str, image_tokens: int,
                      history: Sequence[tuple[str, str]]) -> list[dict]:
        """The one prompt of a chat turn: the earlier (question, answer) turns, the image tokens
        ``prefix`` opening the first question, then the new question (no expression tagged). The
        ``[SEG]`` of earlier answers stay in the prompt; only generated ones are segmented."""
        if len(turns) != 1 or turns[0].expr_spans:
            raise ValueError("history continues one chat: give one text, sent verbatim (template=False)")
        earlier = [Turn(question, answer) for question, answer in history]
        conversation = [Turn(prefix + earlier[0].question, earlier[0].answer), *earlier[1:],
                        Turn(turns[0].question[len(prefix):], None)]
        enc = encode_conversation(conversation, self.tokenizer, max_length=self.max_length, system=self.system,
                                  objects_per_turn=[t.answer.count(SEG_TOKEN) for t in earlier] + [0],
                                  image_tokens=image_tokens, drop_turns=False, source="inference input (chat)",
                                  context_token=self.vision.context_token)
        return [{"input_ids": enc.input_ids, "expr_ids": enc.expr_ids}]
