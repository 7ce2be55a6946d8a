"""Synthetic data in the layouts the converters read (``datasets/convert``): Ref-YouTube-VOS and
Ref-DAVIS17 as downloaded, and the own-data format, drawn as ``synthetic.py`` draws its shapes.

Written under ``out``::

    ref_ytvos_raw/meta_expressions/{train,valid}/meta_expressions.json
                 {train,valid}/JPEGImages/<vid>/<frame>.jpg, train/Annotations/<vid>/<frame>.png
    davis17_raw/DAVIS/{JPEGImages,Annotations}/480p/<vid>/, DAVIS/ImageSets/2017/{train,val}.txt
               davis_text_annotations/Davis17_annot{1,2}{,_full_video}.txt
    own_raw/annotations.json, images/, frames/, videos/, masks/   (datasets/convert/own_data.py)

Annotation PNGs are palette PNGs whose index is the object id (1, 2, ...; 0 background), as
DAVIS and YouTube-VOS ship them; Ref-YouTube-VOS train frames are every 5th frame (``00000``,
``00005``, ...), as in the download. Deterministic for the same arguments.
"""
from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image

from .masks import encode_mask
from .synthetic import jpeg_bytes, moving_scene, object_sentences, write_video_file

_KIND_YTVOS, _KIND_DAVIS, _KIND_OWN = 10, 11, 12
DAVIS_VIDEOS = {"val": ["classic-car", "dogs-scale"], "train": ["bear"]}
# ReferFormer corrects these names of the text files (convert/ref_davis17.VIDEO_NAME_FIXES)
DAVIS_TEXT_NAMES = {"classic-car": "clasic-car", "dogs-scale": "dog-scale"}
PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128, 128, 0, 128] + [0] * (3 * 250)


def _write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def _json(path: str, obj) -> None:
    _write(path, json.dumps(obj, sort_keys=True, indent=1).encode())


def index_png(path: str, ids: np.ndarray) -> None:
    """A palette PNG: pixel value = object id."""
    image = Image.fromarray(ids.astype(np.uint8), "P")
    image.putpalette(PALETTE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path)


def id_map(masks: list[np.ndarray]) -> np.ndarray:
    """Object ids 1..n of disjoint visible masks (0: background)."""
    ids = np.zeros(masks[0].shape, np.uint8)
    for k, m in enumerate(masks):
        ids[m.astype(bool)] = k + 1
    return ids


def _scene(kind: int, seed: int, index: int, height: int, width: int, num_frames: int):
    rng = np.random.default_rng([seed, kind, index])
    shapes, images, masks = moving_scene(rng, height, width, num_frames)
    return rng, shapes, images, masks


# ------------------------------------------------------------------ Ref-YouTube-VOS
def write_ref_ytvos_raw(out: str, *, seed: int = 0, num_train: int = 3, num_valid: int = 2, num_frames: int = 4,
                        height: int = 96, width: int = 128) -> str:
    """Ref-YouTube-VOS layout; the first train video has 12 expressions (exp ids sort as strings:
    '10' before '2'). Returns the root."""
    root = os.path.join(out, "ref_ytvos_raw")
    for split, n, offset in (("train", num_train, 0), ("valid", num_valid, num_train)):
        videos = {}
        for v in range(n):
            rng, shapes, images, masks = _scene(_KIND_YTVOS, seed, offset + v, height, width, num_frames)
            vid = f"{rng.integers(16 ** 9):09x}"[:8] + f"{offset + v:02d}"
            frames = [f"{5 * t:05d}" for t in range(num_frames)]
            for name, image, visible in zip(frames, images, masks):
                _write(os.path.join(root, split, "JPEGImages", vid, name + ".jpg"), jpeg_bytes(image))
                if split == "train":
                    index_png(os.path.join(root, split, "Annotations", vid, name + ".png"), id_map(visible))
            sentences = object_sentences(shapes, width, rng, 0.0, spatial=False)
            pairs = [(k, s) for k, sents in enumerate(sentences) for s in sents]
            while split == "train" and v == 0 and len(pairs) < 12:
                k = len(pairs) % len(shapes)
                pairs.append((k, f"the {shapes[k].color} {shapes[k].kind} in the video"))
            videos[vid] = {"frames": frames, "expressions": {
                str(e): ({"exp": s, "obj_id": str(k + 1)} if split == "train" else {"exp": s})
                for e, (k, s) in enumerate(pairs)}}
        _json(os.path.join(root, "meta_expressions", split, "meta_expressions.json"), {"videos": videos})
    return root


# ------------------------------------------------------------------ Ref-DAVIS17
def write_davis17_raw(out: str, *, seed: int = 0, num_frames: int = 4, height: int = 96, width: int = 128) -> dict:
    """DAVIS-2017 folders and the four text files (annotator 2's in Latin-1, with a non-ASCII
    character; two video names misspelt as in the real files). Returns ``{"davis", "text"}``."""
    root = os.path.join(out, "davis17_raw")
    davis, text = os.path.join(root, "DAVIS"), os.path.join(root, "davis_text_annotations")
    lines: dict[str, list[str]] = {"annot1": [], "annot1_full_video": [], "annot2": [], "annot2_full_video": []}
    index = 0
    for split, vids in DAVIS_VIDEOS.items():
        _write(os.path.join(davis, "ImageSets", "2017", f"{split}.txt"), "".join(v + "\n" for v in vids).encode())
        for vid in vids:
            rng, shapes, images, masks = _scene(_KIND_DAVIS, seed, index, height, width, num_frames)
            index += 1
            for t, (image, visible) in enumerate(zip(images, masks)):
                _write(os.path.join(davis, "JPEGImages", "480p", vid, f"{t:05d}.jpg"), jpeg_bytes(image))
                index_png(os.path.join(davis, "Annotations", "480p", vid, f"{t:05d}.png"), id_map(visible))
            name = DAVIS_TEXT_NAMES.get(vid, vid)
            for k, s in enumerate(shapes):
                obj = k + 1
                lines["annot1"].append(f'{name} {obj} "the {s.color} {s.kind}"')
                lines["annot1_full_video"].append(f'{name} {obj} "a {s.color} {s.kind} moving around"')
                lines["annot2"].append(f'{name} {obj} "{s.color} {s.kind}, très visible"')
                lines["annot2_full_video"].append(f'{name} {obj} "the {s.kind} that is {s.color}"')
    for key, entries in lines.items():
        encoding = "latin-1" if key.startswith("annot2") else "utf-8"
        _write(os.path.join(text, f"Davis17_{key}.txt"), ("\n".join(entries) + "\n").encode(encoding))
    return {"davis": davis, "text": text}


# ------------------------------------------------------------------ own data
def write_own_raw(out: str, *, seed: int = 0, num_train_images: int = 6, num_val_images: int = 2,
                  num_frames: int = 4, height: int = 96, width: int = 128) -> str:
    """A folder in the own-data format with every kind of record: image items with instance PNGs
    (``value``), binary PNGs and polygons; frame-folder items (train and val) with a PNG folder per
    object; an mp4 item with per-frame RLE / null segmentations. Returns ``annotations.json``."""
    root = os.path.join(out, "own_raw")
    items = []
    for k in range(num_train_images + num_val_images):
        rng, shapes, images, masks = _scene(_KIND_OWN, seed, k, height, width, 1)
        item_id = f"photo_{k:03d}"
        _write(os.path.join(root, "images", item_id + ".jpg"), jpeg_bytes(images[0]))
        index_png(os.path.join(root, "masks", item_id + ".png"), id_map(masks[0]))
        sentences = object_sentences(shapes, width, rng, 0.0)
        objects = []
        for j, (s, sents) in enumerate(zip(shapes, sentences)):
            obj = {"id": f"{s.color}_{s.kind}", "sentences": sents}
            if j == 0 and k % 2:  # a binary PNG of its own
                path = f"masks/{item_id}_{obj['id']}.png"
                Image.fromarray(masks[0][j] * 255, "L").save(_ensure(os.path.join(root, path)))
                obj["mask"] = path
            elif j == 1:
                obj["segmentation"] = encode_mask(masks[0][j])  # COCO RLE
            else:
                obj.update(mask=f"masks/{item_id}.png", value=j + 1)
            objects.append(obj)
        items.append({"id": item_id, "image": f"images/{item_id}.jpg", "objects": objects,
                      **({"split": "val"} if k >= num_train_images else {})})
    for v, split in enumerate(("train", "train", "val")):
        rng, shapes, images, masks = _scene(_KIND_OWN, seed, 100 + v, height, width, num_frames)
        item_id = f"walk_{v:02d}"
        for t, (image, visible) in enumerate(zip(images, masks)):
            _write(os.path.join(root, "frames", item_id, f"frame_{t:03d}.jpg"), jpeg_bytes(image))
            index_png(os.path.join(root, "masks", item_id, f"frame_{t:03d}.png"), id_map(visible))
        sentences = object_sentences(shapes, width, rng, 0.0, spatial=False)
        items.append({"id": item_id, "frames": f"frames/{item_id}", "split": split, "objects": [
            {"id": k + 1, "mask": f"masks/{item_id}", "value": k + 1, "sentences": sents}
            for k, sents in enumerate(sentences)]})
    rng, shapes, images, masks = _scene(_KIND_OWN, seed, 200, height, width, num_frames)
    write_video_file(os.path.join(root, "videos", "clip_00.mp4"), images)
    sentences = object_sentences(shapes, width, rng, 0.0, spatial=False)
    items.append({"id": "clip_00", "video": "videos/clip_00.mp4", "objects": [
        {"id": f"obj{k}", "sentences": sents[:1],
         "segmentation": [encode_mask(m[k]) if m[k].any() else None for m in masks]}
        for k, sents in enumerate(sentences)]})
    path = os.path.join(root, "annotations.json")
    _json(path, {"items": items})
    return path


def _ensure(path: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


def make_synthetic_raw(out: str, *, seed: int = 0, height: int = 96, width: int = 128, num_frames: int = 4) -> dict:
    """Every raw layout under ``out``; returns the paths the converters take."""
    return {"ref_ytvos": write_ref_ytvos_raw(out, seed=seed, num_frames=num_frames, height=height, width=width),
            **{f"davis17_{k}": v for k, v in write_davis17_raw(out, seed=seed, num_frames=num_frames, height=height,
                                                                width=width).items()},
            "own_data": write_own_raw(out, seed=seed, num_frames=num_frames, height=height, width=width)}
