"""Reading annotation files safely: JSON as UTF-8, pickles through a restricted unpickler, and
checks on the shape of records and on ids and file names that become paths.

Every reader parses its files here, so a file that cannot be parsed is a :class:`DataError`
naming it (with the line / byte), whatever the locale, and a pickle never runs code: the refer
format (``refs(unc).p``) and some mask dicts are pickles by definition, but only plain
containers and scalars are rebuilt from them. Record-level checks (:func:`expect`,
:func:`safe_name`, :func:`safe_path`) raise ``DataError(reason='bad_record' | 'unsafe_id')``, which
a reader drops and counts with ``on_error='skip'``; a file-level error is raised at construction.
"""
from __future__ import annotations

import codecs
import json
import os
import pickle
import sys
from typing import Any

from .errors import DataError

# Only these are rebuilt from a pickle; all are built by opcodes, without find_class, except
# bytes in protocols 0-2, which Python 3 pickles as _codecs.encode(str, 'latin1').
PICKLE_TYPES = "dict, list, tuple, str, bytes, int, float, bool and None"


MAX_JSON_BYTES = 8 << 30  # annotation files reach GBs (MeViS's mask_dict.json); callers of small files pass less


def read_json(path: str, *, expect: type | None = None, what: str = "", max_bytes: int = MAX_JSON_BYTES,
              max_depth: int | None = None) -> Any:
    """Parse a UTF-8 JSON file; ``expect`` (``dict`` / ``list``) checks the top-level type.

    Raises DataError naming the file: missing, over ``max_bytes`` (checked before reading), not
    UTF-8 (byte offset), not JSON (line and column), nested deeper than ``max_depth`` (or than the
    parser can go), or of the wrong top-level type (``what`` describes the expected content).
    """
    try:
        size = os.path.getsize(path)
    except FileNotFoundError as err:
        raise DataError(f"{path}: file not found", reason="missing_file") from err
    if size > max_bytes:
        raise DataError(f"{path}: {size} bytes, more than the {max_bytes} allowed for this file", reason="bad_file")
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    try:
        text = data.decode("utf-8-sig")  # a BOM is not part of the JSON
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason})", reason="bad_file") from err
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON (line {err.lineno} column {err.colno}: {err.msg})",
                        reason="bad_file") from err
    except RecursionError as err:
        raise DataError(f"{path}: nested deeper than the JSON parser goes (about {sys.getrecursionlimit()} "
                        "levels)", reason="bad_file") from err
    if max_depth is not None and json_depth(value) > max_depth:
        raise DataError(f"{path}: nested deeper than {max_depth} levels", reason="bad_file")
    if expect is not None and not isinstance(value, expect):
        raise DataError(f"{path}: expected a JSON {_JSON_NAMES[expect]}{' ' + what if what else ''}, got "
                        f"{_type_name(value)}", reason="bad_file")
    return value


def json_depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar: 0, ``[1]``: 1), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children)
    return deepest


class _PlainUnpickler(pickle.Unpickler):
    """Refuses every global except ``_codecs.encode`` with latin-1 (protocol 0-2 bytes)."""

    def __init__(self, file, path: str) -> None:
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        raise DataError(f"{self.path}: forbidden object {module}.{name} in a pickle (only {PICKLE_TYPES} are "
                        f"allowed); the file was not loaded", reason="unsafe_pickle")

    def persistent_load(self, pid):
        raise DataError(f"{self.path}: forbidden persistent id in a pickle", reason="unsafe_pickle")


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    if encoding != "latin1" or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode({type(text).__name__}, {encoding!r}) is not a pickled bytes")
    return codecs.encode(text, "latin1")


def load_pickle(path: str) -> Any:
    """Unpickle plain data (``PICKLE_TYPES``); anything else, or a damaged file, is a DataError."""
    try:
        with open(path, "rb") as f:
            return _PlainUnpickler(f, path).load()
    except DataError:
        raise
    except FileNotFoundError as err:
        raise DataError(f"{path}: file not found", reason="missing_file") from err
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            UnicodeDecodeError, OverflowError, MemoryError) as err:
        raise DataError(f"{path}: cannot unpickle ({type(err).__name__}: {err})", reason="bad_file") from err


# ------------------------------------------------------------------ records
_JSON_NAMES = {dict: "object", list: "list", str: "string", int: "integer", float: "number", bool: "boolean"}


def _type_name(value: Any) -> str:
    return "None" if value is None else type(value).__name__


def expect(value: Any, kind: type | tuple[type, ...], *, where: str) -> Any:
    """``value`` if it is a ``kind`` (bool is not an int here), else DataError('bad_record').

    ``where`` names the file, the record and the field: ``"<file>: video v exp 0: anno_id"``.
    """
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds):
        return value
    names = " or ".join(f"{'an' if _JSON_NAMES.get(k, k.__name__)[0] in 'aeiou' else 'a'} "
                        f"{_JSON_NAMES.get(k, k.__name__)}" for k in kinds)
    raise DataError(f"{where}: expected {names}, got {_type_name(value)}", reason="bad_record")


def safe_name(value: Any, *, what: str, where: str) -> str:
    """An id used as a file or folder name (video id, expression id, frame name): a non-empty
    string without path separators, '..' or NUL, so it cannot point outside its folder."""
    if not isinstance(value, str) or not value or "/" in value or "\\" in value or ".." in value \
            or "\0" in value or (os.altsep and os.altsep in value):
        raise DataError(f"{where}: {what} '{value}' is not a plain name (it contains a path separator or '..', or is "
                        f"empty) and would be used as a path", reason="unsafe_id")
    return value


def safe_path(value: Any, *, what: str, where: str) -> str:
    """A file path relative to a data folder (SA-V's ``sav_000/sav_000001.mp4``, an image or video
    name): a non-empty string, not absolute, without a '..' part or NUL, so the joined path stays
    inside that folder. Subfolders are allowed, unlike :func:`safe_name`."""
    parts = value.replace("\\", "/").split("/") if isinstance(value, str) else []
    if not isinstance(value, str) or not value or os.path.isabs(value) or value.startswith(("/", "\\")) \
            or ".." in parts or "\0" in value or os.path.splitdrive(value)[0]:
        raise DataError(f"{where}: {what} '{value}' is not a path inside its folder (it is empty or absolute, or has a "
                        f"'..' part) and would be read from outside it", reason="unsafe_id")
    return value


_REQUIRED = object()


def field(record: Any, key: str, kind: type | tuple[type, ...], *, where: str, default: Any = _REQUIRED) -> Any:
    """``record[key]`` checked with :func:`expect` (``record`` must be a dict); a missing key is a
    DataError('bad_record') unless ``default`` is given."""
    expect(record, dict, where=where)
    if key not in record:
        if default is _REQUIRED:
            raise DataError(f"{where}: no '{key}'", reason="bad_record")
        return default
    return expect(record[key], kind, where=f"{where}: {key}")
