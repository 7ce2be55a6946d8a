"""A video's frames, read one at a time when asked: a folder of frames, a list of images, or a file.

Video inference touches every frame of a video of any length, so nothing here holds the video: a
frame is decoded when :meth:`VideoFrames.image` asks for it and belongs to the caller from then on.
SAM-2's tracker reads every frame once, in its own order (forwards from the first LLM frame, then
backwards to frame 0); :class:`SamFrames` gives it SAM-2's input of a frame on demand.

* :class:`ImageFrames`: image files (decoded with PIL when asked; their sizes are read from the
  headers up front, so frames of different sizes are a DataError naming the odd one before any
  work) or in-memory images (PIL images or uint8 arrays, converted when asked).
* :class:`VideoFileFrames`: a video file decoded with OpenCV (an mmengine dependency; PIL cannot
  decode video). Reading forwards continues one decoder (``grab`` skips the frames nobody asked
  for). A frame behind the decoder (backward tracking) is read by seeking to the start of a chunk
  of ``chunk`` frames that ends at it, decoding the chunk, and serving its frames backwards from
  memory: one seek per ``chunk`` frames instead of a decode from the start per frame. OpenCV seeks
  by timestamp, which is not frame-exact for every file (variable frame rate, broken timestamps),
  so each frame's timestamp is recorded when it is first decoded and a seek that lands on another
  frame falls back, for the rest of the file, to decoding from the start (exact, slower; logged).

:func:`open_video` opens a folder or a file as ``tools/infer.py --video`` and ``SALMAModel.predict``
take it.
"""
from __future__ import annotations

import os
from typing import Sequence, Union

import numpy as np
import torch
from mmengine.logging import print_log
from PIL import Image

from .errors import DataError
from .image_policy import is_hidden, to_rgb
from .transforms import common_frame_size, image_size, load_image, to_normalized_tensor
from .video_files import VideoEndedEarly

ImageInput = Union[Image.Image, str, os.PathLike, np.ndarray]
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


def _check_array(image: np.ndarray, name: str) -> None:
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"{name}: an array must be uint8 (H, W) or (H, W, 3) RGB, got {image.dtype} {image.shape}")


def as_rgb_image(image: ImageInput, *, name: str = "image") -> Image.Image:
    """A PIL RGB image from a PIL image, a file path, or a uint8 array (H, W) / (H, W, 3)."""
    if isinstance(image, Image.Image):
        return to_rgb(image, name)  # 16-bit, alpha, CMYK: as a file of that mode would be read
    if isinstance(image, (str, os.PathLike)):
        return load_image(os.fspath(image), orient=True)  # an inference input: upright as viewers show it
    if isinstance(image, np.ndarray):
        _check_array(image, name)
        return Image.fromarray(image).convert("RGB")
    raise TypeError(f"{name}: expected a PIL image, a path or a uint8 array, got {type(image).__name__}")


def _size_of(image: ImageInput, name: str) -> tuple[int, int]:
    """(width, height) without decoding (file header) or converting (in-memory image)."""
    if isinstance(image, Image.Image):
        return image.size
    if isinstance(image, (str, os.PathLike)):
        return image_size(os.fspath(image))
    if isinstance(image, np.ndarray):
        _check_array(image, name)
        return image.shape[1], image.shape[0]
    raise TypeError(f"{name}: expected a PIL image, a path or a uint8 array, got {type(image).__name__}")


class VideoFrames:
    """The frames of one video: ``len``, ``size`` (width, height, every frame), ``names`` (one per
    frame: the file stems of a folder, ``00000``, ``00001``, ... otherwise) and ``image(t)``."""

    names: list[str]
    size: tuple[int, int]

    def __len__(self) -> int:
        return len(self.names)

    def image(self, t: int) -> Image.Image:
        """Frame ``t`` as a PIL RGB image, decoded now."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what reading holds open (nothing by default)."""


class ImageFrames(VideoFrames):
    """Frames given as image files or in-memory images.

    Args:
        images: one per frame: a path (decoded with PIL when asked), a PIL image or a uint8 array.
        names: frame names (default ``00000``, ``00001``, ...).
        labels: how errors name each frame (default: the path, or ``frame <t>``).
        context: appended to a size-mismatch error (e.g. ``" (video v)"``).
    """

    def __init__(self, images: Sequence[ImageInput], *, names: Sequence[str] | None = None,
                 labels: Sequence[str] | None = None, context: str = "") -> None:
        if len(images) == 0:
            raise ValueError("a video needs at least one frame")
        self.images = list(images)
        self.names = list(names) if names is not None else [f"{t:05d}" for t in range(len(images))]
        self.labels = list(labels) if labels is not None else [
            os.fspath(im) if isinstance(im, (str, os.PathLike)) else f"frame {t}" for t, im in enumerate(self.images)]
        self.size = common_frame_size({label: _size_of(im, label) for label, im in zip(self.labels, self.images)},
                                      context=context)

    def image(self, t: int) -> Image.Image:
        return as_rgb_image(self.images[t], name=self.labels[t])


class _SeekMissed(Exception):
    """A seek landed on another frame than asked (timestamps disagree)."""


def _cv2():
    try:
        import cv2
    except ImportError as err:  # pragma: no cover - cv2 is an mmengine dependency
        raise DataError("reading video files needs OpenCV (opencv-python, an mmengine dependency); pass a folder "
                        "of frames instead", reason="corrupt_image") from err
    return cv2


class VideoFileFrames(VideoFrames):
    """Frames of a video file, decoded with OpenCV when asked (see the module docstring).

    Args:
        path: the video file.
        frame_numbers: the file's frames that make the video (Ref-SAV: every 4th); default every
            frame, counted by one ``grab`` pass over the file (exact; containers' frame counts are
            not always).
        chunk: frames decoded per seek when reading backwards (memory: ``chunk`` decoded frames).
    """

    def __init__(self, path: str | os.PathLike, *, frame_numbers: Sequence[int] | None = None, chunk: int = 16) -> None:
        self.path = os.fspath(path)
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.chunk = chunk
        self._cv2 = _cv2()
        self._capture = None
        self._next = 0  # the file frame the next grab() decodes
        self._stamps: dict[int, float] = {}  # file frame -> timestamp (ms) when first decoded
        self._chunk: dict[int, Image.Image] = {}  # decoded frames served backwards
        self._seek_ok = True
        self._open()
        width = int(self._capture.get(self._cv2.CAP_PROP_FRAME_WIDTH))
        height = int(self._capture.get(self._cv2.CAP_PROP_FRAME_HEIGHT))
        if frame_numbers is None:
            frame_numbers = range(self._count())
        self.frame_numbers = [int(n) for n in frame_numbers]
        if not self.frame_numbers or width <= 0 or height <= 0:
            raise DataError(f"{self.path}: OpenCV decoded no frame (unsupported codec?); pass a folder of frames "
                            f"instead", reason="corrupt_image")
        if min(self.frame_numbers) < 0:
            raise ValueError(f"{self.path}: negative frame number in {self.frame_numbers[:10]}")
        self.names = [f"{n:05d}" for n in self.frame_numbers]
        self.size = (width, height)

    def _open(self) -> None:
        self.close()
        self._capture = self._cv2.VideoCapture(self.path)
        self._next = 0
        if not self._capture.isOpened():
            self.close()
            raise DataError(f"{self.path}: OpenCV decoded no frame (unsupported codec?); pass a folder of frames "
                            f"instead", reason="corrupt_image")

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None
        self._chunk = {}

    def _count(self) -> int:
        """Frames in the file: one pass of ``grab`` (decodes, converts nothing), timestamps recorded."""
        while self._capture.grab():
            self._stamps[self._next] = self._capture.get(self._cv2.CAP_PROP_POS_MSEC)
            self._next += 1
        count = self._next
        self._open()
        return count

    def image(self, t: int) -> Image.Image:
        n = self.frame_numbers[t]
        if n in self._chunk:
            return self._chunk[n]
        if self._capture is None:
            self._open()
        if n >= self._next:  # ahead of the decoder: keep decoding forwards
            self._chunk = {}
            return self._decode({n}, n)[n]
        lo = max(0, t - self.chunk + 1)  # behind: the chunk of frames lo..t, decoded from a seek to lo
        wanted = set(self.frame_numbers[lo : t + 1])
        try:
            self._seek(self.frame_numbers[lo])
            self._chunk = self._decode(wanted, n)
        except _SeekMissed:
            print_log(f"{self.path}: OpenCV's seek is not frame-exact for this file; reading backwards by decoding "
                      f"from the start instead (slower)", logger="current", level=30)
            self._seek_ok = False
            self._open()
            self._chunk = self._decode(wanted, n)
        return self._chunk[n]

    def _seek(self, frame: int) -> None:
        """Position the decoder so that the next grab() decodes file frame ``frame``."""
        if frame > 0 and self._seek_ok:
            self._capture.set(self._cv2.CAP_PROP_POS_FRAMES, frame)
            if int(self._capture.get(self._cv2.CAP_PROP_POS_FRAMES)) == frame:
                self._next = frame
                return
            raise _SeekMissed
        self._open()

    def _decode(self, wanted: set[int], last: int) -> dict[int, Image.Image]:
        """Decode from the decoder's position through file frame ``last``, converting ``wanted``."""
        cv2, out = self._cv2, {}
        while self._next <= last:
            frame = self._next
            if not self._capture.grab():
                raise VideoEndedEarly(f"{self.path}: the video ends after {frame} frames, frame {last} was asked for",
                                      n_frames=frame)
            stamp = self._capture.get(cv2.CAP_PROP_POS_MSEC)
            if self._stamps.setdefault(frame, stamp) != stamp:
                raise _SeekMissed
            self._next += 1
            if frame in wanted:
                ok, bgr = self._capture.retrieve()
                if not ok:
                    raise DataError(f"{self.path}: cannot decode frame {frame}", reason="corrupt_video")
                image = Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                if image.size != self.size:
                    raise DataError(f"{self.path}: frame {frame} is {image.size[0]}x{image.size[1]}, the video "
                                    f"{self.size[0]}x{self.size[1]}", reason="size_mismatch")
                out[frame] = image
        return out


def open_video(path: str | os.PathLike) -> VideoFrames:
    """A folder of frames (sorted by name; names without the extension, so '00001.jpg' next to
    '00001.png' is a DataError) or a video file; nothing is decoded yet (a file is counted)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        files = sorted(n for n in os.listdir(path) if n.lower().endswith(FRAME_EXTENSIONS) and not is_hidden(n))
        if not files:
            raise DataError(f"{path}: no frames ({', '.join(FRAME_EXTENSIONS)}) in this folder", reason="empty_video")
        names = [os.path.splitext(n)[0] for n in files]
        seen: dict[str, str] = {}
        for name, file in zip(names, files):  # masks are written as <name>.png: one frame per name
            if name in seen:
                raise DataError(f"{os.path.join(path, seen[name])} and {os.path.join(path, file)}: two frames named "
                                f"'{name}' (their masks would overwrite each other); keep one",
                                reason="duplicate_frame")
            seen[name] = file
        return ImageFrames([os.path.join(path, n) for n in files], names=names)
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such video file or frame folder", reason="missing_image")
    if not path.lower().endswith(VIDEO_EXTENSIONS):
        raise DataError(f"{path}: not a frame folder or a video file ({', '.join(VIDEO_EXTENSIONS)})",
                        reason="corrupt_image")
    return VideoFileFrames(path)


class SamFrames:
    """SAM-2's input of every frame of a video, each made when asked (what the tracker reads).

    ``len(frames)`` frames; ``frames[t]`` is float32 (3, S, S), exactly the row ``t`` of
    ``SalmaDataset.sam_inputs`` over all frames (the same transform, one frame at a time).
    """

    def __init__(self, frames: VideoFrames, size: int, *, stats: str = "imagenet") -> None:
        self.frames = frames
        self.size = size
        self.stats = stats

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, t: int) -> torch.Tensor:
        if not 0 <= t < len(self.frames):
            raise IndexError(f"frame {t} of a {len(self.frames)}-frame video")
        return to_normalized_tensor(self.frames.image(t), self.size, stats=self.stats)  # (3, S, S)
