"""Frames of a video file (mp4, mkv, ...) read with OpenCV, decoding only the frames asked for.

Readers of video files (Chat-UniVi video QA, SA-V) sample a few frames of long videos: the file is
read once, front to back, ``grab()`` skipping the frames nobody asked for (no colour conversion,
no copy) and ``retrieve()`` converting the wanted ones, so memory holds the sampled frames only.
OpenCV's frame count (container metadata) can be off for some files; :func:`sample_video_frames`
re-samples against the frames actually decoded when the file ends early.

A frame of a file is named ``"<file>#<index>"`` where a path is expected (``meta['image_paths']``
of these readers, overlays): :func:`load_frame` opens either that or an image file.

OpenCV (``cv2``) comes with mmengine (opencv-python); PIL cannot decode video.
"""
from __future__ import annotations

import os
from typing import Callable, Sequence

from PIL import Image

from .errors import DataError
from .transforms import load_image

FRAME_SEPARATOR = "#"


def _cv2():
    try:
        import cv2
    except ImportError as err:  # pragma: no cover - cv2 is an mmengine dependency
        raise DataError("reading video files needs OpenCV (opencv-python, an mmengine dependency)",
                        reason="corrupt_video") from err
    return cv2


def resolve_video_path(path: str, alternatives: Sequence[str] = ()) -> str:
    """``path`` if it exists, else the first existing file with the same stem and an extension
    from ``alternatives`` (Chat-UniVi's json names ``.mkv`` files distributed as ``.mp4``)."""
    if os.path.isfile(path):
        return path
    stem = os.path.splitext(path)[0]
    for ext in alternatives:
        if os.path.isfile(stem + ext):
            return stem + ext
    tried = [path] + [stem + ext for ext in alternatives]
    raise DataError(f"{path}: video file not found (tried {', '.join(tried)})", reason="missing_video")


def _open(path: str):
    cv2 = _cv2()
    if not os.path.isfile(path):
        raise DataError(f"{path}: video file not found", reason="missing_video")
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        capture.release()
        raise DataError(f"{path}: OpenCV cannot open this video (corrupt file or unsupported codec)",
                        reason="corrupt_video")
    return capture


def video_frame_count(path: str) -> int:
    """Frames of the video according to its container (exact for the mp4 files written here)."""
    capture = _open(path)
    count = int(capture.get(_cv2().CAP_PROP_FRAME_COUNT))
    capture.release()
    if count <= 0:
        raise DataError(f"{path}: the video reports no frames", reason="corrupt_video")
    return count


class VideoEndedEarly(DataError):
    """The file has fewer frames than an index asked for; ``n_frames`` = frames decoded."""

    def __init__(self, message: str, *, n_frames: int) -> None:
        super().__init__(message, reason="short_video")
        self.n_frames = n_frames


def read_video_frames(path: str, indices: Sequence[int]) -> list[Image.Image]:
    """RGB frames at ``indices`` (any order, repeats allowed), decoding the file once up to the last.

    Raises :class:`VideoEndedEarly` (a DataError) when the file ends before an index.
    """
    if not indices:
        return []
    if min(indices) < 0:
        raise ValueError(f"{path}: negative frame index in {list(indices)}")
    cv2 = _cv2()
    wanted, last = set(int(i) for i in indices), max(int(i) for i in indices)
    capture = _open(path)
    frames: dict[int, Image.Image] = {}
    try:
        for t in range(last + 1):
            if not capture.grab():
                raise VideoEndedEarly(f"{path}: the video ends after {t} frames, frame {last} was asked for",
                                      n_frames=t)
            if t in wanted:
                ok, bgr = capture.retrieve()
                if not ok:
                    raise DataError(f"{path}: cannot decode frame {t}", reason="corrupt_video")
                frames[t] = Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    finally:
        capture.release()
    return [frames[int(i)] for i in indices]


def sample_video_frames(path: str, pick: Callable[[int], list[int]]) -> tuple[list[Image.Image], list[int], int]:
    """Frames at ``pick(n_frames)``: (frames, indices, n_frames).

    ``n_frames`` is the container's count; if the file turns out shorter, ``pick`` is asked again
    with the number of frames actually decoded (once).
    """
    n_frames = video_frame_count(path)
    indices = pick(n_frames)
    try:
        return read_video_frames(path, indices), indices, n_frames
    except VideoEndedEarly as err:
        if err.n_frames == 0:
            raise DataError(f"{path}: OpenCV decoded no frame", reason="corrupt_video") from err
        n_frames = err.n_frames
        indices = pick(n_frames)
        return read_video_frames(path, indices), indices, n_frames


def frame_reference(path: str, index: int) -> str:
    """The name of frame ``index`` of a video file where a path is expected: ``"<path>#<index>"``."""
    return f"{path}{FRAME_SEPARATOR}{int(index)}"


def load_frame(reference: str) -> Image.Image:
    """An image file, or a frame named by :func:`frame_reference`."""
    path, sep, index = reference.rpartition(FRAME_SEPARATOR)
    if sep and index.isdigit() and not os.path.isfile(reference):
        return read_video_frames(path, [int(index)])[0]
    return load_image(reference)
