"""Inference on files with an exported model (``tools/infer.py``): mask PNGs, an overlay, the answer.

Output folder::

    image:  mask_<k>.png                  one per [SEG] k (0 / 255, the image's size)
    video:  masks/seg<k>/<frame>.png      one per [SEG] k and frame (frame names from the folder,
                                          or 00000, 00001, ... for a video file)
    overlay.png                           the masks in red over the image (video: up to 4 frames)
    result.json                           question, answer, n_seg, written mask files, regions (count)
"""
from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image
from tqdm import tqdm

from .datasets.inference import read_video
from .datasets.transforms import load_image
from .evaluation.visualize import hstack, overlay, strip_frames
from .models.salma_model import SALMAModel


def save_mask(mask: np.ndarray, path: str) -> str:
    """A bool (H, W) mask as an 8-bit PNG (0 / 255)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(path)
    return path


def _caption(result: dict, prefix: str = "") -> str:
    return f"{prefix}{result['question'][:70]}\n-> {result['text'][:70]}"


def infer_image(model: SALMAModel, image_path: str, text: str, out_dir: str, *, regions=None,
                **predict_kwargs) -> dict:
    """Predict on one image file (``regions``: boxes / masks the text asks about, see
    ``SALMAModel.predict``) and write its masks, overlay and result.json."""
    image = load_image(image_path)
    os.makedirs(out_dir, exist_ok=True)
    result = model.predict(image=image, text=text, regions=regions, **predict_kwargs)
    masks = result["masks"].numpy()  # (n_seg, H, W)
    files = [save_mask(m, os.path.join(out_dir, f"mask_{k}.png")) for k, m in enumerate(masks)]
    overlay(image, masks.any(0) if len(masks) else None, _caption(result)).save(os.path.join(out_dir, "overlay.png"))
    return _write_result(out_dir, result, files, source=image_path, n_regions=len(regions or ()))


def infer_video(model: SALMAModel, video_path: str, text: str, out_dir: str, **predict_kwargs) -> dict:
    """Predict on a frame folder or video file and write per-frame masks, an overlay strip and result.json."""
    frames, names = read_video(video_path, progress=True)
    os.makedirs(out_dir, exist_ok=True)
    result = model.predict(video=frames, text=text, progress=True, **predict_kwargs)
    masks = result["masks"].numpy()  # (n_seg, T, H, W)
    files = []
    for t in tqdm(range(len(frames)), desc="writing masks", unit="frame", disable=not len(masks)):
        files += [save_mask(masks[k, t], os.path.join(out_dir, "masks", f"seg{k}", f"{names[t]}.png"))
                  for k in range(len(masks))]
    tiles = []
    for t in strip_frames(len(frames)):
        tag = " (LLM)" if t in result["llm_frames"] else ""
        tiles.append(overlay(frames[t], masks[:, t].any(0) if len(masks) else None,
                             _caption(result, f"frame {names[t]}{tag}: ")))
    hstack(tiles).save(os.path.join(out_dir, "overlay.png"))
    return _write_result(out_dir, result, files, source=video_path)


def _write_result(out_dir: str, result: dict, files: list[str], *, source: str, n_regions: int = 0) -> dict:
    summary = {"source": source, "question": result["question"], "answer": result["text"],
               "n_seg": int(result["masks"].shape[0]), "masks": [os.path.relpath(f, out_dir) for f in files],
               "regions": n_regions}
    if "llm_frames" in result:
        summary["llm_frames"] = result["llm_frames"]
    with open(os.path.join(out_dir, "result.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, ensure_ascii=False)
    return summary
