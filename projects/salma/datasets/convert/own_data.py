"""Your own referring-segmentation data to the RefCOCO layout (images) and the MeViS layout (videos).

The input is one JSON file, ``annotations.json``, written by hand or by a script from a labelling
tool's export; paths in it are relative to its folder (or absolute)::

    {"items": [
      {"id": "kitchen_01", "image": "images/kitchen_01.jpg", "split": "train",
       "objects": [
         {"id": "cup", "mask": "masks/kitchen_01.png", "value": 2,
          "sentences": ["the red cup", "the cup left of the plate"]},
         {"id": "plate", "segmentation": [[10, 10, 60, 10, 60, 40, 10, 40]],
          "sentences": ["the white plate"]}]},
      {"id": "walk_03", "frames": "frames/walk_03", "split": "val",
       "objects": [
         {"id": "dog", "mask": "masks/walk_03", "value": 1, "sentences": ["the running dog"]}]},
      {"id": "clip_07", "video": "videos/clip_07.mp4",
       "objects": [
         {"id": "car", "segmentation": [{"size": [240, 320], "counts": "..."}, null, ...],
          "sentences": ["the blue car"]}]}
    ]}

An item (``id``: a plain name, unique) is one of:

- ``image``: an image file;
- ``frames``: a folder of frames (.jpg / .jpeg / .png, in name order);
- ``video``: a video file (decoded with OpenCV; its frames are written as ``00000.jpg`` ...).

``split`` (default ``"train"``) names the output split. Each object (``id``: a plain name, unique in
its item) has ``sentences`` (non-empty strings that refer to it alone) and its mask as one of:

- ``mask``: image items: a PNG; frame / video items: a folder with one PNG per frame, named as the
  frame (``<frame name>.png``; video files: ``00000.png``, ``00001.png``, ...). Without ``value``
  every non-zero pixel is the object; with ``value`` the pixels equal to it (an instance PNG that
  several objects share, as labelling tools export them);
- ``segmentation``: COCO polygons ``[[x0, y0, x1, y1, ...], ...]`` or an RLE ``{"size", "counts"}``
  (images); for frames / videos, a list with one of those, or ``null`` (absent), per frame.

Every frame needs a mask for every object (an object that leaves the view has an empty PNG or a
``null``), and every object must be visible in at least one frame. A bad record (missing file,
empty sentence, an id that is a path, a mask of the wrong size, ...) is named with its item and
object; every one is reported at once and nothing is written, or, with ``on_error='skip'``, its
item is left out and listed.

Output under ``out``: ``res/`` (RefCOCO layout: ``instances.json``, ``refs(unc).p``, ``images/``;
``RefCOCODataset(data_root=out/res, image_folder=out/res/images, split=...)``) and ``rvos/<split>/``
(MeViS layout: ``meta_expressions.json``, ``mask_dict.json``, ``JPEGImages/<id>/``;
``RefVOSDataset(data_root=out/rvos/<split>, ...)``). Ids: image items get ``image_id`` 1, 2, ... in
file order, objects ``ann_id`` and refs ``ref_id`` 1, 2, ..., sentences ``sent_id`` 1, 2, ...;
videos get exp ids ``0, 1, ...`` over their objects' sentences in order and anno ids by Sa2VA's
counter (:func:`.common.sa2va_anno_ids`). ``instances.json`` keeps each item's and object's own id
(``source_id``).
"""
from __future__ import annotations

import os
import pickle
import shutil
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from ..errors import DataError
from ..frames import FRAME_EXTENSIONS, open_video
from ..io import expect, field, read_json, safe_name
from ..masks import decode_segmentation, encode_mask
from .common import Expression, Problems, Video, frame_rles, image_size, read_index_png, write_json, write_mevis_split

ITEM_KINDS = ("image", "frames", "video")
ITEM_KEYS = {"id", "split", "objects", *ITEM_KINDS}
OBJECT_KEYS = {"id", "sentences", "mask", "value", "segmentation"}


@dataclass
class Item:
    """A checked item: its source frames (one path each; a video file's frames are decoded when
    written), names, and per object its sentences and per-frame masks."""

    id: str
    kind: str
    split: str
    source: str  # image / frame folder / video file
    frame_paths: list[str | int]  # a file per frame, or a video file's frame numbers
    frame_names: list[str]
    size: tuple[int, int]
    objects: list[tuple[str, list[str], list[np.ndarray]]]  # (object id, sentences, (H, W) uint8 per frame)


def convert_own_data(annotations: str, out: str, *, on_error: str = "raise", progress: bool = True) -> dict:
    """Check ``annotations`` (see the module doc), then write the RefCOCO / MeViS layouts under
    ``out``; returns the counts per layout and split and the items left out (``'skip'``)."""
    problems = Problems(on_error)
    items = read_items(annotations, problems, progress=progress)
    skipped = problems.finish(f"own data ({annotations})")
    report = {"skipped": skipped}
    images = [i for i in items if i.kind == "image"]
    if images:
        report["res"] = write_res(os.path.join(out, "res"), images)
    for split in sorted({i.split for i in items if i.kind != "image"}):
        videos = [i for i in items if i.kind != "image" and i.split == split]
        report[f"rvos/{split}"] = write_rvos(os.path.join(out, "rvos", split), videos, progress=progress)
    return report


# ------------------------------------------------------------------ reading and checking
def read_items(annotations: str, problems: Problems, *, progress: bool = True) -> list[Item]:
    """Every good item of the file; each bad record is recorded in ``problems``."""
    root = os.path.dirname(os.path.abspath(annotations))
    records = field(read_json(annotations, expect=dict, what="with 'items'"), "items", list, where=annotations)
    items, seen = [], {}
    for k, record in enumerate(tqdm(records, desc="checking items", disable=not progress)):
        where = f"{annotations}: items[{k}]"
        mark = len(problems.errors)
        item = None
        with problems.check():
            item_id = safe_name(str(field(record, "id", (str, int), where=where)), what="item id", where=where)
            where = f"{annotations}: item {item_id}"
            if item_id in seen:
                raise DataError(f"{where}: id already used by items[{seen[item_id]}]", reason="duplicate_id")
            seen[item_id] = k
            item = read_item(record, item_id, root, where=where, problems=problems)
        if item is not None and len(problems.errors) == mark:
            items.append(item)
    return items


def read_item(record: dict, item_id: str, root: str, *, where: str, problems: Problems) -> Item:
    unknown = sorted(set(record) - ITEM_KEYS)
    if unknown:
        raise DataError(f"{where}: unknown keys {unknown} (an item has {sorted(ITEM_KEYS)})", reason="bad_record")
    kinds = [k for k in ITEM_KINDS if k in record]
    if len(kinds) != 1:
        raise DataError(f"{where}: give exactly one of 'image', 'frames', 'video' (got {kinds or 'none'})",
                        reason="bad_record")
    kind = kinds[0]
    split = safe_name(field(record, "split", str, where=where, default="train"), what="split", where=where)
    source = resolve(root, field(record, kind, str, where=where))
    frame_paths, frame_names = item_frames(kind, source, where=where)
    first = frame_paths[0]
    size = image_size(first) if isinstance(first, str) else video_size(source)
    records = field(record, "objects", list, where=where)
    if not records:
        raise DataError(f"{where}: no objects", reason="empty_expression")
    objects, seen = [], set()
    for k, obj in enumerate(records):
        with problems.check():
            obj_id = safe_name(str(field(obj, "id", (str, int), where=f"{where}: objects[{k}]")), what="object id",
                               where=f"{where}: objects[{k}]")
            if obj_id in seen:
                raise DataError(f"{where}: object id {obj_id} used twice", reason="duplicate_id")
            seen.add(obj_id)
            objects.append(read_object(obj, root, kind, frame_names, size, where=f"{where} object {obj_id}"))
    return Item(item_id, kind, split, source, frame_paths, frame_names, size, objects)


def resolve(root: str, path: str) -> str:
    return path if os.path.isabs(path) else os.path.join(root, path)


def item_frames(kind: str, source: str, *, where: str) -> tuple[list, list[str]]:
    """(a path or frame number per frame, frame names) of an item."""
    if kind == "image":
        if not os.path.isfile(source):
            raise DataError(f"{where}: image {source} not found", reason="missing_image")
        return [source], [os.path.splitext(os.path.basename(source))[0]]
    if kind == "frames":
        if not os.path.isdir(source):
            raise DataError(f"{where}: frame folder {source} not found", reason="missing_image")
        files = sorted(n for n in os.listdir(source) if n.lower().endswith(FRAME_EXTENSIONS))
        if not files:
            raise DataError(f"{where}: no frames ({', '.join(FRAME_EXTENSIONS)}) in {source}", reason="empty_video")
        return [os.path.join(source, n) for n in files], files
    if not os.path.isfile(source):
        raise DataError(f"{where}: video {source} not found", reason="missing_image")
    frames = open_video(source)
    try:
        n = len(frames)
    finally:
        frames.close()
    if n == 0:
        raise DataError(f"{where}: video {source} has no frames", reason="empty_video")
    return list(range(n)), [f"{t:05d}.jpg" for t in range(n)]


def video_size(path: str) -> tuple[int, int]:
    frames = open_video(path)
    try:
        width, height = frames.image(0).size
    finally:
        frames.close()
    return height, width


def read_object(obj: dict, root: str, kind: str, frame_names: list[str], size: tuple[int, int], *,
                where: str) -> tuple[str, list[str], list[np.ndarray]]:
    """(object id, sentences, one uint8 (H, W) mask per frame) of a checked object."""
    unknown = sorted(set(obj) - OBJECT_KEYS)
    if unknown:
        raise DataError(f"{where}: unknown keys {unknown} (an object has {sorted(OBJECT_KEYS)})", reason="bad_record")
    sentences = []
    for k, sentence in enumerate(field(obj, "sentences", list, where=where)):
        text = " ".join(expect(sentence, str, where=f"{where}: sentences[{k}]").split())
        if not text:
            raise DataError(f"{where}: sentences[{k}] is empty", reason="empty_expression")
        sentences.append(text)
    if not sentences:
        raise DataError(f"{where}: no sentences", reason="empty_expression")
    if ("mask" in obj) == ("segmentation" in obj):
        raise DataError(f"{where}: give exactly one of 'mask' (PNG) and 'segmentation' (COCO)", reason="bad_record")
    value = field(obj, "value", int, where=where, default=None)
    if "mask" in obj:
        masks = png_masks(resolve(root, field(obj, "mask", str, where=where)), kind, frame_names, size, value,
                          where=where)
    else:
        masks = coco_masks(obj["segmentation"], kind, len(frame_names), size, where=where)
    if not any(m.any() for m in masks):
        raise DataError(f"{where}: the mask is empty in every frame", reason="empty_mask")
    return str(obj["id"]), sentences, masks


def png_masks(path: str, kind: str, frame_names: list[str], size: tuple[int, int], value: int | None, *,
              where: str) -> list[np.ndarray]:
    """One PNG (image) or ``<folder>/<frame stem>.png`` per frame, as {0, 1} masks."""
    if kind == "image":
        paths = [path]
    else:
        if not os.path.isdir(path):
            raise DataError(f"{where}: mask folder {path} not found (a frame / video item has one PNG per frame)",
                            reason="missing_mask")
        paths = [os.path.join(path, os.path.splitext(n)[0] + ".png") for n in frame_names]
    masks = []
    for p in paths:
        if not os.path.isfile(p):
            raise DataError(f"{where}: mask {p} not found", reason="missing_mask")
        ids = read_index_png(p)
        if ids.shape != size:
            raise DataError(f"{where}: mask {p} is {ids.shape[0]}x{ids.shape[1]}, the image is {size[0]}x{size[1]}",
                            reason="size_mismatch")
        masks.append(((ids != 0) if value is None else (ids == value)).astype(np.uint8))
    return masks


def coco_masks(segmentation, kind: str, n_frames: int, size: tuple[int, int], *, where: str) -> list[np.ndarray]:
    """COCO polygons / RLE (image), or one of them or null per frame (frames / video)."""
    per_frame = [segmentation] if kind == "image" else expect(segmentation, list, where=f"{where}: segmentation")
    if len(per_frame) != n_frames:
        raise DataError(f"{where}: segmentation has {len(per_frame)} entries for {n_frames} frames", reason="mask_frames")
    return [np.zeros(size, np.uint8) if s is None else
            decode_segmentation(s, *size, source=f"{where}: segmentation" + ("" if kind == "image" else f"[{t}]"))
            for t, s in enumerate(per_frame)]


# ------------------------------------------------------------------ writing
def write_res(out: str, items: list[Item]) -> dict:
    """RefCOCO layout; returns counts per split."""
    images, annotations, refs = [], [], []
    ann_id = ref_id = sent_id = 0
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    for image_id, item in enumerate(items, 1):
        file_name = item.id + os.path.splitext(item.source)[1].lower()
        shutil.copyfile(item.source, os.path.join(out, "images", file_name))
        height, width = item.size
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width, "source_id": item.id})
        for obj_id, sentences, (mask,) in item.objects:
            ann_id += 1
            ref_id += 1
            annotations.append({"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                                "area": int(mask.sum()), "bbox": bbox(mask), "segmentation": encode_mask(mask),
                                "source_id": f"{item.id}/{obj_id}"})
            sents = []
            for text in sentences:
                sent_id += 1
                sents.append({"sent": text, "raw": text, "tokens": text.split(), "sent_id": sent_id})
            refs.append({"ref_id": ref_id, "ann_id": ann_id, "image_id": image_id, "split": item.split,
                         "category_id": 1, "file_name": file_name, "sent_ids": [s["sent_id"] for s in sents],
                         "sentences": sents})
    write_json(os.path.join(out, "instances.json"), {
        "images": images, "annotations": annotations, "categories": [{"id": 1, "name": "object", "supercategory": ""}]})
    with open(os.path.join(out, "refs(unc).p"), "wb") as f:
        pickle.dump(refs, f, protocol=4)
    splits = sorted({r["split"] for r in refs})
    return {s: {"images": len({r["image_id"] for r in refs if r["split"] == s}),
                "objects": sum(r["split"] == s for r in refs),
                "sentences": sum(len(r["sentences"]) for r in refs if r["split"] == s)} for s in splits}


def write_rvos(out: str, items: list[Item], *, progress: bool = True) -> dict:
    """MeViS layout of one split: frames written under ``JPEGImages/<id>/``, one expression per sentence."""
    videos = {}
    for item in tqdm(items, desc=f"writing {out}", disable=not progress):
        write_frames(item, os.path.join(out, "JPEGImages", item.id))
        expressions, rles = {}, {}
        for k, (obj_id, sentences, masks) in enumerate(item.objects):
            rles[k] = frame_rles(masks)
            for text in sentences:
                expressions[str(len(expressions))] = Expression(text, k)
        videos[item.id] = Video(item.frame_names, expressions, rles)
    return write_mevis_split(out, videos, frames_from=None)


def write_frames(item: Item, folder: str) -> None:
    os.makedirs(folder, exist_ok=True)
    if item.kind == "frames":
        for path, name in zip(item.frame_paths, item.frame_names):
            shutil.copyfile(path, os.path.join(folder, name))
        return
    frames = open_video(item.source)
    try:
        for t, name in zip(item.frame_paths, item.frame_names):
            frames.image(t).save(os.path.join(folder, name), quality=95)
    finally:
        frames.close()


def bbox(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
