"""Prediction overlays for a quick look (``tools/test.py --show N``, ``tools/infer.py``, the web
demo), drawn from saved records or predictions.

The predicted mask is blended in colour over the image; the GT outline (when known) is drawn in
green; the expression and the model's answer are written on top, wrapped to the picture's width.
Frames smaller than ``MIN_DISPLAY_SIZE`` are enlarged by an integer factor with nearest-neighbour
pixels, so captions fit and every mask pixel stays visible as it was predicted (a block, never
smoothed). PIL only. File names are built from the record's ids, which must be plain names (no
path separators or '..': a ValueError).
"""
from __future__ import annotations

import math
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
# One colour per [SEG] (the first is PRED_COLOR); far from each other and from GT_COLOR.
PALETTE = (PRED_COLOR, (40, 120, 255), (255, 200, 0), (200, 60, 230), (0, 210, 210), (255, 120, 0),
           (150, 90, 40), (255, 110, 190))
MAX_VIDEO_FRAMES = 4
MIN_DISPLAY_SIZE = 256  # the longer side of an overlay's picture, at least (integer enlargement)
TEXT_MARGIN = 2  # pixels around the caption
LINE_SPACING = 2


def display_scale(height: int, width: int, min_size: int = MIN_DISPLAY_SIZE) -> int:
    """The integer factor that brings a frame's longer side to at least ``min_size`` (1: as is)."""
    return max(1, math.ceil(min_size / max(height, width, 1)))


def enlarge(image: Image.Image, scale: int) -> Image.Image:
    """``image`` ``scale`` times larger, nearest-neighbour (each pixel a ``scale`` x ``scale`` block)."""
    return image if scale == 1 else image.resize((image.width * scale, image.height * scale), Image.NEAREST)


def _mask_image(mask: np.ndarray, scale: int) -> Image.Image:
    return enlarge(Image.fromarray(np.asarray(mask, dtype=bool).astype(np.uint8) * 255, mode="L"), scale)


def paint_masks(image: Image.Image, masks, *, scale: int = 1, alpha: float = 0.5,
                colors: tuple = PALETTE) -> Image.Image:
    """RGB ``image`` enlarged ``scale`` times with mask k (``masks``: bool (n, H, W)) blended in
    ``colors[k % len(colors)]``, in order (a later mask covers an earlier one where they overlap)."""
    base = enlarge(image.convert("RGB"), scale)
    out = base.copy()
    for k, mask in enumerate(masks):
        if mask.any():
            tinted = Image.blend(base, Image.new("RGB", base.size, colors[k % len(colors)]), alpha)
            out.paste(tinted, mask=_mask_image(mask, scale))
    return out


def wrap_text(text: str, font, width: float) -> list[str]:
    """``text`` as lines no wider than ``width`` pixels in ``font``: its own line breaks kept, words
    moved to the next line, a word wider than ``width`` broken where it must be."""
    lines = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if font.getlength(candidate) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
            while len(word) > 1 and font.getlength(word) > width:
                cut = 1  # the longest head that fits (one character at least)
                while cut < len(word) and font.getlength(word[: cut + 1]) <= width:
                    cut += 1
                lines.append(word[:cut])
                word = word[cut:]
            line = word
        lines.append(line)
    return lines


def overlay(image: Image.Image, pred: np.ndarray | None, text: str, gt: np.ndarray | None = None,
            alpha: float = 0.5, *, min_size: int = MIN_DISPLAY_SIZE) -> Image.Image:
    """RGB image with ``pred`` (H, W) blended in red, ``gt``'s boundary in green, ``text`` wrapped on
    a band above; enlarged (:func:`display_scale`) when the image is smaller than ``min_size``."""
    scale = display_scale(image.height, image.width, min_size)
    out = paint_masks(image, [] if pred is None else [pred], scale=scale, alpha=alpha)
    if gt is not None:
        out.paste(Image.new("RGB", out.size, GT_COLOR), mask=_mask_image(boundary_map(gt), scale))
    font = ImageFont.load_default()
    text = text.encode("ascii", "replace").decode("ascii")  # the default font has latin glyphs only
    lines = wrap_text(text, font, out.width - 2 * TEXT_MARGIN)
    line_height = font.getbbox("Ag[")[3] + LINE_SPACING
    band = line_height * len(lines) + 2 * TEXT_MARGIN
    canvas = Image.new("RGB", (out.width, out.height + band), (0, 0, 0))
    canvas.paste(out, (0, band))
    ImageDraw.Draw(canvas).multiline_text((TEXT_MARGIN, TEXT_MARGIN), "\n".join(lines), fill=(255, 255, 255),
                                          font=font, spacing=LINE_SPACING)
    return canvas


def hstack(images: list[Image.Image], gap: int = 4) -> Image.Image:
    """Images side by side, top-aligned, ``gap`` pixels apart, on black."""
    width = sum(im.width for im in images) + gap * (len(images) - 1)
    strip = Image.new("RGB", (width, max(im.height for im in images)))
    x = 0
    for im in images:
        strip.paste(im, (x, 0))
        x += im.width + gap
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
