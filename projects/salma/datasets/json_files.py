"""Reading an annotation json: utf-8, and a DataError that names the file when it is missing or broken.

The readers of issue 12 (Osprey, video QA, SA-V, Flickr GCG) parse their files through this one
function so a shared parsing helper can replace it in one place.
"""
from __future__ import annotations

import json
from typing import Any

from .errors import DataError


def read_json(path: str) -> Any:
    """The parsed json at ``path`` (utf-8)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError as err:
        raise DataError(f"{path}: annotation file not found", reason="missing_file") from err
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a valid utf-8 json file ({err})", reason="corrupt_file") from err
