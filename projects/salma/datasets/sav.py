"""SA-V readers: Sa2VA's pseudo-labelled referring videos (training) and the Ref-SAV evaluation set.

Training (Sa2VA's ``video_sam2_dataset``): an expression json ``{video_id: {"video_path",
"anno_path", "objects": {obj_idx: {"formated": str, "short_caps": [str]}}}}`` whose paths are
relative to the SA-V folder; ``anno_path`` is SA-V's ``*_manual.json``, whose ``masklet`` lists, for
every annotated frame (every 4th frame of the 24 fps mp4: 6 fps), one COCO RLE per object (index
``obj_idx``). Frame t of the masklet is frame 4t of the mp4 (SA-V's ``frames[::4]``). A sample
draws up to ``num_objects_per_sample`` objects and ``num_frames`` annotated frames; each object is
asked as "Please segment the object according to the description: {formated}" (``expression=
'long'``, Sa2VA's default) or, with ``'short'``, one of its short captions in the video templates.
Only the sampled frames are decoded and only their masks.

Evaluation (Ref-SAV valid): ``meta_expressions_valid.json`` + ``mask_dict.json`` in the MeViS
layout (:class:`RefVOSDataset`), frames decoded from the SA-V mp4 instead of JPEG folders: a frame
name is the frame's index in the mp4 (its trailing digits). ``type_id`` 0 = long, 1 = short
expression; the evaluation reports them separately (protocol ``'refsav'``).
"""
from __future__ import annotations

import os
import re

import numpy as np

from ..registry import DATASETS
from .base import SalmaDataset
from .errors import DataError
from .frames import VideoFileFrames
from .io import expect, field, read_json, safe_path
from .masks import decode_rle
from .ref_vos import RefVOSDataset, _exp_key, sample_frame_indices
from .templates import ANSWER_LIST, SAV_LONG_QUESTION, VIDEO_SEG_QUESTIONS, clean_expression
from .video_files import VideoEndedEarly, frame_reference, read_video_frames

EXPRESSION_MODES = ("long", "short", "long_short")
_TRAILING_DIGITS = re.compile(r"(\d+)$")


def read_masklet(path: str) -> list[list[dict]]:
    """``masklet`` of an SA-V ``*_manual.json``: per annotated frame, one RLE per object (the same
    objects in every frame; the RLEs are checked when decoded)."""
    data = read_json(path)
    masklet = field(data, "masklet", list, where=path, default=None) if isinstance(data, dict) else None
    if not masklet:
        raise DataError(f"{path}: no masklet (annotated frames)", reason="empty_video")
    for t, frame in enumerate(masklet):
        if len(expect(frame, list, where=f"{path}: masklet frame {t}")) != len(masklet[0]):
            raise DataError(f"{path}: masklet frame {t} has {len(frame)} objects, frame 0 has {len(masklet[0])}",
                            reason="bad_record")
    return masklet


@DATASETS.register_module()
class SAVDataset(SalmaDataset):
    """SA-V videos with a referring description per manual masklet.

    Args:
        expression_file: the expression json (module doc).
        video_folder: the SA-V folder ``video_path`` and ``anno_path`` are relative to.
        data_root: prefix joined to both when they are relative.
        num_frames: annotated frames per sample (K).
        frame_sampling: ``'random'`` | ``'uniform'`` | ``'first'`` (:func:`sample_frame_indices`).
        num_objects_per_sample: objects (expressions) per sample, drawn without replacement.
        expression: ``'long'`` (``formated``), ``'short'`` (a short caption) or ``'long_short'``
            (either, with probability 1/2 per sample).
        annotation_stride: mp4 frames per annotated frame (SA-V: 4).
        **kwargs: :class:`SalmaDataset` arguments.
    """

    def __init__(self, *, expression_file: str, video_folder: str, data_root: str = "", num_frames: int = 5,
                 frame_sampling: str = "random", num_objects_per_sample: int = 5, expression: str = "long",
                 annotation_stride: int = 4, **kwargs) -> None:
        super().__init__(**kwargs)
        if expression not in EXPRESSION_MODES:
            raise ValueError(f"expression must be one of {EXPRESSION_MODES}, got {expression!r}")
        sample_frame_indices(1, 1, frame_sampling, np.random.default_rng(0))  # validate the strategy
        self.expression_file = os.path.join(data_root, expression_file)
        self.video_folder = os.path.join(data_root, video_folder)
        self.num_frames = num_frames
        self.frame_sampling = frame_sampling
        self.num_objects_per_sample = num_objects_per_sample
        self.expression = expression
        self.annotation_stride = annotation_stride
        videos = read_json(self.expression_file, expect=dict, what="(video id -> video_path, anno_path, objects)")
        for vid in sorted(videos):
            try:
                item = self._parse_video(vid, videos[vid])
            except DataError as err:
                self.index_error(err)
                continue
            self.items.append(item)
            n_obj = min(len(item["objects"]), self.num_objects_per_sample)
            words = max(len(o["long"].split()) for o in item["objects"])
            self.modality_lengths.append(num_frames * (self.vision.frame_tokens() + 8) + n_obj * (40 + 2 * words))

    def _parse_video(self, vid: str, video: dict) -> dict:
        """Index entry of one video; a bad object is dropped and counted (or raised) on its own."""
        where = f"{self.expression_file}: video {vid}"
        paths = {key: safe_path(field(expect(video, dict, where=where), key, str, where=where), what=key, where=where)
                 for key in ("video_path", "anno_path")}
        objects = []
        for obj_idx, info in sorted(field(video, "objects", dict, where=where, default={}).items(),
                                    key=lambda kv: _exp_key(kv[0])):
            try:
                objects.append(self._parse_object(vid, obj_idx, info))
            except DataError as err:
                self.index_error(err)
        if not objects:
            raise DataError(f"{where} has no object with a description", reason="empty_expression")
        return {"vid": vid, "video": os.path.join(self.video_folder, paths["video_path"]),
                "anno": os.path.join(self.video_folder, paths["anno_path"]), "objects": objects}

    def _parse_object(self, vid: str, obj_idx: str, info: dict) -> dict:
        where = f"{self.expression_file}: video {vid} object {obj_idx}"
        if not str(obj_idx).isdigit():
            raise DataError(f"{where}: object index is not a number", reason="bad_record")
        expect(info, dict, where=where)
        for key, needed in (("formated", self.expression != "short"), ("short_caps", self.expression != "long")):
            if needed and key not in info:
                raise DataError(f"{where}: no '{key}' (the object's text)", reason="bad_record")
        long = clean_expression(field(info, "formated", str, where=where, default=""))
        short = [c for c in (clean_expression(expect(c, str, where=f"{where}: short_caps"))
                             for c in field(info, "short_caps", list, where=where, default=[])) if c]
        if (self.expression != "short" and not long) or (self.expression != "long" and not short):
            raise DataError(f"{where}: empty {'formated' if not long else 'short_caps'} text",
                            reason="empty_expression")
        return {"obj": int(obj_idx), "long": long, "short": short}

    def prepare(self, index: int, rng: np.random.Generator) -> dict:
        item = self.items[index]
        masklet = read_masklet(item["anno"])
        objects = item["objects"]
        if self.mode == "train":
            objects = [objects[i] for i in rng.permutation(len(objects))[: self.num_objects_per_sample]]
        for o in objects:
            if o["obj"] >= len(masklet[0]):
                raise DataError(f"{item['anno']}: object {o['obj']} (video {item['vid']}) not in the masklet "
                                f"({len(masklet[0])} objects)", reason="missing_anno")
        frame_indices = sample_frame_indices(len(masklet), self.num_frames, self.frame_sampling, rng)
        video_indices = [self.annotation_stride * t for t in frame_indices]
        try:
            frames = read_video_frames(item["video"], video_indices)
        except VideoEndedEarly as err:
            raise DataError(f"{item['video']}: {err.n_frames} frames, but {item['anno']} annotates {len(masklet)} "
                            f"(every {self.annotation_stride}th frame)", reason="mask_frames") from err
        width, height = frames[0].size
        masks = np.stack([np.stack([
            decode_rle(masklet[t][o["obj"]], height, width, source=f"{item['anno']}: masklet frame {t} object {o['obj']}")
            for t in frame_indices]) for o in objects])  # (n_obj, K, H, W)

        short = self.expression == "short" or (self.expression == "long_short" and rng.random() < 0.5)
        if short:
            texts = [o["short"][0 if self.mode == "eval" else rng.integers(len(o["short"]))] for o in objects]
            templates = VIDEO_SEG_QUESTIONS
        else:
            texts, templates = [o["long"] for o in objects], (SAV_LONG_QUESTION,)
        vision = self.video_inputs(frames)  # InternVL: (K, 3, S, S), one tile per frame
        prefix = vision.prefix
        turns = self.seg_turns(texts, prefix=prefix, templates=templates, answers=ANSWER_LIST,
                               rng=None if self.mode == "eval" else rng)
        enc = self.encode(turns, objects_per_turn=[1] * len(turns), image_tokens=vision.num_tokens,
                          source=f"{self.expression_file}: video {item['vid']}")
        kept = enc.num_turns
        meta = {"index": index, "sample_id": item["vid"], "video_id": item["vid"], "video_path": item["video"],
                "frame_indices": frame_indices, "video_frame_indices": video_indices,
                "image_paths": [frame_reference(item["video"], t) for t in video_indices],
                "orig_size": (height, width), "obj_ids": [o["obj"] for o in objects[:kept]],
                "expressions": texts[:kept], "questions": self.questions(turns[:kept], prefix)}
        return self.make_sample(enc, vision=vision, g_pixel_values=self.sam_inputs(frames), masks=masks[:kept], meta=meta)


@DATASETS.register_module()
class RefSAVDataset(RefVOSDataset):
    """Ref-SAV evaluation: :class:`RefVOSDataset` with frames decoded from the SA-V mp4 files.

    Args:
        video_folder: folder of the SA-V videos.
        video_file: path of a video relative to ``video_folder``, a format string of ``video_id``
            (SA-V's layout ``sav_000/sav_000001.mp4`` is ``"{video_id:.7}/{video_id}.mp4"``).
        **kwargs: :class:`RefVOSDataset` arguments (``expression_file``, ``mask_file``,
            ``data_root``, ...); ``image_folder`` is not used.

    Every expression, long or short, is asked as Sa2VA's Ref-SAV evaluation asks it: "Please segment
    the object according to the description: {exp}".
    """

    eval_question = SAV_LONG_QUESTION

    def __init__(self, *, video_folder: str, video_file: str = "{video_id}.mp4", image_folder: str = "",
                 **kwargs) -> None:
        self.video_folder = os.path.join(kwargs.get("data_root", ""), video_folder)
        self.video_file = video_file
        super().__init__(image_folder=image_folder, **kwargs)

    def video_path(self, vid: str) -> str:
        return os.path.join(self.video_folder, self.video_file.format(video_id=vid))

    def frame_number(self, vid: str, frame: str) -> int:
        """A frame name's index in the mp4 (its trailing digits)."""
        match = _TRAILING_DIGITS.search(os.path.splitext(str(frame))[0])
        if match is None:
            raise DataError(f"{self.expression_file}: video {vid} frame {frame!r} does not end with a frame number",
                            reason="bad_record")
        return int(match.group(1))

    def frame_path(self, vid: str, frame: str) -> str:
        return frame_reference(self.video_path(vid), self.frame_number(vid, frame))

    def frame_source(self, vid: str, frames: list[str]) -> VideoFileFrames:
        """The annotated frames of the mp4, decoded when asked (``stream_frames``)."""
        return VideoFileFrames(self.video_path(vid), frame_numbers=[self.frame_number(vid, f) for f in frames])

    def _load_frame(self, vid: str, frame: str):
        return self._load_frames(vid, [frame])[0]

    def _load_frames(self, vid: str, frames: list[str]) -> list:
        return read_video_frames(self.video_path(vid), [self.frame_number(vid, f) for f in frames])
