"""Synthetic data in the real on-disk formats, so the same readers run without downloads.

Images and short videos of coloured circles, squares and triangles on a noisy background, with
referring expressions that name exactly one object ("the red circle"; a ``relational_fraction``
of relational ones: "the circle on the left", "the larger blue shape"). Every mask comes from the
drawing: a shape is rasterised once (pycocotools, from the very polygon written to the
annotation), painted through that mask, and later shapes occlude earlier ones (visible masks).

Written under ``out``::

    refcoco_synth/images/COCO_train2014_<id>.jpg, instances.json, refs(unc).p   (train/val splits)
    mevis_synth/{train,valid_u}/JPEGImages/<vid>/<frame>.jpg, meta_expressions.json, mask_dict.json
    llava_synth/llava.json      (images from refcoco_synth/images, plus text-only chats)
    gcg_synth/gcg.json          (GranD-f layout, images from refcoco_synth/images)
    osprey_synth/Osprey-724K/osprey_<kind>.json, images/{train2017,val2017}/   (region prompts)
    video_qa_synth/video_chat.json, videos/<id>.mp4                          (Chat-UniVi video QA)
    sav_synth/sav_train/sav_000/sav_<id>.mp4 + _manual.json, sav_expressions.json,
              ref_sav_valid/{meta_expressions_valid,mask_dict}.json           (SA-V, Ref-SAV)
    flickr_synth/flickr_mergedGT_GCG_train.json, psg_synth/OpenPsgGCG_train.json   (GLaMM GCG)

Distractor mode (``distractor=True``; ``tools/data/make_synthetic.py --distractor``): every
RefCOCO image and MeViS video holds a large, saturated distractor sharing the colour or the shape of
a small target right next to it (see :func:`make_distractor_shapes`), annotated but never referred to.

Deterministic: the same arguments give byte-identical files (each item has its own generator
``default_rng([seed, kind, index])``; json is written with sorted keys).
"""
from __future__ import annotations

import io
import json
import math
import os
import pickle
from dataclasses import dataclass

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from .masks import encode_mask
from .visual_prompts import MIN_REGION_CELLS, region_cells

COLORS = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (230, 210, 40),
    "purple": (140, 60, 180), "orange": (240, 140, 30), "cyan": (40, 200, 210),
}
SHAPES = ("circle", "square", "triangle")
CATEGORY_IDS = {s: i + 1 for i, s in enumerate(SHAPES)}
_LEFT_RIGHT_MARGIN = 0.1  # of the image width: "on the left" needs a clear gap
_SIZE_RATIO = 1.4  # "larger/smaller" needs sizes this far apart
_KIND_IMAGE, _KIND_VIDEO, _KIND_TEXT = 0, 1, 2
_NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five"}


@dataclass
class Shape:
    kind: str
    color: str
    cx: float
    cy: float
    r: float  # half size (circumradius for circles and triangles)
    vx: float = 0.0
    vy: float = 0.0
    distractor: bool = False  # a distractor scene's large, saturated, never-referred shape


def shape_polygon(s: Shape) -> list[float]:
    """Flat [x0, y0, x1, y1, ...] outline, rounded as written to json (so masks are reproducible)."""
    if s.kind == "circle":
        angles = np.linspace(0, 2 * math.pi, 32, endpoint=False)
    elif s.kind == "square":
        angles = np.array([0.25, 0.75, 1.25, 1.75]) * math.pi
    else:  # triangle, pointing up
        angles = np.array([-0.5, 1 / 6, 5 / 6]) * math.pi
    scale = s.r if s.kind != "square" else s.r * math.sqrt(2)
    xy = np.stack([s.cx + scale * np.cos(angles), s.cy + scale * np.sin(angles)], axis=1)
    return [round(float(v), 2) for v in xy.reshape(-1)]


def rasterize(polygon: list[float], height: int, width: int) -> np.ndarray:
    """uint8 (H, W) mask of a polygon, with pycocotools (what the readers decode)."""
    return np.minimum(mask_utils.decode(mask_utils.frPyObjects([polygon], height, width)).max(axis=2), 1)


def draw_scene(shapes: list[Shape], height: int, width: int, rng: np.random.Generator,
               background: np.ndarray) -> tuple[Image.Image, list[np.ndarray], list[list[float]]]:
    """Paint shapes in order on a noisy ``background`` colour; return image, visible masks, polygons."""
    pixels = np.clip(background + rng.normal(0, 6, size=(height, width, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    polygons = [shape_polygon(s) for s in shapes]
    full = [rasterize(p, height, width) for p in polygons]
    for s, m in zip(shapes, full):
        image.paste(saturated(COLORS[s.color]) if s.distractor else COLORS[s.color], mask=Image.fromarray(m * 255, "L"))
    visible, covered = [], np.zeros((height, width), dtype=np.uint8)
    for m in reversed(full):  # a later shape hides the earlier ones
        visible.append(m & (1 - covered))
        covered |= m
    return image, visible[::-1], polygons


def jpeg_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=95, subsampling=0)
    return buf.getvalue()


# ---- scenes and expressions ------------------------------------------------------------------------
def make_shapes(rng: np.random.Generator, height: int, width: int, *, min_objects: int = 3,
                max_objects: int = 5, allow_overlap: bool = False) -> list[Shape]:
    """Objects with unique (colour, shape); sometimes a repeated shape or colour for relations."""
    side = min(height, width)
    for _ in range(100):
        n = int(rng.integers(min_objects, max_objects + 1))
        colors = [str(c) for c in rng.choice(list(COLORS), size=n, replace=False)]
        kinds = [str(k) for k in rng.choice(SHAPES, size=n)]
        sizes = list(rng.uniform(0.09, 0.15, size=n) * side)
        if n >= 2 and rng.random() < 0.5:  # two shapes of one colour, clearly different sizes
            colors[1] = colors[0]
            kinds[1] = str(rng.choice([k for k in SHAPES if k != kinds[0]]))
            sizes[0], sizes[1] = 0.16 * side, 0.08 * side
        if n >= 3 and rng.random() < 0.5:  # two objects of one shape (left / right)
            kinds[2] = kinds[0] if colors[2] != colors[0] else kinds[2]
        shapes = []
        for kind, color, r in zip(kinds, colors, sizes):
            for _ in range(200):
                cx, cy = rng.uniform(r + 1, width - r - 1), rng.uniform(r + 1, height - r - 1)
                if allow_overlap or all(math.hypot(cx - o.cx, cy - o.cy) > r + o.r + 2 for o in shapes):
                    shapes.append(Shape(kind, color, float(cx), float(cy), float(r)))
                    break
            else:
                break
        if len(shapes) == n:
            return shapes
    raise RuntimeError("could not place the shapes; use a larger image")


# ---- distractor scenes (the attention-drift setting of the SALMA notes, section 2.1) ------------------
DISTRACTOR_AREA = (0.16, 0.22)  # of the image: the distractor
DISTRACTOR_TARGET_AREA = (0.02, 0.045)  # of the image: each small target (make_shapes' objects: 0.025-0.07)
_AREA_PER_R2 = {"circle": math.pi, "square": 4.0, "triangle": 3 * math.sqrt(3) / 4}  # area / r^2
DISTRACTOR_GAP = (1.0, 4.0)  # pixels between the distractor and the target it resembles
DISTRACTOR_SPEED = 0.3  # in videos the distractor drifts at this fraction of the targets' speed


def saturated(color: tuple[int, int, int], factor: float = 1.6) -> tuple[int, int, int]:
    """The same hue, further from grey: each channel pushed away from the colour's mean."""
    mean = sum(color) / 3
    return tuple(int(min(255, max(0, round(mean + factor * (c - mean))))) for c in color)


def _r_for_area(kind: str, area: float) -> float:
    """``r`` of a shape of ``kind`` with this area (pixels^2)."""
    return math.sqrt(area / _AREA_PER_R2[kind])


def _extent(s: Shape) -> float:
    """Circumradius (a square's ``r`` is its half side)."""
    return s.r * math.sqrt(2) if s.kind == "square" else s.r


def make_distractor_shapes(rng: np.random.Generator, height: int, width: int, *, min_targets: int = 2,
                           max_targets: int = 4) -> list[Shape]:
    """A distractor scene: index 0 is a large, saturated distractor (drawn first, never referred to)
    sharing the colour *or* the shape of the small target at index 1, which sits right next to it;
    indices 2.. are other small targets. Targets have distinct colours and the distractor differs
    from its look-alike in the other attribute, so every (colour, shape) is unique in the scene and
    "the <colour> <shape>" names one target, while a model that follows colour or shape alone, or
    saliency, segments the distractor."""
    for _ in range(100):
        n = int(rng.integers(min_targets, max_targets + 1))
        colors = [str(c) for c in rng.choice(list(COLORS), size=n, replace=False)]
        kinds = [str(k) for k in rng.choice(SHAPES, size=n)]
        if rng.random() < 0.5:  # same colour as its look-alike, another shape
            d_color, d_kind = colors[0], str(rng.choice([k for k in SHAPES if k != kinds[0]]))
        else:  # same shape, a colour no target has
            d_color, d_kind = str(rng.choice([c for c in COLORS if c not in colors])), kinds[0]
        d_r = _r_for_area(d_kind, rng.uniform(*DISTRACTOR_AREA) * height * width)
        extent = _extent(Shape(d_kind, d_color, 0.0, 0.0, d_r))
        distractor = Shape(d_kind, d_color, float(rng.uniform(extent + 1, width - extent - 1)),
                           float(rng.uniform(extent + 1, height - extent - 1)), float(d_r), distractor=True)
        shapes = [distractor]
        for k, (kind, color) in enumerate(zip(kinds, colors)):
            r = _r_for_area(kind, rng.uniform(*DISTRACTOR_TARGET_AREA) * height * width)
            t_extent = _extent(Shape(kind, color, 0.0, 0.0, r))
            for _ in range(200):
                if k == 0:  # the look-alike: just outside the distractor, in a random direction
                    angle, gap = rng.uniform(0, 2 * math.pi), rng.uniform(*DISTRACTOR_GAP)
                    dist = extent + t_extent + gap
                    cx, cy = distractor.cx + dist * math.cos(angle), distractor.cy + dist * math.sin(angle)
                else:
                    cx, cy = rng.uniform(t_extent + 1, width - t_extent - 1), rng.uniform(t_extent + 1, height - t_extent - 1)
                inside = t_extent + 1 <= cx <= width - t_extent - 1 and t_extent + 1 <= cy <= height - t_extent - 1
                if inside and all(math.hypot(cx - o.cx, cy - o.cy) > t_extent + _extent(o) + 0.9 for o in shapes):
                    shapes.append(Shape(kind, color, float(cx), float(cy), float(r)))
                    break
            else:
                break
        if len(shapes) == n + 1:
            return shapes
    raise RuntimeError("could not place a distractor scene; use a larger image")


def relational_expressions(shapes: list[Shape], width: int, *, spatial: bool = True) -> dict[int, list[str]]:
    """Relational expressions that pick exactly one object, per object index.

    ``spatial=False`` (videos, where objects move) keeps the size relations only.
    """
    out: dict[int, list[str]] = {}
    for kind in SHAPES if spatial else ():
        group = sorted((s.cx, i) for i, s in enumerate(shapes) if s.kind == kind)
        if len(group) >= 2:
            if group[1][0] - group[0][0] > _LEFT_RIGHT_MARGIN * width:
                out.setdefault(group[0][1], []).append(f"the {kind} on the left")
            if group[-1][0] - group[-2][0] > _LEFT_RIGHT_MARGIN * width:
                out.setdefault(group[-1][1], []).append(f"the {kind} on the right")
    for color in COLORS:
        group = sorted((s.r, i) for i, s in enumerate(shapes) if s.color == color)
        if len(group) == 2 and group[1][0] > _SIZE_RATIO * group[0][0]:
            out.setdefault(group[1][1], []).append(f"the larger {color} shape")
            out.setdefault(group[0][1], []).append(f"the smaller {color} shape")
    return out


def expression_kind(expression: str) -> str:
    """Which relation an expression of this generator's grammar needs: ``'spatial'`` ("the circle
    on the left"), ``'size'`` ("the larger blue shape") or ``'attribute'`` (colour and shape only)."""
    words = expression.split()
    if len(words) == 5 and words[2:4] == ["on", "the"]:  # the <shape> on the left|right
        return "spatial"
    if len(words) == 4 and words[1] in ("larger", "smaller") and words[3] == "shape":
        return "size"
    return "attribute"


def resolve_expression(expression: str, shapes: list[Shape], width: int) -> list[int]:
    """Indices of the objects an expression of this generator's grammar refers to."""
    words = expression.split()
    relation = expression_kind(expression)
    if relation == "spatial":
        group = [(s.cx, i) for i, s in enumerate(shapes) if s.kind == words[1]]
        group.sort(reverse=words[4] == "right")
        if len(group) >= 2 and abs(group[1][0] - group[0][0]) > _LEFT_RIGHT_MARGIN * width:
            return [group[0][1]]
        return [i for _, i in group] if len(group) == 1 else []
    if relation == "size":
        group = sorted((s.r, i) for i, s in enumerate(shapes) if s.color == words[2])
        if len(group) == 2 and group[1][0] > _SIZE_RATIO * group[0][0]:
            return [group[1][1] if words[1] == "larger" else group[0][1]]
        return []
    if len(words) == 5 and words[2:4] == ["that", "is"]:  # the <shape> that is <colour>
        color, kind = words[4], words[1]
    else:  # [the] <colour> <shape>
        color, kind = words[-2], words[-1]
    return [i for i, s in enumerate(shapes) if s.color == color and s.kind == kind]


def object_sentences(shapes: list[Shape], width: int, rng: np.random.Generator, relational_fraction: float,
                     *, spatial: bool = True) -> list[list[str]]:
    """Two sentences per object: a relational or colour+shape one, then a colour+shape variant."""
    relational = relational_expressions(shapes, width, spatial=spatial)
    out = []
    for i, s in enumerate(shapes):
        first = f"the {s.color} {s.kind}"
        if i in relational and rng.random() < relational_fraction:
            first = relational[i][int(rng.integers(len(relational[i])))]
        variant = f"the {s.kind} that is {s.color}" if rng.random() < 0.5 else f"{s.color} {s.kind}"
        out.append([first, variant])
    return out


# ---- writers ---------------------------------------------------------------------------------------
def _write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def _json_bytes(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def write_refcoco(out: str, *, seed: int, num_images: int, num_val_images: int, height: int, width: int,
                  relational_fraction: float, distractor: bool = False) -> list[dict]:
    """RefCOCO layout; returns per-image scene records (for the LLaVA and GCG writers).

    ``distractor``: :func:`make_distractor_shapes` scenes; the distractor is annotated (with
    ``"distractor": 1``, so analyses can find it) but no ref names it."""
    root = os.path.join(out, "refcoco_synth")
    images, annotations, refs, scenes = [], [], [], []
    ann_id = ref_id = sent_id = 0
    for k in range(num_images + num_val_images):
        rng = np.random.default_rng([seed, _KIND_IMAGE, k])
        image_id = k + 1
        shapes = make_distractor_shapes(rng, height, width) if distractor else make_shapes(rng, height, width)
        image, visible, polygons = draw_scene(shapes, height, width, rng, rng.integers(150, 256, size=3))
        file_name = f"COCO_train2014_{image_id:012d}.jpg"
        _write(os.path.join(root, "images", file_name), jpeg_bytes(image))
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        split = "train" if k < num_images else "val"
        sentences = object_sentences(shapes, width, rng, relational_fraction)
        ann_ids = []
        for s, mask, poly, sents in zip(shapes, visible, polygons, sentences):
            ann_id += 1
            ann_ids.append(ann_id)
            use_polygon = ann_id % 2 == 0 and bool((mask == rasterize(poly, height, width)).all())
            ys, xs = np.nonzero(mask)
            annotations.append({
                "id": ann_id, "image_id": image_id, "category_id": CATEGORY_IDS[s.kind], "iscrowd": 0,
                "area": int(mask.sum()),
                "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)],
                "segmentation": [poly] if use_polygon else encode_mask(mask),
                **({"distractor": 1} if s.distractor else {}),
            })
            if s.distractor:
                continue
            ref_id += 1
            sent_records = []
            for sent in sents:
                sent_id += 1
                sent_records.append({"sent": sent, "raw": sent, "sent_id": sent_id, "tokens": sent.split()})
            refs.append({"ref_id": ref_id, "ann_id": ann_id, "image_id": image_id, "split": split,
                         "category_id": CATEGORY_IDS[s.kind], "file_name": f"{file_name[:-4]}_{ann_id}.jpg",
                         "sent_ids": [r["sent_id"] for r in sent_records], "sentences": sent_records})
        scenes.append({"file_name": file_name, "shapes": shapes, "masks": visible, "ann_ids": ann_ids,
                       "split": split})
    categories = [{"id": i, "name": s, "supercategory": "shape"} for s, i in CATEGORY_IDS.items()]
    _write(os.path.join(root, "instances.json"),
           _json_bytes({"images": images, "annotations": annotations, "categories": categories}))
    _write(os.path.join(root, "refs(unc).p"), pickle.dumps(refs, protocol=4))
    return scenes


def write_mevis(out: str, split: str, *, seed: int, num_videos: int, num_frames: int, height: int, width: int,
                relational_fraction: float, index_offset: int = 0, distractor: bool = False) -> None:
    """MeViS layout for one split; objects move (and bounce), so they may occlude each other.
    ``distractor``: distractor scenes (no expression names the distractor)."""
    root = os.path.join(out, "mevis_synth", split)
    videos, mask_dict = {}, {}
    anno_id = 0
    for v in range(num_videos):
        rng = np.random.default_rng([seed, _KIND_VIDEO, index_offset + v])
        vid = f"video_{index_offset + v:04d}"
        shapes, images, per_frame_masks = moving_scene(rng, height, width, num_frames, distractor=distractor)
        frames = []
        for t, image in enumerate(images):
            name = f"{t:05d}"
            _write(os.path.join(root, "JPEGImages", vid, name + ".jpg"), jpeg_bytes(image))
            frames.append(name)
        # Expressions on constant attributes only (colour, shape, size): valid in every frame.
        sentences = object_sentences(shapes, width, rng, relational_fraction, spatial=False)
        expressions = {}
        for obj_id, sents in enumerate(sentences):
            if shapes[obj_id].distractor:
                continue
            for sent in sents[: 1 + int(rng.random() < 0.5)]:
                anno_id += 1
                mask_dict[str(anno_id)] = [
                    encode_mask(m[obj_id]) if m[obj_id].any() else None for m in per_frame_masks
                ]
                expressions[str(len(expressions))] = {"exp": sent, "obj_id": [obj_id], "anno_id": [anno_id]}
        videos[vid] = {"frames": frames, "expressions": expressions}
    _write(os.path.join(root, "meta_expressions.json"), _json_bytes({"videos": videos}))
    _write(os.path.join(root, "mask_dict.json"), _json_bytes(mask_dict))


def moving_scene(rng: np.random.Generator, height: int, width: int, num_frames: int, *, speed: float = 1.0,
                 distractor: bool = False) -> tuple[list[Shape], list[Image.Image], list[list[np.ndarray]]]:
    """2-4 shapes moving (and bouncing) over ``num_frames`` frames: (shapes, frames, visible masks
    per frame and object). ``speed`` scales the 3-10 % of the image side they move per frame.
    ``distractor``: a :func:`make_distractor_shapes` scene (the distractor drifts slowly)."""
    if distractor:
        shapes = make_distractor_shapes(rng, height, width, min_targets=2, max_targets=3)
    else:
        shapes = make_shapes(rng, height, width, min_objects=2, max_objects=4)
    for s in shapes:  # 3-10 % of the image side per frame, in each direction
        v = rng.uniform(0.03, 0.1, size=2) * rng.choice([-1, 1], size=2) * min(height, width) * speed
        v = v * DISTRACTOR_SPEED if s.distractor else v
        s.vx, s.vy = float(v[0]), float(v[1])
    background = rng.integers(150, 256, size=3)
    images, per_frame_masks = [], []
    for _ in range(num_frames):
        image, visible, _ = draw_scene(shapes, height, width, rng, background)
        images.append(image)
        per_frame_masks.append(visible)
        for s in shapes:  # move, bouncing off the borders
            s.cx, s.vx = _bounce(s.cx + s.vx, s.vx, s.r, width)
            s.cy, s.vy = _bounce(s.cy + s.vy, s.vy, s.r, height)
    return shapes, images, per_frame_masks


def _bounce(pos: float, vel: float, r: float, size: int) -> tuple[float, float]:
    if pos - r < 1 or pos + r > size - 1:
        vel = -vel
        pos = min(max(pos, r + 1), size - r - 1)
    return pos, vel


_TEXT_QA = (
    ("Which shape has three sides?", "A triangle has three sides."),
    ("How many corners does a square have?", "A square has four corners."),
    ("What colour do you get by mixing red and blue?", "Mixing red and blue gives purple."),
    ("Is a circle round?", "Yes, a circle is round."),
)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _describe(shapes: list[Shape]) -> str:
    names = [f"{_article(s.color)} {s.color} {s.kind}" for s in shapes]
    return (", ".join(names[:-1]) + " and " + names[-1]) if len(names) > 1 else names[0]


def write_llava(out: str, scenes: list[dict], *, num_items: int) -> None:
    """LLaVA json: two-turn chats about refcoco_synth images; every fourth record text-only."""
    records = []
    train = [s for s in scenes if s["split"] == "train"]
    for k in range(num_items):
        if k % 4 == 3:  # a text-only chat every fourth record
            q, a = _TEXT_QA[(k // 4) % len(_TEXT_QA)]
            records.append({"id": f"text_{k}", "conversations": [{"from": "human", "value": q},
                                                                 {"from": "gpt", "value": a}]})
            continue
        scene = train[k % len(train)]
        shapes = scene["shapes"]
        names = _describe(shapes)
        records.append({"id": f"image_{k}", "image": scene["file_name"], "conversations": [
            {"from": "human", "value": "<image>\nHow many shapes are there in this image?"},
            {"from": "gpt", "value": f"There are {len(shapes)} shapes."},
            {"from": "human", "value": "Name the shapes you see."},
            {"from": "gpt", "value": names[0].upper() + names[1:] + "."},
        ]})
    _write(os.path.join(out, "llava_synth", "llava.json"), _json_bytes(records))


def write_gcg(out: str, scenes: list[dict], *, num_items: int) -> None:
    """GranD-f layout: one phrase per shape kind ("a red circle", "two squares"), RLE masks."""
    records = []
    train = [s for s in scenes if s["split"] == "train"]
    for scene in train[:num_items]:
        parts, groundings = [], []
        for kind in SHAPES:
            idx = [i for i, s in enumerate(scene["shapes"]) if s.kind == kind]
            if not idx:
                continue
            s0 = scene["shapes"][idx[0]]
            phrase = f"{_article(s0.color)} {s0.color} {kind}" if len(idx) == 1 else f"{_NUMBER_WORDS[len(idx)]} {kind}s"
            parts.append(phrase)
            groundings.append((phrase, [encode_mask(scene["masks"][i]) for i in idx]))
        caption = "The picture shows "
        spans = {}
        for j, (phrase, _) in enumerate(groundings):
            if j:
                caption += " and " if j == len(groundings) - 1 else ", "
            spans[phrase] = [len(caption), len(caption) + len(phrase)]
            caption += phrase
        caption += "."
        records.append({"file_name": scene["file_name"], "caption": caption, "groundings": {
            phrase: {"token_positives": spans[phrase], "rle_masks": rles} for phrase, rles in groundings}})
    _write(os.path.join(out, "gcg_synth", "gcg.json"), _json_bytes(records))


# ---- issue 12: visual prompts, video files, SA-V, more GCG layouts ---------------------------------
_KIND_OSPREY, _KIND_VIDEO_FILE, _KIND_SAV = 3, 4, 5
OSPREY_FILES = {kind: f"osprey_{kind}.json" for kind in
                ("conversation", "detail_description", "short_form", "part_level", "lvis_positive_negative")}
SAV_ANNOTATION_STRIDE = 4  # SA-V: masklets every 4th frame of the 24 fps video (6 fps)
OSPREY_MIN_CELLS_GRID = 4  # Osprey regions cover >= 4 cells of a 4x4 token grid (the tiny model's)


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE ``{'size': [h, w], 'counts': [run lengths, column-major, zeros first]}``."""
    flat = np.asarray(mask, dtype=np.uint8).flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        counts = [0] + counts
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


def write_video_file(path: str, frames: list[Image.Image], fps: float = 24.0) -> None:
    """An mp4 (OpenCV's 'mp4v' codec) of RGB frames; bytes are deterministic for the same frames."""
    import cv2

    os.makedirs(os.path.dirname(path), exist_ok=True)
    width, height = frames[0].size
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"{path}: OpenCV cannot write mp4v video")
    for frame in frames:
        writer.write(cv2.cvtColor(np.asarray(frame), cv2.COLOR_RGB2BGR))
    writer.release()


def _region_cells_ok(masks: list[np.ndarray]) -> bool:
    cells = region_cells(np.stack(masks), grid=OSPREY_MIN_CELLS_GRID)
    return bool((cells.flatten(1).sum(1) >= MIN_REGION_CELLS).all())


def _osprey_scene(rng: np.random.Generator, height: int, width: int, *, with_background: bool,
                  ) -> tuple[Image.Image, list[Shape | None], list[np.ndarray]]:
    """A large shape and, ``with_background``, the background as a second region (``None``); every
    region covers >= 4 cells of a 4x4 token grid (the tiny model's), so none is refused."""
    side = min(height, width)
    for _ in range(200):
        r = float(rng.uniform(0.3, 0.36) * side)
        shape = Shape(str(rng.choice(SHAPES)), str(rng.choice(list(COLORS))), float(rng.uniform(r + 1, width - r - 1)),
                      float(rng.uniform(r + 1, height - r - 1)), r)
        image, (mask,), _ = draw_scene([shape], height, width, rng, rng.integers(150, 256, size=3))
        regions, masks = [shape], [mask]
        if with_background:
            regions.append(None)
            masks.append(1 - mask)
        if _region_cells_ok(masks):
            return image, regions, masks
    raise RuntimeError("could not draw an Osprey scene; use a larger image")


def _side(s: Shape, width: int) -> str:
    return "left" if s.cx < width / 2 else "right"


def _osprey_texts(kind: str, regions: list[Shape | None], width: int, rng: np.random.Generator) -> dict:
    """The text fields of one Osprey record of ``kind`` about ``regions`` (a shape, or None: the background)."""
    if kind == "detail_description":
        return {"description": [f"<region{i + 1}>: " + (
            "the plain background around the shape." if s is None else
            f"{_article(s.color)} {s.color} {s.kind} on the {_side(s, width)} of the picture.")
            for i, s in enumerate(regions)]}
    conv = []
    for i, s in enumerate(regions):
        r = f"<region{i + 1}>"
        if s is None:
            qa = [(f"What is in {r}?", "The background.")] if kind == "conversation" else \
                 [(f"Is {r} a shape?", "No.")] if kind == "lvis_positive_negative" else [(f"What is {r}?", "background")]
        elif kind == "conversation":
            qa = [(f"What is in {r}?", f"{_article(s.color).capitalize()} {s.color} {s.kind}."),
                  (f"Where is {r} in the picture?", f"It is on the {_side(s, width)}.")]
        elif kind == "short_form":
            qa = [(f"What shape is {r}?", s.kind)]
        elif kind == "part_level":
            qa = [(f"What colour is the shape in {r}?", s.color)]
        else:  # lvis_positive_negative
            color = s.color if rng.random() < 0.5 else str(rng.choice([c for c in COLORS if c != s.color]))
            qa = [(f"Is {r} {_article(color)} {color} {s.kind}?", "Yes." if color == s.color else "No.")]
        for q, a in qa:
            conv += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
    return {"conversations": conv}


def write_osprey(out: str, *, seed: int, num_items: int, height: int, width: int) -> None:
    """Osprey-724K layout: ``osprey_synth/Osprey-724K/osprey_<kind>.json`` (five kinds, one record per
    image each) and images split over ``images/train2017`` and ``images/val2017`` (a reader searches
    both, as COCO's folders). Regions: a large shape, and in every second record also the background;
    they alternate polygon, compressed and uncompressed RLE."""
    root = os.path.join(out, "osprey_synth")
    records: dict[str, list] = {kind: [] for kind in OSPREY_FILES}
    for k in range(num_items):
        rng = np.random.default_rng([seed, _KIND_OSPREY, k])
        image, shapes, visible = _osprey_scene(rng, height, width, with_background=k % 2 == 1)
        file_name = f"{k + 1:012d}.jpg"
        _write(os.path.join(root, "images", ("train2017", "val2017")[k % 2], file_name), jpeg_bytes(image))
        annotation = []
        for i, (shape, mask) in enumerate(zip(shapes, visible)):
            polygon = shape_polygon(shape) if shape is not None else None
            if (k + i) % 3 == 0 and polygon and bool((mask == rasterize(polygon, height, width)).all()):
                segmentation = [polygon]
            elif (k + i) % 3 == 1:
                segmentation = uncompressed_rle(mask)
            else:
                segmentation = encode_mask(mask)
            annotation.append({"segmentation": segmentation, "bbox": _bbox(mask), "area": int(mask.sum())})
        for kind in OSPREY_FILES:
            records[kind].append({"id": k, "file_name": file_name, "height": height, "width": width,
                                  "annotation": annotation, **_osprey_texts(kind, shapes, width, rng)})
    for kind, name in OSPREY_FILES.items():
        _write(os.path.join(root, "Osprey-724K", name), _json_bytes(records[kind]))


def _bbox(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def write_video_qa(out: str, *, seed: int, num_items: int, num_frames: int, height: int, width: int) -> None:
    """Chat-UniVi layout: ``video_qa_synth/videos/<id>.mp4`` (24 fps) and ``video_chat.json``; every
    third record names its video ``.mkv`` (the file is the ``.mp4``, as Chat-UniVi's downloads)."""
    root = os.path.join(out, "video_qa_synth")
    records = []
    for k in range(num_items):
        rng = np.random.default_rng([seed, _KIND_VIDEO_FILE, k])
        shapes, images, _ = moving_scene(rng, height, width, num_frames)
        name = f"activity_{k:04d}"
        write_video_file(os.path.join(root, "videos", name + ".mp4"), images)
        colors = sorted({s.color for s in shapes})
        records.append({"id": name, "video": name + (".mkv" if k % 3 == 2 else ".mp4"), "conversations": [
            {"from": "human", "value": "<video>\nHow many shapes move in this video?"},
            {"from": "gpt", "value": f"There are {len(shapes)} shapes."},
            {"from": "human", "value": "Which colours do they have?"},
            {"from": "gpt", "value": ", ".join(colors[:-1]) + (" and " if len(colors) > 1 else "") + colors[-1] + "."},
        ]})
    _write(os.path.join(root, "video_chat.json"), _json_bytes(records))


def _direction(s: Shape) -> str:
    return ("left" if s.vx < 0 else "right") if abs(s.vx) >= abs(s.vy) else ("up" if s.vy < 0 else "down")


def write_sav(out: str, *, seed: int, num_videos: int, num_val_videos: int, num_frames: int, height: int,
              width: int) -> None:
    """SA-V videos and their referring expressions (Sa2VA's video_sam2 training set, Ref-SAV valid).

    ``sav_synth/sav_train/sav_000/sav_<id>.mp4`` (24 fps, 4 (num_frames - 1) + 1 frames) with
    ``sav_<id>_manual.json`` (``masklet``: per annotated frame (every 4th: 6 fps), one COCO RLE per
    object); ``sav_synth/sav_expressions.json`` = ``{vid: {video_path, anno_path, objects: {obj_idx:
    {formated, short_caps}}}}`` for the first ``num_videos`` videos; ``sav_synth/ref_sav_valid/``
    (``meta_expressions_valid.json`` + ``mask_dict.json``, MeViS layout, frames named by their index
    in the mp4, a long (type 0) and a short (type 1) expression per object) for the others.
    """
    root = os.path.join(out, "sav_synth")
    n_video_frames = SAV_ANNOTATION_STRIDE * (num_frames - 1) + 1
    expressions, valid, mask_dict = {}, {}, {}
    anno_id = 0
    for v in range(num_videos + num_val_videos):
        rng = np.random.default_rng([seed, _KIND_SAV, v])
        vid = f"sav_{v + 1:06d}"
        shapes, images, masks = moving_scene(rng, height, width, n_video_frames, speed=0.25)
        start = [Shape(s.kind, s.color, s.cx, s.cy, s.r, s.vx, s.vy) for s in shapes]
        folder = os.path.join(root, "sav_train", vid[:7])
        write_video_file(os.path.join(folder, vid + ".mp4"), images)
        annotated = list(range(0, n_video_frames, SAV_ANNOTATION_STRIDE))
        masklet = [[encode_mask(masks[t][i]) for i in range(len(shapes))] for t in annotated]
        _write(os.path.join(folder, vid + "_manual.json"), _json_bytes({
            "video_id": vid, "video_frame_count": float(n_video_frames), "video_height": float(height),
            "video_width": float(width), "masklet": masklet, "masklet_id": list(range(len(shapes))),
            "masklet_num": len(shapes), "masklet_type": ["manual"] * len(shapes)}))
        long_caps = [f"A {s.color} {s.kind} that moves {_direction(s)}." for s in start]
        short_caps = [[f"{s.color} {s.kind}", f"the {s.color} {s.kind}"] for s in start]
        if v < num_videos:
            expressions[vid] = {"video_path": f"{vid[:7]}/{vid}.mp4", "anno_path": f"{vid[:7]}/{vid}_manual.json",
                                "objects": {str(i): {"formated": long_caps[i], "short_caps": short_caps[i]}
                                            for i in range(len(shapes))}}
            continue
        exps = {}
        for i in range(len(shapes)):
            anno_id += 1
            mask_dict[str(anno_id)] = [encode_mask(masks[t][i]) if masks[t][i].any() else None for t in annotated]
            for type_id, text in ((0, long_caps[i]), (1, short_caps[i][0])):
                exps[str(len(exps))] = {"exp": text, "obj_id": [i], "anno_id": [anno_id], "type_id": type_id}
        valid[vid] = {"frames": [f"{t:05d}" for t in annotated], "expressions": exps}
    _write(os.path.join(root, "sav_expressions.json"), _json_bytes(expressions))
    _write(os.path.join(root, "ref_sav_valid", "meta_expressions_valid.json"), _json_bytes({"videos": valid}))
    _write(os.path.join(root, "ref_sav_valid", "mask_dict.json"), _json_bytes(mask_dict))


def _shape_caption(scene: dict) -> tuple[str, list[tuple[int, int]]]:
    """'A red circle, a blue square and a green triangle.' and each shape's character span."""
    caption, spans = "", []
    shapes = scene["shapes"]
    for j, s in enumerate(shapes):
        if j:
            caption += " and " if j == len(shapes) - 1 else ", "
        phrase = f"{_article(s.color)} {s.color} {s.kind}"
        spans.append((len(caption), len(caption) + len(phrase)))
        caption += phrase
    return caption[0].upper() + caption[1:] + ".", spans


def write_flickr(out: str, scenes: list[dict], *, num_items: int) -> None:
    """GLaMM's Flickr GCG layout (COCO): ``flickr_synth/flickr_mergedGT_GCG_train.json`` with images
    (``caption``) and annotations (``bbox``, ``tokens_positive``, ``sam_mask`` RLE), one per shape."""
    images, annotations = [], []
    train = [s for s in scenes if s["split"] == "train"]
    for k, scene in enumerate(train[:num_items]):
        caption, spans = _shape_caption(scene)
        height, width = scene["masks"][0].shape
        images.append({"id": k + 1, "file_name": scene["file_name"], "height": height, "width": width,
                       "caption": caption})
        for mask, span in zip(scene["masks"], spans):
            if not mask.any():
                continue
            annotations.append({"id": len(annotations) + 1, "image_id": k + 1, "category_id": 1, "iscrowd": 0,
                                "bbox": _bbox(mask), "area": int(mask.sum()), "tokens_positive": [list(span)],
                                "sam_mask": encode_mask(mask)})
    _write(os.path.join(out, "flickr_synth", "flickr_mergedGT_GCG_train.json"),
           _json_bytes({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "object"}]}))


def write_psg(out: str, scenes: list[dict], *, num_items: int) -> None:
    """GLaMM's OpenPSG GCG (GranD-f layout with ``height``, ``width``, ``image_id``):
    ``psg_synth/OpenPsgGCG_train.json``; one phrase per shape, plus an ungrounded "picture" phrase
    (``null``, as GLaMM's files have; readers drop it)."""
    records = []
    train = [s for s in scenes if s["split"] == "train"]
    for k, scene in enumerate(train[-num_items:] if num_items else []):
        caption, spans = _shape_caption(scene)
        caption = caption[:-1] + " in the picture."
        height, width = scene["masks"][0].shape
        groundings = {caption[a:b]: {"token_positives": [a, b], "rle_masks": [encode_mask(m)]}
                      for m, (a, b) in zip(scene["masks"], spans) if m.any()}
        groundings["picture"] = None
        records.append({"file_name": scene["file_name"], "height": height, "width": width, "image_id": k + 1,
                        "caption": caption, "groundings": groundings})
    _write(os.path.join(out, "psg_synth", "OpenPsgGCG_train.json"), _json_bytes(records))


def make_synthetic(out: str, *, seed: int = 0, num_images: int = 300, num_val_images: int = 50,
                   num_videos: int = 20, num_val_videos: int = 8, num_frames: int = 8, height: int = 96,
                   width: int = 128, relational_fraction: float = 0.25, num_llava: int = 40,
                   num_gcg: int = 40, num_osprey: int = 40, num_video_qa: int = 8, num_sav_videos: int = 6,
                   num_ref_sav_videos: int = 3, num_flickr: int = 40, num_psg: int = 40,
                   distractor: bool = False) -> dict[str, str]:
    """Write every synthetic set under ``out``; returns the roots readers take (see module doc).

    ``distractor``: RefCOCO images and MeViS videos are distractor scenes
    (:func:`make_distractor_shapes`); the other sets are unchanged."""
    scenes = write_refcoco(out, seed=seed, num_images=num_images, num_val_images=num_val_images,
                           height=height, width=width, relational_fraction=relational_fraction,
                           distractor=distractor)
    write_mevis(out, "train", seed=seed, num_videos=num_videos, num_frames=num_frames, height=height,
                width=width, relational_fraction=relational_fraction, distractor=distractor)
    write_mevis(out, "valid_u", seed=seed, num_videos=num_val_videos, num_frames=num_frames, height=height,
                width=width, relational_fraction=relational_fraction, index_offset=num_videos, distractor=distractor)
    write_llava(out, scenes, num_items=num_llava)
    write_gcg(out, scenes, num_items=num_gcg)
    write_osprey(out, seed=seed, num_items=num_osprey, height=height, width=width)
    write_video_qa(out, seed=seed, num_items=num_video_qa, num_frames=4 * num_frames, height=height, width=width)
    write_sav(out, seed=seed, num_videos=num_sav_videos, num_val_videos=num_ref_sav_videos, num_frames=num_frames,
              height=height, width=width)
    write_flickr(out, scenes, num_items=num_flickr)
    write_psg(out, scenes, num_items=num_psg)
    return {
        "refcoco": os.path.join(out, "refcoco_synth"),
        "refcoco_images": os.path.join(out, "refcoco_synth", "images"),
        "mevis_train": os.path.join(out, "mevis_synth", "train"),
        "mevis_valid_u": os.path.join(out, "mevis_synth", "valid_u"),
        "llava": os.path.join(out, "llava_synth", "llava.json"),
        "gcg": os.path.join(out, "gcg_synth", "gcg.json"),
        "osprey": os.path.join(out, "osprey_synth"),
        "video_qa": os.path.join(out, "video_qa_synth"),
        "sav": os.path.join(out, "sav_synth"),
        "flickr": os.path.join(out, "flickr_synth", "flickr_mergedGT_GCG_train.json"),
        "psg": os.path.join(out, "psg_synth", "OpenPsgGCG_train.json"),
    }
