"""Inference on files with an exported model (``tools/infer.py``): mask PNGs, an overlay, the answer.

Output folder::

    image:  mask_<k>.png                  one per [SEG] k = 1, 2, ... (0 / 255, the image's size)
    video:  masks/mask_<k>/<frame>.png    one per [SEG] k and frame (frame names from the folder,
                                          or 00000, 00001, ... for a video file), written as SAM-2
                                          tracks (frames are read and released one at a time)
    overlay.png                           the masks in red over the image (video: up to 4 frames)
    result.json                           question, answer, n_seg, written mask files, regions (count)
"""
from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image
from tqdm import tqdm

from .datasets.frames import open_video
from .datasets.transforms import load_image
from .evaluation.visualize import hstack, overlay, strip_frames
from .salma_model import SALMAModel


def save_mask(mask: np.ndarray, path: str) -> str:
    """A bool (H, W) mask as an 8-bit PNG (0 / 255)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(path)
    return path


def mask_name(k: int) -> str:
    """The file stem of the 0-based ``k``-th [SEG]'s mask: ``mask_1`` for the first, as the web
    demo's legend counts them (the demo and ``tools/infer.py`` name files alike)."""
    return f"mask_{k + 1}"


def _caption(result: dict, prefix: str = "") -> str:
    return f"{prefix}{result['question'][:70]}\n-> {result['text'][:70]}"


def infer_image(model: SALMAModel, image_path: str, text: str, out_dir: str, *, regions=None,
                **predict_kwargs) -> dict:
    """Predict on one image file (``regions``: boxes / masks the text asks about, see
    ``SALMAModel.predict``) and write its masks, overlay and result.json."""
    image = load_image(image_path, orient=True)
    os.makedirs(out_dir, exist_ok=True)
    result = model.predict(image=image, text=text, regions=regions, **predict_kwargs)
    masks = result["masks"].numpy()  # (n_seg, H, W)
    files = [save_mask(m, os.path.join(out_dir, f"{mask_name(k)}.png")) for k, m in enumerate(masks)]
    overlay(image, masks.any(0) if len(masks) else None, _caption(result)).save(os.path.join(out_dir, "overlay.png"))
    return _write_result(out_dir, result, files, source=image_path, n_seg=len(masks), n_regions=len(regions or ()))


def infer_video(model: SALMAModel, video_path: str, text: str, out_dir: str, **predict_kwargs) -> dict:
    """Predict on a frame folder or video file: each frame's mask PNGs are written as SAM-2 produces
    them (a progress bar counts the frames), then an overlay strip and result.json. Memory stays
    that of a few frames, whatever the video's length (``SALMAModel.predict(stream=True)``)."""
    video = open_video(video_path)
    os.makedirs(out_dir, exist_ok=True)
    prediction = model.predict(video=video, text=text, stream=True, **predict_kwargs)
    answer = prediction.answers
    picks = strip_frames(len(video))
    shown = {}  # the overlay's frames: their union mask
    for t, masks in tqdm(prediction, total=len(prediction), desc="masks", unit="frame"):  # masks (n_seg, H, W)
        for k, mask in enumerate(masks.numpy()):
            save_mask(mask, _mask_path(out_dir, k, video.names[t]))
        if t in picks:
            shown[t] = masks.any(0).numpy() if len(masks) else None
    tiles = []
    for t in picks:
        tag = " (LLM)" if t in answer["llm_frames"] else ""
        tiles.append(overlay(video.image(t), shown[t], _caption(answer, f"frame {video.names[t]}{tag}: ")))
    video.close()
    hstack(tiles).save(os.path.join(out_dir, "overlay.png"))
    files = [_mask_path(out_dir, k, name) for name in video.names for k in range(answer["n_seg"])]
    return _write_result(out_dir, answer, files, source=video_path, n_seg=answer["n_seg"])


def _mask_path(out_dir: str, k: int, frame_name: str) -> str:
    return os.path.join(out_dir, "masks", mask_name(k), f"{frame_name}.png")


def _write_result(out_dir: str, result: dict, files: list[str], *, source: str, n_seg: int, n_regions: int = 0) -> dict:
    summary = {"source": source, "question": result["question"], "answer": result["text"],
               "n_seg": n_seg, "masks": [os.path.relpath(f, out_dir) for f in files], "regions": n_regions}
    if "llm_frames" in result:
        summary["llm_frames"] = result["llm_frames"]
    with open(os.path.join(out_dir, "result.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, ensure_ascii=False)
    return summary
