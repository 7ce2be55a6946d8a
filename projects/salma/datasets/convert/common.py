"""What every converter shares: bad records collected and named together, object-id PNGs read
strictly, Sa2VA's anno_id numbering, and the MeViS-layout writer.

A conversion reads thousands of records; stopping at the first bad one makes the user rerun it
once per fault. :class:`Problems` collects every :class:`~..errors.DataError` of a run and
raises them at the end as one :class:`ConversionError` (``on_error='skip'``: the bad records are
dropped, listed and counted instead).
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Mapping

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError, check_on_error
from ..masks import encode_mask

INDEX_PNG_MODES = ("P", "L", "1", "I;16", "I")  # pixel values are object ids (palette or grey levels)


class ConversionError(DataError):
    """Every bad record of a conversion, one per line (``problems``: the DataErrors)."""

    def __init__(self, what: str, problems: list[DataError]) -> None:
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{what}: {len(problems)} bad record(s); nothing was written:\n{lines}",
                         reason="bad_conversion")
        self.problems = problems


class Problems:
    """Bad records of one conversion: collected (``with problems.check():``), then raised together
    (``on_error='raise'``) or kept as the list of what was dropped (``'skip'``)."""

    def __init__(self, on_error: str = "raise") -> None:
        self.on_error = check_on_error(on_error)
        self.errors: list[DataError] = []

    @contextmanager
    def check(self) -> Iterator[None]:
        try:
            yield
        except DataError as err:
            self.errors.append(err)

    def finish(self, what: str) -> list[str]:
        """Raise every problem (``'raise'``), else return their messages (what was skipped)."""
        if self.errors and self.on_error == "raise":
            raise ConversionError(what, self.errors)
        return [str(e) for e in self.errors]

    def reasons(self) -> dict[str, int]:
        return dict(Counter(e.reason for e in self.errors))


def read_index_png(path: str) -> np.ndarray:
    """(H, W) integer object ids of a palette / greyscale PNG (DAVIS and YouTube-VOS annotations:
    palette index = object id, 0 = background). An RGB PNG is refused: its colours are not ids."""
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            ids = np.asarray(image)
    except FileNotFoundError as err:
        raise DataError(f"{path}: annotation PNG not found", reason="missing_mask") from err
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise DataError(f"{path}: not a readable PNG ({err})", reason="bad_mask") from err
    if mode not in INDEX_PNG_MODES:
        raise DataError(f"{path}: a {mode} PNG; object masks must be palette ('P') or greyscale ('L') PNGs whose "
                        f"pixel values are the object ids", reason="bad_mask")
    return ids.astype(np.int64)


def image_size(path: str) -> tuple[int, int]:
    """(H, W) of an image file from its header (nothing decoded)."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except FileNotFoundError as err:
        raise DataError(f"{path}: image not found", reason="missing_image") from err
    except (OSError, UnidentifiedImageError) as err:
        raise DataError(f"{path}: not a readable image ({err})", reason="corrupt_image") from err
    return height, width


def frame_rles(masks: list[np.ndarray | None]) -> list[dict | None]:
    """One compressed RLE per frame, ``None`` where the object is absent (MeViS' ``null``)."""
    return [encode_mask(m) if m is not None and m.any() else None for m in masks]


# ------------------------------------------------------------------ the MeViS layout
@dataclass
class Expression:
    text: str
    obj_id: int | None  # None: a split without GT (no object named)


@dataclass
class Video:
    """One video of a MeViS-layout split: frame names (sorted), expressions by exp id, and the
    per-frame RLEs of each object the expressions name (``None``: a split without GT)."""

    frames: list[str]
    expressions: dict[str, Expression]
    object_rles: dict[int, list[dict | None]] | None = None
    counts: dict = field(default_factory=dict)


def sa2va_anno_ids(videos: Mapping[str, Video]) -> dict[tuple[str, str], int]:
    """Sa2VA's numbering of its converted sets: a running counter from 0 over the sorted video ids
    and, within a video, its sorted exp ids, one id per expression. Exp ids sort as strings, as
    Sa2VA's ``tools/eval/eval_davis.py`` (``get_meta_exp``) sorts them: '10' comes before '2'."""
    ids, counter = {}, 0
    for vid in sorted(videos):
        for exp_id in sorted(videos[vid].expressions):
            ids[(vid, exp_id)] = counter
            counter += 1
    return ids


def mevis_records(videos: Mapping[str, Video]) -> tuple[dict, dict | None]:
    """(``meta_expressions.json`` content, ``mask_dict.json`` content or None without GT)."""
    with_gt = all(v.object_rles is not None for v in videos.values()) and bool(videos)
    ids = sa2va_anno_ids(videos)
    meta, mask_dict = {}, {} if with_gt else None
    for vid in sorted(videos):
        video, exps = videos[vid], {}
        for exp_id in sorted(video.expressions):
            exp = video.expressions[exp_id]
            if with_gt:
                anno = ids[(vid, exp_id)]
                mask_dict[str(anno)] = video.object_rles[exp.obj_id]
                exps[exp_id] = {"exp": exp.text, "obj_id": [exp.obj_id], "anno_id": [anno]}
            else:
                exps[exp_id] = {"exp": exp.text, "obj_id": [] if exp.obj_id is None else [exp.obj_id], "anno_id": []}
        meta[vid] = {"frames": list(video.frames), "expressions": exps}
    return {"videos": meta}, mask_dict


def write_mevis_split(out: str, videos: Mapping[str, Video], *, frames_from: str | None, mask_file: str = "mask_dict.json",
                      copy_frames: bool = False) -> dict[str, int]:
    """Write ``out/meta_expressions.json``, ``out/<mask_file>`` (json or pkl, when the split has GT)
    and ``out/JPEGImages`` (a link to ``frames_from``, or copies of the listed videos' folders).
    Returns the split's counts."""
    meta, mask_dict = mevis_records(videos)
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "meta_expressions.json"), meta)
    if mask_dict is not None:
        path = os.path.join(out, mask_file)
        if mask_file.endswith(".pkl"):
            with open(path, "wb") as f:
                pickle.dump(mask_dict, f, protocol=4)
        else:
            write_json(path, mask_dict)
    if frames_from is not None:
        place_frames(frames_from, os.path.join(out, "JPEGImages"), sorted(videos), copy=copy_frames)
    return {"videos": len(videos), "expressions": sum(len(v.expressions) for v in videos.values()),
            "objects": sum(len(v.object_rles or {}) for v in videos.values()),
            "frames": sum(len(v.frames) for v in videos.values()),
            "masks": 0 if mask_dict is None else len(mask_dict)}


def place_frames(source: str, target: str, vids: list[str], *, copy: bool) -> None:
    """``target`` shows ``source``'s video folders: one symlink to ``source`` (nothing duplicated),
    or, with ``copy``, copies of the listed videos' folders."""
    source = os.path.abspath(source)
    if copy:
        for vid in vids:
            shutil.copytree(os.path.join(source, vid), os.path.join(target, vid), dirs_exist_ok=True)
        return
    if os.path.islink(target):
        if os.path.realpath(target) == os.path.realpath(source):
            return
        raise DataError(f"{target}: already links to {os.readlink(target)}, not {source}; remove it", reason="bad_output")
    if os.path.exists(target):
        raise DataError(f"{target}: exists and is not a link to {source}; remove it or convert with copy_frames",
                        reason="bad_output")
    os.symlink(source, target, target_is_directory=True)


def write_json(path: str, data) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, separators=(",", ":"))
