"""Ref-DAVIS17 (DAVIS-2017 + Khoreva et al.'s referring expressions) to the MeViS layout that the
``ref_davis17`` benchmark reads (``configs/_base_/datasets/benchmarks.py``: ``davis17/valid``).

Input: the DAVIS-2017 trainval folder ``davis`` (``JPEGImages/480p/<vid>/<frame>.jpg``,
``Annotations/480p/<vid>/<frame>.png`` palette PNGs, ``ImageSets/2017/{train,val}.txt``) and the
text annotations folder ``text`` with ``Davis17_annot1.txt``, ``Davis17_annot1_full_video.txt``,
``Davis17_annot2.txt``, ``Davis17_annot2_full_video.txt``: one line per object,
``<video> <obj_id> "<expression>"``.

Expressions, as ReferFormer's ``tools/data/convert_davis_to_ytvos.py`` builds them (the files
Sa2VA evaluates): per video, each file's lines sorted by obj_id; the k-th object gets exp ids
``4k .. 4k+3`` = annotator 1 first-frame, annotator 1 full-video, annotator 2 first-frame,
annotator 2 full-video (:data:`TEXT_FILES` order). Three video names of the text files are
corrected as ReferFormer does (:data:`VIDEO_NAME_FIXES`). Unlike ReferFormer, the four files must
name the same objects in a video (ReferFormer pairs them by position, silently).

Evaluation protocol of the published numbers (Sa2VA's ``tools/eval/eval_davis.py``, which
``tools/test.py --dataset ref_davis17`` follows): every one of the four expressions of every
object of the 30 val videos is scored on its own (J and F averaged over all the video's frames),
J and F are the means over all expressions, J&F = (J + F) / 2: the two annotators and the
first-frame / full-video sentences are weighted alike, never chosen between. (ReferFormer instead
runs the DAVIS-2017 toolkit once per expression set, ``anno_0`` .. ``anno_3``.)
"""
from __future__ import annotations

import os
from collections import defaultdict

from tqdm import tqdm

from ..errors import DataError
from ..io import safe_name
from .common import Expression, Problems, Video, image_size, write_mevis_split
from .ref_ytvos import read_objects

TEXT_FILES = ("Davis17_annot1.txt", "Davis17_annot1_full_video.txt", "Davis17_annot2.txt",
              "Davis17_annot2_full_video.txt")
VIDEO_NAME_FIXES = {"clasic-car": "classic-car", "dog-scale": "dogs-scale", "motor-bike": "motorbike"}
SPLITS = {"train": "train", "valid": "val"}  # output folder -> ImageSets/2017 list


def convert_ref_davis17(davis: str, text: str, out: str, *, splits: tuple[str, ...] = ("valid",),
                        annotations: str = "Annotations/480p", mask_file: str = "mask_dict.json",
                        copy_frames: bool = False, on_error: str = "raise", progress: bool = True) -> dict:
    """Convert the ``splits`` (``'valid'``, ``'train'``) into ``out/<split>``; returns per split its
    counts and the records dropped (``on_error='skip'``)."""
    problems = Problems(on_error)
    lines = read_text_files(text, problems)
    known = set(os.listdir(os.path.join(davis, "JPEGImages", "480p")))
    for (vid, _), entries in lines.items():
        if vid not in known:
            for path, line_no, _, _ in entries.values():
                problems.errors.append(DataError(f"{path}:{line_no}: video {vid!r} is not in "
                                                 f"{os.path.join(davis, 'JPEGImages', '480p')}", reason="unknown_video"))
    report = {}
    for split in splits:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {tuple(SPLITS)}, got {split!r}")
        vids = read_split_list(os.path.join(davis, "ImageSets", "2017", SPLITS[split] + ".txt"))
        videos = {}
        for vid in tqdm(vids, desc=f"Ref-DAVIS17 {split}", disable=not progress):
            with problems.check():
                videos[vid] = read_video(davis, vid, lines, annotations=annotations, problems=problems)
        videos = {v: video for v, video in videos.items() if video.expressions}
        report[split] = videos
    skipped = problems.finish(f"Ref-DAVIS17 ({davis}, {text})")
    return {split: {**write_mevis_split(os.path.join(out, split), videos,
                                        frames_from=os.path.join(davis, "JPEGImages", "480p"), mask_file=mask_file,
                                        copy_frames=copy_frames), "skipped": skipped}
            for split, videos in report.items()}


def read_split_list(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            return sorted({line.strip() for line in f if line.strip()})
    except FileNotFoundError as err:
        raise DataError(f"{path}: DAVIS split list not found", reason="missing_file") from err


def read_text_files(folder: str, problems: Problems) -> dict[tuple[str, int], dict[int, tuple]]:
    """``{(video, file index): {obj_id: (file, line number, obj_id, expression)}}`` of the four files."""
    out: dict[tuple[str, int], dict[int, tuple]] = defaultdict(dict)
    for k, name in enumerate(TEXT_FILES):
        path = os.path.join(folder, name)
        for line_no, line in enumerate(read_lines(path), 1):
            with problems.check():
                entry = parse_line(line, path, line_no)
                if entry is None:
                    continue
                vid, obj_id, exp = entry
                if obj_id in out[(vid, k)]:
                    raise DataError(f"{path}:{line_no}: a second expression for video {vid} object {obj_id} "
                                    f"(first at line {out[(vid, k)][obj_id][1]})", reason="duplicate_expression")
                out[(vid, k)][obj_id] = (path, line_no, obj_id, exp)
    return out


def read_lines(path: str) -> list[str]:
    """The file's lines: UTF-8, else Latin-1 (annotator 2's files are Latin-1, as ReferFormer reads them)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError as err:
        raise DataError(f"{path}: text annotation file not found", reason="missing_file") from err
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return text.splitlines()


def parse_line(line: str, path: str, line_no: int) -> tuple[str, int, str] | None:
    """``(video, obj_id, expression)`` of ``<video> <obj_id> "<expression>"``; None for a blank line."""
    parts = line.strip().split(maxsplit=2)
    if not parts:
        return None
    if len(parts) < 3 or not parts[1].isdigit() or int(parts[1]) == 0:
        raise DataError(f"{path}:{line_no}: expected '<video> <obj_id> \"<expression>\"', got {line.strip()!r}",
                        reason="bad_record")
    exp = parts[2].strip()
    if len(exp) >= 2 and exp[0] == exp[-1] == '"':
        exp = exp[1:-1]
    exp = " ".join(exp.split())
    if not exp:
        raise DataError(f"{path}:{line_no}: empty expression", reason="empty_expression")
    vid = VIDEO_NAME_FIXES.get(parts[0], parts[0])
    safe_name(vid, what="video", where=f"{path}:{line_no}")
    return vid, int(parts[1]), exp


def read_video(davis: str, vid: str, lines: dict, *, annotations: str, problems: Problems) -> Video:
    """Frames, the 4 expressions per object (ReferFormer's ids) and each object's masks."""
    frame_dir = os.path.join(davis, "JPEGImages", "480p", vid)
    if not os.path.isdir(frame_dir):
        raise DataError(f"{frame_dir}: video {vid} of the split list has no frame folder", reason="missing_image")
    frames = sorted(os.path.splitext(n)[0] for n in os.listdir(frame_dir) if n.lower().endswith(".jpg"))
    if not frames:
        raise DataError(f"{frame_dir}: no .jpg frames", reason="empty_video")
    per_file = [lines.get((vid, k), {}) for k in range(len(TEXT_FILES))]
    objects = sorted(per_file[0], key=str)  # ReferFormer sorts each file's entries by obj_id as a string
    for k, entries in enumerate(per_file):
        if sorted(entries, key=str) != objects:
            raise DataError(f"video {vid}: {TEXT_FILES[k]} names objects {sorted(entries)}, {TEXT_FILES[0]} names "
                            f"{sorted(per_file[0])}; the four files must describe the same objects",
                            reason="mismatched_annotators")
    if not objects:
        raise DataError(f"video {vid}: no expression in {', '.join(TEXT_FILES)}", reason="empty_expression")
    anno_dir = os.path.join(davis, annotations, vid)
    rles = read_objects(anno_dir, frames, set(objects), frame_size=image_size(os.path.join(frame_dir, frames[0] + ".jpg")))
    expressions = {}
    for k, obj_id in enumerate(objects):
        mark = len(problems.errors)
        for f, entries in enumerate(per_file):
            path, line_no, _, exp = entries[obj_id]
            with problems.check():
                if all(r is None for r in rles[obj_id]):
                    raise DataError(f"{path}:{line_no}: a sentence for object {obj_id} of video {vid}, which is in none "
                                    f"of the {len(frames)} annotation PNGs under {anno_dir}", reason="missing_object")
                expressions[str(4 * k + f)] = Expression(exp, obj_id)
        if len(problems.errors) != mark:  # an unknown object: none of its four sentences is kept
            for f in range(len(TEXT_FILES)):
                expressions.pop(str(4 * k + f), None)
    return Video(frames, expressions, {e.obj_id: rles[e.obj_id] for e in expressions.values()})
