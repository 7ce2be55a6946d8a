"""Content fingerprints: is a stored result, or a weight file, still what it claims to be?

* :func:`file_digest`: BLAKE2b of a file's bytes, for checkpoints and exported weights (a path says
  nothing about what is in the file today).
* :func:`digest`: BLAKE2b of a JSON-able value in canonical form (sorted keys), for annotation
  records and configs.
* :func:`file_signature`: size and modification time of a file, for the images and frames an
  evaluation item reads (hashing every frame of a benchmark would cost about as much as reading
  it for the prediction; a changed, replaced or touched file changes its signature).
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any

HASH = "blake2b"


def file_digest(path: str, *, chunk_size: int = 1 << 22) -> str:
    """Hex BLAKE2b (64-byte digest) of the file's contents, read in ``chunk_size`` pieces."""
    h = hashlib.blake2b()
    with open(path, "rb") as f:
        buf = bytearray(chunk_size)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def _canonical(obj: Any) -> str:
    """Stable text of objects json cannot write (callables by name, never by address)."""
    if callable(obj) and hasattr(obj, "__qualname__"):
        return f"{getattr(obj, '__module__', '')}.{obj.__qualname__}"
    return obj.to_dict() if hasattr(obj, "to_dict") else str(obj)


def digest(value: Any) -> str:
    """Hex BLAKE2b (16-byte digest) of ``value`` as canonical JSON (sorted keys, tuples as lists)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=_canonical)
    return hashlib.blake2b(text.encode("ascii"), digest_size=16).hexdigest()


def file_signature(path: str) -> list[int] | None:
    """[size in bytes, modification time in ns] of ``path`` (following links); None if it is missing."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return [st.st_size, st.st_mtime_ns]
