"""Video QA reader, Chat-UniVi layout (``video_chat.json``), so the LLM keeps its video chat ability.

``[{"id", "video": file name, "conversations": [{"from": "human"|"gpt", "value"}]}]``; ``<video>``
(or ``<image>``) marks the video in the first question and is removed: the frame tokens open the
first question. Videos are files (mp4 / mkv / ...) read with OpenCV (``video_files``); a name whose
file is missing is looked for with the other ``video_extensions`` (Chat-UniVi lists ``.mkv`` files
it distributes as ``.mp4``). As Sa2VA: ``num_frames`` frames, one in each of ``num_frames`` equal
segments of the video (a random one in training, the middle one in evaluation; every frame when
the video is shorter), one tile per frame. No masks, no ``[SEG]``.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from ..registry import DATASETS
from .base import SalmaDataset
from .chat import Turn, conversation_pairs
from .errors import DataError
from .io import expect, field, read_json, safe_path
from .video_files import frame_reference, resolve_video_path, sample_video_frames

VIDEO_PLACEHOLDERS = ("<video>", "<image>")


def segment_frame_indices(num_total: int, num_frames: int, rng: np.random.Generator | None) -> list[int]:
    """One frame per equal segment (``rng=None``: each segment's middle); all frames if fewer."""
    if num_total <= num_frames:
        return list(range(num_total))
    bounds = np.linspace(0, num_total, num_frames + 1).astype(int)
    if rng is None:
        return [int((a + b - 1) // 2) for a, b in zip(bounds[:-1], bounds[1:])]
    return [int(rng.integers(a, b)) for a, b in zip(bounds[:-1], bounds[1:])]


def strip_placeholders(text: str) -> str:
    for placeholder in VIDEO_PLACEHOLDERS:
        text = text.replace(placeholder, "")
    return text.strip()


@DATASETS.register_module()
class VideoQADataset(SalmaDataset):
    """Conversations about a video file.

    Args:
        data_file: ``video_chat.json``.
        video_folder: folder the ``video`` names are relative to.
        data_root: prefix joined to both when they are relative.
        num_frames: frames the LLM sees (one per segment).
        video_extensions: extensions tried, in order, when the named file is missing.
        **kwargs: :class:`SalmaDataset` arguments.
    """

    def __init__(self, *, data_file: str, video_folder: str, data_root: str = "", num_frames: int = 5,
                 video_extensions: Sequence[str] = (".mp4", ".mkv", ".webm", ".avi"), **kwargs) -> None:
        super().__init__(**kwargs)
        self.data_file = os.path.join(data_root, data_file)
        self.video_folder = os.path.join(data_root, video_folder)
        self.num_frames = num_frames
        self.video_extensions = tuple(video_extensions)
        records = read_json(self.data_file, expect=list, what="(video conversation records)")
        for item in self.checked_records(records, self._parse):
            self.items.append(item)
            words = sum(len(q.split()) + len(a.split()) for q, a in item["pairs"])
            self.modality_lengths.append(num_frames * (self.vision.frame_tokens() + 8) + 2 * words + 20 * len(item["pairs"]))

    def _parse(self, rec: dict, i: int) -> dict:
        where = f"{self.data_file}: record {i}"
        where = f"{where} (id {expect(rec, dict, where=where).get('id')})"
        video = safe_path(field(rec, "video", str, where=where), what="video", where=where)
        pairs = conversation_pairs(field(rec, "conversations", list, where=where, default=[]), where=where)
        pairs = [(strip_placeholders(q), a) for q, a in pairs]
        if any(not q for q, _ in pairs):
            raise DataError(f"{where}: a question is only a placeholder", reason="empty_expression")
        return {"id": rec.get("id", i), "video": video, "pairs": pairs}

    def prepare(self, index: int, rng: np.random.Generator) -> dict:
        item = self.items[index]
        path = resolve_video_path(os.path.join(self.video_folder, item["video"]), self.video_extensions)
        frame_rng = None if self.mode == "eval" else rng
        frames, indices, n_frames = sample_video_frames(
            path, lambda n: segment_frame_indices(n, self.num_frames, frame_rng))
        vision = self.video_inputs(frames)  # InternVL: (K, 3, S, S), one tile per frame
        prefix = vision.prefix
        turns = [Turn((prefix if k == 0 else "") + q, a) for k, (q, a) in enumerate(item["pairs"])]
        enc = self.encode(turns, objects_per_turn=[0] * len(turns), image_tokens=vision.num_tokens,
                          source=f"{self.data_file}: id {item['id']}")
        meta = {"index": index, "sample_id": item["id"], "video_path": path, "frame_indices": indices,
                "num_video_frames": n_frames, "image_paths": [frame_reference(path, t) for t in indices],
                "orig_size": (frames[0].height, frames[0].width),
                "questions": self.questions(turns[: enc.num_turns], prefix)}
        return self.make_sample(enc, vision=vision, g_pixel_values=None, masks=None, meta=meta)
