"""Files that are complete or absent, and files that are what their folder says they are.

* :func:`atomic_path`: write a file under a temporary name in its folder, flush it to disk, then
  ``os.replace`` it onto the real name. A kill at any moment leaves the old file or the new one,
  never a stub (checkpoints, ``last_checkpoint``, evaluation results, exports).
* :func:`regular_file`: a weight or data file must be a regular file inside its folder; a symlink
  that leads out of the folder is refused by name instead of followed (the error would otherwise
  blame the file it points at).

Nothing here imports the rest of the package: every layer may use it.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from typing import Iterator

TEMP_PREFIX = ".tmp-"  # temporary files start with a dot: no reader or checkpoint search picks them up


def fsync_path(path: str) -> None:
    """Flush ``path`` (a file, or a folder: its entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: str) -> None:
    if os.path.isdir(path):
        for root, _, files in os.walk(path):
            for name in files:
                fsync_path(os.path.join(root, name))
            fsync_path(root)
    else:
        fsync_path(path)


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path beside ``path``; when the block ends without an error, what was
    written there (a file or a folder) is flushed and renamed onto ``path``. On an error the
    temporary is removed and ``path`` is untouched."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{os.path.basename(path)}.", dir=folder)
    os.close(fd)
    os.remove(tmp)  # the writer creates it (a file or a folder)
    try:
        yield tmp
        _fsync_tree(tmp)
        if os.path.isdir(tmp) and os.path.isdir(path):
            _remove(path)  # os.replace cannot put a folder over a non-empty one
        os.replace(tmp, path)
        fsync_path(folder)  # the rename itself
    finally:
        if os.path.lexists(tmp):
            _remove(tmp)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.remove(path)


def write_text_atomic(path: str, text: str) -> None:
    """``path`` holds ``text`` (UTF-8) or its previous content, whatever happens meanwhile."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def regular_file(path: str, *, folder: str | None = None, what: str = "file") -> str:
    """``path`` if it is a regular file whose real location is inside ``folder`` (default: the
    folder it is named in); else ValueError naming it. A symlink between files of the same folder
    is allowed, one out of it is not (it would read, or be blamed for, a file elsewhere)."""
    folder = os.path.dirname(os.path.abspath(path)) if folder is None else folder
    try:
        info = os.stat(path)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{path}: {what} not found") from err
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{path}: the {what} is not a regular file")
    real, root = os.path.realpath(path), os.path.realpath(folder)
    if os.path.commonpath([real, root]) != root:
        raise ValueError(f"{path}: the {what} is a symlink to {real}, outside {folder}; copy the file into the "
                         "folder instead of linking it")
    return path
