"""Prediction overlays for a quick look (``tools/test.py --show N``), drawn from saved records.

The predicted mask is blended in colour over the image; the GT outline (when known) is drawn in
green; the expression and the model's answer are written on top. PIL only. File names are built
from the record's ids, which must be plain names (no path separators or '..': a ValueError).
"""
from __future__ import annotations

import os
import re

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..datasets.io import safe_name
from ..datasets.masks import decode_rle
from ..datasets.transforms import load_image
from ..datasets.video_files import load_frame
from .metrics import boundary_map

PRED_COLOR = (255, 40, 40)
GT_COLOR = (40, 255, 40)
MAX_VIDEO_FRAMES = 4


def overlay(image: Image.Image, pred: np.ndarray | None, text: str, gt: np.ndarray | None = None,
            alpha: float = 0.5) -> Image.Image:
    """RGB image with ``pred`` (H, W) blended in red, ``gt``'s boundary in green, ``text`` on a band."""
    base = image.convert("RGB")
    out = base.copy()
    if pred is not None and pred.any():
        tinted = Image.blend(base, Image.new("RGB", base.size, PRED_COLOR), alpha)
        out.paste(tinted, mask=Image.fromarray(pred.astype(np.uint8) * 255, mode="L"))
    if gt is not None:
        edge = boundary_map(gt)
        out.paste(Image.new("RGB", base.size, GT_COLOR), mask=Image.fromarray(edge.astype(np.uint8) * 255, mode="L"))
    font = ImageFont.load_default()
    text = text.encode("ascii", "replace").decode("ascii")  # the bitmap fallback font is latin-1 only
    band = 14 * (text.count("\n") + 1) + 4
    canvas = Image.new("RGB", (out.width, out.height + band), (0, 0, 0))
    canvas.paste(out, (0, band))
    ImageDraw.Draw(canvas).multiline_text((2, 2), text, fill=(255, 255, 255), font=font, spacing=2)
    return canvas


def hstack(images: list[Image.Image]) -> Image.Image:
    """Images side by side, top-aligned, on black."""
    strip = Image.new("RGB", (sum(im.width for im in images), max(im.height for im in images)))
    x = 0
    for im in images:
        strip.paste(im, (x, 0))
        x += im.width
    return strip


def strip_frames(n_frames: int, max_frames: int = MAX_VIDEO_FRAMES) -> list[int]:
    """Up to ``max_frames`` evenly spaced frame indices of a video, first and last included."""
    return sorted({int(round(i)) for i in np.linspace(0, n_frames - 1, min(max_frames, n_frames))})


def _safe(name) -> str:
    """An id as a file-name part: refused if it is a path ('../x', 'a/b'), other odd characters
    (':' of 'image:12') replaced."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", safe_name(str(name), what="id", where="overlay file name"))


def draw_res_record(record: dict, out_dir: str, gt_masks: dict | None = None) -> list[str]:
    """One PNG per sentence of an image record; ``gt_masks``: {sent_id: (H, W)} if known."""
    image = load_image(record["image_path"])
    height, width = record["size"]
    paths = []
    for s in record["sentences"]:
        pred = decode_rle(s["mask"], height, width) if s["mask"] else None
        gt = None if gt_masks is None else gt_masks.get(s["sent_id"])
        text = f"{s['sentence']}\n-> {s['answer'][:80]}"
        path = os.path.join(out_dir, f"{_safe(record['key'])}_sent{s['sent_id']}.png")
        os.makedirs(out_dir, exist_ok=True)
        overlay(image, pred, text, gt).save(path)
        paths.append(path)
    return paths


def draw_video_record(record: dict, out_dir: str, gt=None, max_frames: int = MAX_VIDEO_FRAMES) -> list[str]:
    """One PNG per expression: up to ``max_frames`` evenly spaced frames side by side.

    ``gt``: GT of the record's expressions, if known: ``gt[t]`` -> (n_exp, H, W), read for the
    drawn frames only (the reader's ``FrameGT``, or a dict of those frames).
    """
    height, width = record["size"]
    n = len(record["frame_paths"])
    picks = strip_frames(n, max_frames)
    frames = {t: load_frame(record["frame_paths"][t]) for t in picks}  # a file or "<video>#<index>"
    paths = []
    for e, exp in enumerate(record["expressions"]):
        tiles = []
        for t in picks:
            pred = decode_rle(exp["masks"][t], height, width) if exp["masks"] else None
            tag = " (LLM)" if t in record["llm_frames"] else ""
            text = f"frame {t}{tag}: {exp['exp'][:60]}\n-> {exp['answer'][:60]}"
            tiles.append(overlay(frames[t], pred, text, None if gt is None else np.asarray(gt[t])[e]))
        strip = hstack(tiles)
        path = os.path.join(out_dir, f"{_safe(record['key'])}_exp{_safe(exp['exp_id'])}.png")
        os.makedirs(out_dir, exist_ok=True)
        strip.save(path)
        paths.append(path)
    return paths
