"""Ref-YouTube-VOS, as downloaded, to the MeViS layout ``RefVOSDataset`` reads.

Input (the official download, unzipped under ``root``)::

    meta_expressions/{train,valid}/meta_expressions.json
        {"videos": {vid: {"frames": ["00000", "00005", ...],
                          "expressions": {"0": {"exp": "a man in a red shirt", "obj_id": "1"}, ...}}}}
        (valid: expressions without obj_id)
    {train,valid}/JPEGImages/<vid>/<frame>.jpg
    train/Annotations/<vid>/<frame>.png     palette PNGs: pixel value = obj_id, 0 = background

Output under ``out``: ``train/`` and ``valid/`` with ``meta_expressions.json`` (obj_id and anno_id
as lists of ints), ``JPEGImages`` (a link to the source frames) and, for train,
``mask_dict.json`` = one RLE (or null where the object is absent) per frame per expression; anno
ids are Sa2VA's running counter (:func:`.common.sa2va_anno_ids`). ``valid`` has no GT: its
results go to the evaluation server as ``submission.zip`` (``tools/test.py --dataset ref_ytvos``).
"""
from __future__ import annotations

import os

import numpy as np
from tqdm import tqdm

from ..errors import DataError
from ..io import expect, field, read_json, safe_name
from .common import Expression, Problems, Video, frame_rles, image_size, read_index_png, write_mevis_split

SPLITS = ("train", "valid")


def convert_ref_ytvos(root: str, out: str, *, splits: tuple[str, ...] = SPLITS, mask_file: str = "mask_dict.json",
                      copy_frames: bool = False, on_error: str = "raise", progress: bool = True) -> dict:
    """Convert the ``splits`` of a Ref-YouTube-VOS download; returns per split its counts and the
    records dropped (``on_error='skip'``). With ``'raise'`` every bad record is named at once and
    nothing is written."""
    report = {}
    for split in splits:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        problems = Problems(on_error)
        videos = read_split(root, split, problems, progress=progress)
        skipped = problems.finish(f"Ref-YouTube-VOS {split} ({root})")
        counts = write_mevis_split(os.path.join(out, split), videos, frames_from=os.path.join(root, split, "JPEGImages"),
                                   mask_file=mask_file, copy_frames=copy_frames)
        report[split] = {**counts, "skipped": skipped}
    return report


def read_split(root: str, split: str, problems: Problems, *, progress: bool = True) -> dict[str, Video]:
    """Every good video of a split, its masks read from the annotation PNGs (train)."""
    meta_path = os.path.join(root, "meta_expressions", split, "meta_expressions.json")
    meta = field(read_json(meta_path, expect=dict), "videos", dict, where=meta_path)
    videos = {}
    for vid in tqdm(sorted(meta), desc=f"Ref-YouTube-VOS {split}", disable=not progress):
        video = None
        with problems.check():
            video = read_video(root, split, vid, meta[vid], where=f"{meta_path}: video {vid}", problems=problems)
        if video is not None and video.expressions:
            videos[vid] = video
    return videos


def read_video(root: str, split: str, vid: str, record: dict, *, where: str, problems: Problems) -> Video:
    """One video: its frames (sorted, checked on disk), its expressions and, in train, each named
    object's mask on every frame. A bad expression is recorded in ``problems`` and left out."""
    safe_name(vid, what="video id", where=where)
    frames = sorted(expect(f, str, where=f"{where}: frame") for f in field(record, "frames", list, where=where))
    if not frames:
        raise DataError(f"{where}: no frames", reason="empty_video")
    frame_dir = os.path.join(root, split, "JPEGImages", vid)
    for frame in frames:
        safe_name(frame, what="frame", where=where)
        if not os.path.isfile(os.path.join(frame_dir, frame + ".jpg")):
            raise DataError(f"{where}: frame {frame} has no image {os.path.join(frame_dir, frame + '.jpg')}",
                            reason="missing_image")
    records = field(record, "expressions", dict, where=where)
    if not records:
        raise DataError(f"{where}: no expressions", reason="empty_expression")
    expressions = {}
    for exp_id, exp in records.items():
        with problems.check():
            expressions[exp_id] = read_expression(exp_id, exp, where=where, with_object=split == "train")
    if split != "train":
        return Video(frames, expressions)
    anno_dir = os.path.join(root, split, "Annotations", vid)
    object_rles = read_objects(anno_dir, frames, {e.obj_id for e in expressions.values()},
                               frame_size=image_size(os.path.join(frame_dir, frames[0] + ".jpg")))
    for exp_id in sorted(expressions):
        with problems.check():
            check_object_seen(expressions[exp_id].obj_id, object_rles, anno_dir, where=f"{where} exp {exp_id}")
    expressions = {k: e for k, e in expressions.items() if any(r is not None for r in object_rles[e.obj_id])}
    return Video(frames, expressions, {e.obj_id: object_rles[e.obj_id] for e in expressions.values()})


def read_expression(exp_id: str, exp: dict, *, where: str, with_object: bool) -> Expression:
    safe_name(exp_id, what="exp id", where=where)
    where = f"{where} exp {exp_id}"
    text = " ".join(field(exp, "exp", str, where=where).split())
    if not text:
        raise DataError(f"{where}: empty expression", reason="empty_expression")
    if not with_object:
        return Expression(text, None)
    obj_id = field(exp, "obj_id", (str, int), where=where)
    if not str(obj_id).isdigit() or int(obj_id) == 0:
        raise DataError(f"{where}: obj_id {obj_id!r} is not a positive palette index", reason="bad_record")
    return Expression(text, int(obj_id))


def read_objects(anno_dir: str, frames: list[str], obj_ids: set[int], *,
                 frame_size: tuple[int, int]) -> dict[int, list[dict | None]]:
    """Per object id, one RLE (None: absent) per frame, from ``<anno_dir>/<frame>.png``; every frame
    needs its PNG, of the frames' size."""
    masks: dict[int, list[np.ndarray | None]] = {o: [] for o in obj_ids}
    for frame in frames:
        path = os.path.join(anno_dir, frame + ".png")
        if not os.path.isfile(path):
            raise DataError(f"{path}: frame {frame} has no annotation PNG", reason="missing_mask")
        ids = read_index_png(path)
        if ids.shape != frame_size:
            raise DataError(f"{path}: annotation is {ids.shape[0]}x{ids.shape[1]}, the frames are "
                            f"{frame_size[0]}x{frame_size[1]}", reason="size_mismatch")
        for obj_id in obj_ids:
            masks[obj_id].append((ids == obj_id).astype(np.uint8))
    return {o: frame_rles(m) for o, m in masks.items()}


def check_object_seen(obj_id: int, object_rles: dict, anno_dir: str, *, where: str) -> None:
    """An expression's object must be in at least one frame: a palette id in no PNG is a typo or
    a different annotation release, never an object that is always absent."""
    if all(r is None for r in object_rles[obj_id]):
        raise DataError(f"{where}: obj_id {obj_id} (palette index) is in none of the "
                        f"{len(object_rles[obj_id])} annotation PNGs under {anno_dir}", reason="missing_object")
