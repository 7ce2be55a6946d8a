"""Referring video segmentation reader: MeViS, ReVOS, Ref-YouTube-VOS and Ref-DAVIS17 (converted).

Layout: ``meta_expressions.json`` = ``{"videos": {vid: {"frames": [names], "expressions": {exp_id:
{"exp", "obj_id": [...], "anno_id": [...], "type_id"?}}}}}``; ``mask_dict.json`` (or ``.pkl``) =
``{str(anno_id): [COCO RLE | null per frame]}``; frames at ``<image_folder>/<vid>/<frame>.jpg``.
The GT of an expression is the union over its anno_ids. ReVOS's optional
``mask_dict_foreground.json`` = ``{vid: {"masks_rle": [RLE per frame]}}``.

Training item = one video: ``num_frames`` frames and up to ``num_expressions_per_sample``
expressions, both drawn without replacement (frames with replacement only when the video is
shorter than ``num_frames``). Evaluation item = one video with all its expressions, the LLM frames
(``num_frames``, sampled deterministically) and ALL frame paths in ``meta['all_frame_paths']`` for
SAM-2 propagation. With ``stream_frames=True`` (what ``tools/test.py`` uses) the item also carries
every frame and its GT read one frame at a time when asked (``sam_frames``, ``gt_frames``), so a
video of any length costs the memory of a few frames; full-video GT in memory via
:meth:`load_gt_masks`.
"""
from __future__ import annotations

import os

import numpy as np

from ..fingerprint import digest, file_signature
from ..registry import DATASETS
from .base import SalmaDataset
from .errors import DataError
from .frames import ImageFrames, SamFrames, VideoFrames
from .io import expect, field, load_pickle, read_json, safe_name
from .masks import decode_rle
from .templates import (ANSWER_LIST, EVAL_ANSWER, EVAL_VIDEO_SEG_QUESTION, VIDEO_SEG_QUESTIONS,
                        clean_expression)
from .transforms import common_frame_size, load_image

_TURN_OVERHEAD = 30
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


FRAME_SAMPLINGS = ("uniform", "uniform_floor", "random", "first")


def sample_frame_indices(num_total: int, num_frames: int, strategy: str, rng: np.random.Generator) -> list[int]:
    """Sorted frame indices.

    ``'uniform'``: evenly spaced, ``linspace(0, T-1, K)`` rounded (deterministic);
    ``'uniform_floor'``: the same truncated to integers, Sa2VA-i's exact frames
    (``np.linspace(..., dtype=int)``; also for short videos, repeats included); ``'random'``:
    drawn without replacement; ``'first'``: the first ones (Sa2VA's evaluation). Otherwise a video
    shorter than ``num_frames`` gives all its frames plus repeats, so every sample has
    ``num_frames`` frames.
    """
    if num_total <= 0:
        raise ValueError("a video needs frames")
    if strategy == "uniform_floor":
        return [int(i) for i in np.linspace(0, num_total - 1, num_frames).astype(int)]
    if num_total < num_frames:
        extra = rng.integers(num_total, size=num_frames - num_total) if strategy == "random" else \
            np.linspace(0, num_total - 1, num_frames - num_total).round().astype(int)
        return sorted(list(range(num_total)) + [int(i) for i in extra])
    if strategy == "uniform":
        return [int(i) for i in np.linspace(0, num_total - 1, num_frames).round()]
    if strategy == "random":
        return sorted(int(i) for i in rng.choice(num_total, num_frames, replace=False))
    if strategy == "first":
        return list(range(num_frames))
    raise ValueError(f"frame_sampling must be one of {FRAME_SAMPLINGS}, got {strategy!r}")


def _exp_key(exp_id: str):
    return (0, int(exp_id), "") if str(exp_id).isdigit() else (1, 0, str(exp_id))


def load_mask_dict(path: str) -> dict:
    """``{key: ...}`` from a ``.json`` (UTF-8) or a ``.pkl`` (plain data only, see ``io.load_pickle``)."""
    data = load_pickle(path) if path.endswith(".pkl") else read_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a mapping of ids to masks, got {type(data).__name__}", reason="bad_file")
    return data


@DATASETS.register_module()
class RefVOSDataset(SalmaDataset):
    """Referring video object segmentation.

    Args:
        expression_file: ``meta_expressions.json``.
        image_folder: folder holding ``<vid>/<frame>.jpg``.
        mask_file: ``mask_dict.json`` / ``.pkl``; None for splits without GT (eval only).
        foreground_file: ReVOS ``mask_dict_foreground.json`` (optional, eval).
        data_root: prefix joined to the three paths above when they are relative.
        num_frames: frames the LLM sees per sample (K).
        frame_sampling: ``'random'`` | ``'uniform'`` | ``'first'`` (see :func:`sample_frame_indices`).
        num_expressions_per_sample: expressions (objects) per training item.
        frame_suffix: appended to frame names that have no image extension.
        sam_all_frames: eval only: SAM-2 frames (``g_pixel_values``) and GT masks cover every frame
            of the video, not just the LLM's ``num_frames`` (memory grows with the video length).
        stream_frames: eval only: the item also gives every frame's SAM-2 input and GT, each made
            when asked: ``sample['sam_frames']`` (:class:`frames.SamFrames`) and
            ``sample['gt_frames']`` (:class:`FrameGT`, None without GT); ``g_pixel_values`` and
            ``masks`` stay the LLM frames'. Frame sizes are checked for every frame up front.
        **kwargs: :class:`SalmaDataset` arguments.
    """

    eval_question = EVAL_VIDEO_SEG_QUESTION  # the question of evaluation items (a subclass may ask otherwise)

    def __init__(self, *, expression_file: str, image_folder: str, mask_file: str | None = None,
                 foreground_file: str | None = None, data_root: str = "", num_frames: int = 5,
                 frame_sampling: str = "random", num_expressions_per_sample: int = 3, frame_suffix: str = ".jpg",
                 sam_all_frames: bool = False, stream_frames: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        join = (lambda p: os.path.join(data_root, p) if p else p)  # noqa: E731
        self.expression_file, self.image_folder = join(expression_file), join(image_folder)
        self.mask_file, self.foreground_file = join(mask_file), join(foreground_file)
        self.num_frames = num_frames
        self.frame_sampling = frame_sampling
        self.num_expressions_per_sample = num_expressions_per_sample
        self.frame_suffix = frame_suffix
        self.sam_all_frames = sam_all_frames
        self.stream_frames = stream_frames
        for key in ("sam_all_frames", "stream_frames"):
            if getattr(self, key) and self.mode != "eval":
                raise ValueError(f"{self.name}: {key} is for evaluation items")
        if sam_all_frames and stream_frames:
            raise ValueError(f"{self.name}: sam_all_frames (every frame in memory) and stream_frames (every frame "
                             f"read when asked) exclude each other")
        sample_frame_indices(1, 1, frame_sampling, np.random.default_rng(0))  # validate the strategy
        if self.mode == "train" and not self.mask_file:
            raise ValueError(f"{self.name}: training needs mask_file")
        self.mask_dict = load_mask_dict(self.mask_file) if self.mask_file else None
        self._foreground: dict | None = None
        self._build_index()

    def _build_index(self) -> None:
        meta = read_json(self.expression_file)
        if not isinstance(meta, dict) or not isinstance(meta.get("videos"), dict):
            got = type(meta).__name__ if not isinstance(meta, dict) else "an object without a 'videos' object"
            raise DataError(f"{self.expression_file}: expected a JSON object with 'videos': {{vid: ...}}, got {got}",
                            reason="bad_file")
        videos = meta["videos"]
        for vid in sorted(videos):
            try:
                frames, expressions = self._check_video(vid, videos[vid])
            except DataError as err:
                self.index_error(err)
                continue
            exps = []
            for exp_id in sorted(expressions, key=_exp_key):
                try:
                    exps.append(self._check_expression(vid, exp_id, expressions[exp_id], len(frames)))
                except DataError as err:
                    self.index_error(err)
            if not exps:
                continue
            self.items.append({"vid": vid, "frames": frames, "exps": exps})
            n_exp = len(exps) if self.mode == "eval" else min(len(exps), self.num_expressions_per_sample)
            words = sum(len(e["exp"].split()) for e in exps[:n_exp])
            self.modality_lengths.append(self.num_frames * (self.vision.frame_tokens() + 8) + n_exp * _TURN_OVERHEAD
                                         + 2 * words)

    def _check_video(self, vid: str, video: dict) -> tuple[list[str], dict]:
        """(frame names, expressions) of a video record; ids that would be paths are refused."""
        safe_name(vid, what="video id", where=self.expression_file)
        where = f"{self.expression_file}: video {vid}"
        frames = field(video, "frames", list, where=where, default=[])
        if not frames:
            raise DataError(f"{where} has no frames", reason="empty_video")
        seen: dict[str, str] = {}
        for frame in frames:
            safe_name(expect(frame, str, where=f"{where}: frame"), what="frame", where=where)
            stem = os.path.splitext(frame)[0] if frame.lower().endswith(_IMAGE_EXTENSIONS) else frame
            if stem in seen:  # one file, and one submission PNG, per name
                raise DataError(f"{where}: frames '{seen[stem]}' and '{frame}' are the same frame '{stem}'",
                                reason="duplicate_frame")
            seen[stem] = frame
        return frames, field(video, "expressions", dict, where=where, default={})

    def _check_expression(self, vid: str, exp_id: str, exp: dict, n_frames: int) -> dict:
        safe_name(exp_id, what="exp id", where=f"{self.expression_file}: video {vid}")
        where = f"{self.expression_file}: video {vid} exp {exp_id}"
        expect(exp, dict, where=where)
        text = clean_expression(field(exp, "exp", str, where=where, default=""))
        if not text:
            raise DataError(f"{where}: empty expression text", reason="empty_expression")
        anno_ids = field(exp, "anno_id", list, where=where, default=[])
        obj_ids = field(exp, "obj_id", list, where=where, default=[])
        for anno_id in anno_ids:
            expect(anno_id, (int, str), where=f"{where}: anno_id")
        type_id = field(exp, "type_id", (int, type(None)), where=where, default=None)
        if self.mask_dict is not None:
            if not anno_ids:
                raise DataError(f"{where}: expression has no object (empty anno_id)", reason="empty_expression")
            for anno_id in anno_ids:
                rles = self.mask_dict.get(str(anno_id))
                if rles is None:
                    raise DataError(f"{self.mask_file}: anno_id {anno_id} (video {vid}, exp {exp_id}) not in "
                                    f"the mask dict", reason="missing_anno")
                expect(rles, list, where=f"{self.mask_file}: anno_id {anno_id}")
                if len(rles) != n_frames:
                    raise DataError(f"{self.mask_file}: anno_id {anno_id} has {len(rles)} masks for {n_frames} "
                                    f"frames (video {vid})", reason="mask_frames")
        return {"exp_id": exp_id, "exp": text, "anno_ids": anno_ids, "obj_ids": obj_ids, "type_id": type_id}

    def frame_path(self, vid: str, frame: str) -> str:
        name = frame if frame.lower().endswith(_IMAGE_EXTENSIONS) else frame + self.frame_suffix
        return os.path.join(self.image_folder, vid, name)

    def _gt(self, vid: str, exp: dict, frame_indices: list[int], height: int, width: int) -> np.ndarray:
        """Union over the expression's anno_ids: uint8 (T, H, W)."""
        out = np.zeros((len(frame_indices), height, width), dtype=np.uint8)
        for anno_id in exp["anno_ids"]:
            rles = self.mask_dict[str(anno_id)]
            for t, f in enumerate(frame_indices):
                out[t] |= decode_rle(rles[f], height, width,
                                     source=f"{self.mask_file}: anno_id {anno_id} frame {f} (video {vid})")
        return out

    def prepare(self, index: int, rng: np.random.Generator) -> dict:
        item = self.items[index]
        vid, frames, exps = item["vid"], item["frames"], item["exps"]
        frame_indices = sample_frame_indices(len(frames), self.num_frames, self.frame_sampling, rng)
        if self.mode == "train":
            order = rng.permutation(len(exps))[: self.num_expressions_per_sample]
            exps = [exps[i] for i in order]
            templates, answers, turn_rng = VIDEO_SEG_QUESTIONS, ANSWER_LIST, rng
        else:
            templates, answers, turn_rng = (self.eval_question,), (EVAL_ANSWER,), None

        sam_indices = list(range(len(frames))) if self.sam_all_frames else frame_indices
        needed = sorted(set(frame_indices) | set(sam_indices))
        video = None
        if self.stream_frames:  # every frame's size now, pixels of the LLM frames only
            video = self.frame_source(vid, frames)
            width, height = video.size
            loaded = {f: video.image(f) for f in needed}
        else:
            loaded = dict(zip(needed, self._load_frames(vid, [frames[f] for f in needed])))
            width, height = common_frame_size({self.frame_path(vid, frames[f]): im.size for f, im in loaded.items()},
                                              context=f" (video {vid})")
        images = [loaded[f] for f in frame_indices]
        vision = self.video_inputs(images)  # InternVL: (K, 3, S, S), one tile per frame
        g_pixel_values = self.sam_inputs([loaded[f] for f in sam_indices])  # (T, 3, G, G)

        prefix = vision.prefix
        turns = self.seg_turns([e["exp"] for e in exps], prefix=prefix, templates=templates, answers=answers,
                               rng=turn_rng)
        source = f"{self.expression_file}: video {vid}"
        image_tokens = vision.num_tokens
        enc = self.encode(turns, objects_per_turn=[1] * len(turns), image_tokens=image_tokens, source=source)
        exps = exps[: enc.num_turns]
        masks = None
        if self.mask_dict is not None:
            masks = np.stack([self._gt(vid, e, sam_indices, height, width) for e in exps])  # (n_obj, T, H, W)

        meta = {
            "index": index,
            "sample_id": vid,
            "video_id": vid,
            "image_paths": [self.frame_path(vid, frames[f]) for f in frame_indices],
            "frame_indices": frame_indices,  # frames the LLM sees
            "sam_frame_indices": sam_indices,  # frames of g_pixel_values and masks
            "orig_size": (height, width),
            "exp_ids": [e["exp_id"] for e in exps],
            "expressions": [e["exp"] for e in exps],
            "obj_ids": [e["obj_ids"] for e in exps],
            "anno_ids": [e["anno_ids"] for e in exps],
            "type_ids": [e["type_id"] for e in exps],
            "questions": self.questions(turns[: enc.num_turns], prefix),
        }
        if self.mode == "eval":
            meta["all_frame_paths"] = [self.frame_path(vid, f) for f in frames]
            meta["frame_names"] = list(frames)
            meta["prompts"] = self.eval_prompts(turns, prefix=prefix, image_tokens=image_tokens, source=source)
            meta["prompt_objects"] = [[k] for k in range(len(exps))]
        sample = self.make_sample(enc, vision=vision, g_pixel_values=g_pixel_values, masks=masks, meta=meta)
        if video is not None:
            sample["sam_frames"] = SamFrames(video, self.sam_image_size, stats=self.sam_pixel_stats)
            sample["gt_frames"] = None if self.mask_dict is None else FrameGT(self, vid, exps, height, width)
        return sample

    # ---- evaluation helpers -------------------------------------------------------------------
    def load_gt_masks(self, index: int, frame_indices: list[int] | None = None) -> np.ndarray | None:
        """Full-video GT of item ``index``: uint8 (n_exp, n_frames, H, W), or None without masks."""
        if self.mask_dict is None:
            return None
        item = self.items[index]
        frame_indices = list(range(len(item["frames"]))) if frame_indices is None else frame_indices
        height, width = self._frame_size(item)
        return np.stack([self._gt(item["vid"], e, frame_indices, height, width) for e in item["exps"]])

    def load_foreground_masks(self, index: int) -> np.ndarray:
        """ReVOS foreground (all objects) of item ``index``: uint8 (n_frames, H, W)."""
        frames = self.foreground_frames(index)
        return np.stack([frames[t] for t in range(len(frames))])

    def foreground_frames(self, index: int) -> "FrameForeground":
        """ReVOS foreground of item ``index``, decoded one frame at a time: ``[t]`` -> uint8 (H, W).
        The record is checked (shape, one mask per frame) now."""
        if not self.foreground_file:
            raise ValueError(f"{self.name}: no foreground_file configured")
        item = self.items[index]
        entry = self._foreground_dict().get(item["vid"])
        if entry is None:
            raise DataError(f"{self.foreground_file}: video {item['vid']} missing", reason="missing_anno")
        where = f"{self.foreground_file}: video {item['vid']}"
        rles = field(entry, "masks_rle", list, where=where) if isinstance(entry, dict) else expect(entry, list,
                                                                                                  where=where)
        if len(rles) != len(item["frames"]):
            raise DataError(f"{where}: {len(rles)} foreground masks for {len(item['frames'])} frames",
                            reason="mask_frames")
        return FrameForeground(rles, *self._frame_size(item), source=where)

    def _foreground_dict(self) -> dict:
        if self._foreground is None:
            self._foreground = load_mask_dict(self.foreground_file)
        return self._foreground

    def item_fingerprint(self, index: int) -> str:
        """What item ``index`` is computed from: its video record, the masks of its anno_ids (and
        ReVOS foreground), and each frame file's size and modification time (evaluation resume)."""
        item = self.items[index]
        masks = None if self.mask_dict is None else \
            {str(a): self.mask_dict[str(a)] for e in item["exps"] for a in e["anno_ids"]}
        foreground = self._foreground_dict().get(item["vid"]) if self.foreground_file else None
        return digest({"video": item, "masks": masks, "foreground": foreground,
                       "files": [file_signature(self.frame_path(item["vid"], f)) for f in item["frames"]]})

    def frame_source(self, vid: str, frames: list[str]) -> VideoFrames:
        """Every frame of a video, read when asked (``stream_frames``); sizes checked now."""
        return ImageFrames([self.frame_path(vid, f) for f in frames], names=frames, context=f" (video {vid})")

    def _load_frame(self, vid: str, frame: str):
        return load_image(self.frame_path(vid, frame))

    def _load_frames(self, vid: str, frames: list[str]) -> list:
        """Frames of one video, in the order given (a reader of video files decodes them in one pass)."""
        return [self._load_frame(vid, f) for f in frames]

    def _frame_size(self, item: dict) -> tuple[int, int]:
        width, height = self._load_frame(item["vid"], item["frames"][0]).size
        return height, width


class FrameGT:
    """GT of an evaluation item's expressions, decoded one frame at a time.

    ``gt[t]``: uint8 (n_exp, H, W), expression k's union over its anno_ids on frame t (the row
    ``[:, t]`` of :meth:`RefVOSDataset.load_gt_masks`).
    """

    def __init__(self, dataset: RefVOSDataset, vid: str, exps: list[dict], height: int, width: int) -> None:
        self.dataset, self.vid, self.exps = dataset, vid, exps
        self.height, self.width = height, width

    def __getitem__(self, t: int) -> np.ndarray:
        return np.stack([self.dataset._gt(self.vid, e, [t], self.height, self.width)[0] for e in self.exps])


class FrameForeground:
    """ReVOS foreground masks of a video, decoded one frame at a time: ``[t]`` -> uint8 (H, W)."""

    def __init__(self, rles: list, height: int, width: int, *, source: str) -> None:
        self.rles, self.height, self.width, self.source = rles, height, width, source

    def __len__(self) -> int:
        return len(self.rles)

    def __getitem__(self, t: int) -> np.ndarray:
        return decode_rle(self.rles[t], self.height, self.width, source=f"{self.source} frame {t}")
