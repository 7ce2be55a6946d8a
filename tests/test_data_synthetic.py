"""Synthetic generator: deterministic bytes, unambiguous expressions, masks exact for the images."""
import hashlib
import json
import os
import pickle

import numpy as np
from PIL import Image

from projects.salma.datasets.masks import decode_rle, decode_segmentation
from projects.salma.datasets.synthetic import (COLORS, make_shapes, make_synthetic, object_sentences,
                                               relational_expressions, resolve_expression)

_SMALL = dict(num_images=4, num_val_images=2, num_videos=2, num_val_videos=1, num_frames=3, num_llava=4, num_gcg=2,
              num_osprey=2, num_video_qa=1, num_sav_videos=1, num_ref_sav_videos=1, num_flickr=2, num_psg=2)


def _digest(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            out[os.path.relpath(path, root)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return out


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a, b, c = (_digest(make_synthetic(str(tmp_path / n), seed=s, **_SMALL)["refcoco"] + "/..") for n, s in
               [("a", 5), ("b", 5), ("c", 6)])
    assert a == b and len(a) == 6 + 2 + 2 * 3 + 1 * 3 + 2 * 2 + 2 + (2 + 5) + (1 + 1) + (2 * 2 + 3) + 1 + 1
    # images, refcoco, frames, jsons; osprey images + 5 files; video QA mp4 + json; SA-V mp4 + masklet per
    # video, expressions and Ref-SAV's two files; flickr; psg (the mp4 bytes are deterministic too)
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a)


def test_every_expression_names_exactly_one_object():
    n_relational = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        shapes = make_shapes(rng, 96, 128)
        relational = relational_expressions(shapes, 128)
        for i, exprs in relational.items():
            for e in exprs:
                assert resolve_expression(e, shapes, 128) == [i], (seed, e)
        sentences = object_sentences(shapes, 128, rng, relational_fraction=0.5)
        for i, sents in enumerate(sentences):
            for s in sents:
                assert resolve_expression(s, shapes, 128) == [i], (seed, s)
            n_relational += sents[0] != f"the {shapes[i].color} {shapes[i].kind}"
    assert 50 < n_relational < 0.5 * sum(len(make_shapes(np.random.default_rng(s), 96, 128)) for s in range(200))


def test_masks_match_the_pixels(synthetic_data):
    root = synthetic_data["refcoco"]
    instances = json.load(open(os.path.join(root, "instances.json")))
    refs = {r["ann_id"]: r for r in pickle.load(open(os.path.join(root, "refs(unc).p"), "rb"))}
    kinds = {"polygon": 0, "rle": 0}
    images = {im["id"]: im for im in instances["images"]}
    for ann in instances["annotations"][:40]:
        im = images[ann["image_id"]]
        pixels = np.asarray(Image.open(os.path.join(synthetic_data["refcoco_images"], im["file_name"])), dtype=float)
        mask = decode_segmentation(ann["segmentation"], im["height"], im["width"]).astype(bool)
        kinds["polygon" if isinstance(ann["segmentation"], list) else "rle"] += 1
        color = next(w for w in refs[ann["id"]]["sentences"][1]["sent"].split() if w in COLORS)
        inside = np.abs(pixels[mask] - COLORS[color]).mean()
        assert inside < 12, (ann["id"], inside)  # JPEG noise only at the edges
        ring = np.zeros_like(mask)
        ys, xs = np.nonzero(mask)
        ring[max(ys.min() - 2, 0):ys.max() + 3, max(xs.min() - 2, 0):xs.max() + 3] = True
        outside = ring & ~mask
        assert np.abs(pixels[outside] - COLORS[color]).mean() > 40  # the mask ends where the colour ends
    assert kinds["polygon"] > 0 and kinds["rle"] > 0


def test_video_masks_and_layout(synthetic_data):
    root = synthetic_data["mevis_train"]
    meta = json.load(open(os.path.join(root, "meta_expressions.json")))["videos"]
    masks = json.load(open(os.path.join(root, "mask_dict.json")))
    assert len(meta) == 6
    vid, video = sorted(meta.items())[0]
    assert len(video["frames"]) == 8
    for exp in video["expressions"].values():
        (anno,) = exp["anno_id"]
        frames = [decode_rle(r, 96, 128) for r in masks[str(anno)]]
        assert len(frames) == 8 and any(f.any() for f in frames)
        centers = [np.argwhere(f).mean(0) for f in frames if f.sum() > 20]
        assert len(centers) < 2 or np.abs(np.diff(centers, axis=0)).sum() > 1  # objects move
        assert os.path.exists(os.path.join(root, "JPEGImages", vid, video["frames"][0] + ".jpg"))


# ---- distractor mode (issue 15) ------------------------------------------------------------------------
def test_distractor_scenes_resemble_one_target_and_stay_unambiguous():
    from projects.salma.datasets.synthetic import make_distractor_shapes

    kinds = {"colour": 0, "shape": 0}
    for seed in range(200):
        rng = np.random.default_rng(seed)
        shapes = make_distractor_shapes(rng, 128, 128)
        d, look_alike, targets = shapes[0], shapes[1], shapes[1:]
        assert d.distractor and not any(t.distractor for t in targets) and 2 <= len(targets) <= 4
        extent = lambda s: s.r * np.sqrt(2) if s.kind == "square" else s.r  # noqa: E731
        area = lambda s: {"circle": np.pi, "square": 4.0, "triangle": 3 * np.sqrt(3) / 4}[s.kind] * s.r ** 2  # noqa: E731
        assert area(d) > 3 * max(area(t) for t in targets)  # large next to small
        same_colour, same_kind = d.color == look_alike.color, d.kind == look_alike.kind
        assert same_colour != same_kind, seed  # colour or shape, never both
        kinds["colour" if same_colour else "shape"] += 1
        gap = np.hypot(d.cx - look_alike.cx, d.cy - look_alike.cy) - extent(d) - extent(look_alike)
        assert 0 < gap <= 4.0, (seed, gap)  # right next to it
        assert len({(s.color, s.kind) for s in shapes}) == len(shapes)
        for i, sents in enumerate(object_sentences(shapes, 128, rng, relational_fraction=0.5)):
            for s in sents:  # against the whole scene, the distractor included
                assert resolve_expression(s, shapes, 128) == [i], (seed, s)
    assert min(kinds.values()) > 60, kinds


def test_distractor_mode_writes_an_annotated_unreferred_saturated_distractor(tmp_path):
    from projects.salma.datasets.synthetic import saturated

    small = {**_SMALL, "num_llava": 0, "num_gcg": 0, "num_osprey": 0, "num_video_qa": 0, "num_sav_videos": 0,
             "num_ref_sav_videos": 0, "num_flickr": 0, "num_psg": 0}
    roots = make_synthetic(str(tmp_path), seed=1, height=128, width=128, distractor=True, **small)
    instances = json.load(open(os.path.join(roots["refcoco"], "instances.json")))
    refs = pickle.load(open(os.path.join(roots["refcoco"], "refs(unc).p"), "rb"))
    referred = {r["ann_id"] for r in refs}
    images = {im["id"]: im for im in instances["images"]}
    for image_id, im in images.items():
        anns = [a for a in instances["annotations"] if a["image_id"] == image_id]
        distractors = [a for a in anns if a.get("distractor")]
        assert len(distractors) == 1 and distractors[0]["id"] not in referred
        assert all(a["id"] in referred for a in anns if not a.get("distractor"))
        assert distractors[0]["area"] > 2.5 * max(a["area"] for a in anns if not a.get("distractor"))
        pixels = np.asarray(Image.open(os.path.join(roots["refcoco_images"], im["file_name"])), dtype=float)

        def mean_colour(ann):  # inside the mask, away from JPEG edges
            mask = decode_segmentation(ann["segmentation"], im["height"], im["width"]).astype(bool)
            inner = mask & np.roll(mask, 2, 0) & np.roll(mask, -2, 0) & np.roll(mask, 2, 1) & np.roll(mask, -2, 1)
            return pixels[inner].mean(0)

        # the distractor is painted in a named colour pushed away from grey (more saturated than targets')
        rgb = mean_colour(distractors[0])
        name = min(COLORS, key=lambda c: np.abs(rgb - saturated(COLORS[c])).mean())
        assert np.abs(rgb - saturated(COLORS[name])).mean() < 8
        assert rgb.max() - rgb.min() > max(COLORS[name]) - min(COLORS[name]) + 20
        for ann in anns:  # targets keep the plain colours
            if not ann.get("distractor"):
                assert min(np.abs(mean_colour(ann) - COLORS[c]).mean() for c in COLORS) < 8
    meta = json.load(open(os.path.join(roots["mevis_train"], "meta_expressions.json")))["videos"]
    for video in meta.values():  # the distractor (object 0) is never an expression's object
        assert all(e["obj_id"] != [0] for e in video["expressions"].values()) and video["expressions"]
