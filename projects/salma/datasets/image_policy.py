"""One input policy for every image the project decodes: readers, ``tools/infer.py``,
``SALMAModel.predict`` and the web demo (single images and zipped frames).

* **Pixel budget.** The size is read from the file's header and checked before any pixel is
  decoded: a 196-byte PNG can claim 40000x40000 (4.8 GB of RGB). Default :data:`DEFAULT_MAX_PIXELS`
  (2^26, e.g. 8192x8192); ``SALMA_MAX_IMAGE_PIXELS`` in the environment or :func:`set_max_pixels`
  (``--max-pixels`` of ``tools/infer.py`` and ``tools/app.py``) change it. Over it: a DataError
  ``reason='too_large'`` naming the file and its size, which a reader with ``on_error='skip'`` counts.
* **Modes.** 16-bit grey (``I;16*``, ``I``) is scaled to 8 bits (PIL's ``convert('RGB')`` clips it:
  an all-white image); alpha (RGBA, LA, PA, palette with transparency) is composited over white,
  as ``transformers.image_transforms.convert_to_rgb`` does; CMYK, YCbCr, palette, 1-bit are
  converted by PIL; anything else (float ``F``, LAB, HSV, multi-band 16-bit) is refused by name.
* **Orientation.** Inference inputs (``orient=True``) are turned upright by their EXIF orientation,
  as every viewer shows them, and masks come back in that frame. Dataset readers keep the stored
  pixels (``orient=False``): annotations are drawn on those, as Sa2VA's readers read them.
* **Hidden files.** :func:`is_hidden` (``._*`` AppleDouble, ``.DS_Store``, ``Thumbs.db``, ...) is what
  the frame-folder reader and the demo's zip reader both skip.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import DataError

DEFAULT_MAX_PIXELS = 1 << 26
ENV_MAX_PIXELS = "SALMA_MAX_IMAGE_PIXELS"
_PIL_LIMIT = Image.MAX_IMAGE_PIXELS  # PIL's own bomb check (warns above, raises above twice this)
_max_pixels: int | None = None
_CONVERTED = {"1", "L", "P", "RGB", "RGBA", "RGBX", "RGBa", "LA", "La", "PA", "CMYK", "YCbCr",
              "I", "I;16", "I;16B", "I;16L", "I;16N"}
_HIDDEN_NAMES = {"thumbs.db", "desktop.ini", "__macosx"}


def max_pixels() -> int:
    """The pixel budget now: :func:`set_max_pixels`, else the environment, else the default."""
    if _max_pixels is not None:
        return _max_pixels
    value = os.environ.get(ENV_MAX_PIXELS)
    if value is None:
        return DEFAULT_MAX_PIXELS
    if not value.isdigit() or int(value) <= 0:
        raise ValueError(f"{ENV_MAX_PIXELS}={value!r}: expected a positive number of pixels")
    return int(value)


def set_max_pixels(value: int | None) -> None:
    """Set the process's pixel budget (None: back to the environment / default). PIL's own bomb
    check is raised along with it, so the budget is the one limit."""
    global _max_pixels
    if value is not None and (not isinstance(value, int) or value <= 0):
        raise ValueError(f"max_pixels must be a positive integer, got {value!r}")
    _max_pixels = value
    Image.MAX_IMAGE_PIXELS = max(_PIL_LIMIT, max_pixels())


def check_pixels(width: int, height: int, where: str) -> None:
    """DataError('too_large') naming ``where`` if a ``width`` x ``height`` image is over the budget."""
    budget = max_pixels()
    if width * height > budget:
        raise DataError(f"{where}: image of {width}x{height} = {width * height} pixels is over the pixel budget of "
                        f"{budget} (set {ENV_MAX_PIXELS}, or --max-pixels, to allow it)", reason="too_large")


def bomb_error(err: Exception, where: str) -> DataError:
    """PIL's own DecompressionBombError (raised while opening, above twice its limit, so before
    :func:`check_pixels` sees the size) as the budget's DataError, with the pixel count PIL read."""
    found = re.search(r"\((\d+) pixels\)", str(err))
    count = f"{found.group(1)} pixels" if found else "more pixels than PIL allows"
    return DataError(f"{where}: image of {count} is over the pixel budget of {max_pixels()} (set {ENV_MAX_PIXELS}, "
                     "or --max-pixels, to allow it)", reason="too_large")


def is_hidden(name: str) -> bool:
    """A file no frame folder means as a frame: dot files (``._*``, ``.DS_Store``) and OS litter."""
    base = os.path.basename(name.rstrip("/"))
    return base.startswith(".") or base.lower() in _HIDDEN_NAMES


def to_rgb(image: Image.Image, where: str) -> Image.Image:
    """An 8-bit RGB copy of ``image`` (see the module text for each mode), or DataError naming ``where``."""
    mode = image.mode
    if mode not in _CONVERTED:
        raise DataError(f"{where}: image mode {mode!r} is not supported (8/16-bit grey, palette, RGB(A), CMYK, "
                        "YCbCr are); convert it to 8-bit RGB", reason="bad_image_mode")
    if mode.startswith("I"):
        values = np.asarray(image)
        if values.min() < 0 or values.max() > 65535:
            raise DataError(f"{where}: {mode!r} image with values outside 0..65535 is not a 16-bit image",
                            reason="bad_image_mode")
        grey = (values.astype(np.uint32) * 255 + 32767) // 65535  # 0..65535 -> 0..255, rounded
        return Image.fromarray(grey.astype(np.uint8), mode="L").convert("RGB")
    if mode in ("RGBA", "RGBa", "LA", "La", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


@contextlib.contextmanager
def decode_errors(where: str) -> Iterator[None]:
    """PIL's failures inside the block as the DataErrors every reader reports, naming ``where``:
    a missing file, an image over the budget, a file that is not a decodable image."""
    try:
        yield
    except DataError:
        raise
    except FileNotFoundError as err:
        raise DataError(f"{where}: image file not found", reason="missing_image") from err
    except Image.DecompressionBombError as err:
        raise bomb_error(err, where) from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{where}: cannot decode image ({err})", reason="corrupt_image") from err


def open_image(source: str | bytes, *, where: str | None = None, orient: bool = False) -> Image.Image:
    """Decode an image file (path) or its bytes as 8-bit RGB under the policy; every failure is a
    DataError naming ``where`` (default: the path)."""
    where = where or (source if isinstance(source, str) else "image")
    with decode_errors(where), Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
        check_pixels(*image.size, where)
        image.load()
        if orient:
            image = ImageOps.exif_transpose(image)
        return to_rgb(image, where)
