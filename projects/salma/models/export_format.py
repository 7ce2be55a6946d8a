"""The names of an exported folder and its config.json reader, below everything that builds or
checks a model from it (``pretrained`` reads them while a training model is built)."""
from __future__ import annotations

import os

from ..datasets.io import read_json
from ..fingerprint import HASH, file_digest
from ..safe_io import regular_file

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_KEY = "weights"  # config.json: {"file", "bytes", "blake2b"} of model.safetensors
CONFIG_MAX_BYTES, CONFIG_MAX_DEPTH = 16 << 20, 32  # an exported config.json is a few kB, nested ~6 deep


def read_config(folder: str) -> dict:
    """The raw config.json of an exported folder (UTF-8 JSON object; errors name the file)."""
    path = os.path.join(folder, CONFIG_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{folder}: no {CONFIG_NAME} (not an exported SALMA folder)")
    regular_file(path, what="config file")
    return read_json(path, expect=dict, max_bytes=CONFIG_MAX_BYTES, max_depth=CONFIG_MAX_DEPTH)


# ------------------------------------------------------------------ model.safetensors
def weights_record(path: str) -> dict:
    """What ``config.json`` records about the weight file: name, size and content hash."""
    return {"file": os.path.basename(path), "bytes": os.path.getsize(path), HASH: file_digest(path)}


def check_weights_file(path: str, record: dict | None, *, config_path: str) -> None:
    """Raise ValueError naming ``path`` unless it has the size and hash ``config_path`` recorded."""
    if not isinstance(record, dict) or not isinstance(record.get(HASH), str):
        raise ValueError(f"{config_path}: no '{HASH}' hash of {os.path.basename(path)} (exported before hashes were "
                         f"recorded?); re-export, or load with verify_weights=False to skip the check")
    size = os.path.getsize(path)
    if size != record.get("bytes"):
        raise ValueError(f"{path}: {size} bytes, but {config_path} records {record.get('bytes')}: the file is "
                         f"truncated or was replaced after export")
    found = file_digest(path)
    if found != record[HASH]:
        raise ValueError(f"{path}: content hash {HASH} {found[:16]}... does not match {record[HASH][:16]}... recorded "
                         f"in {config_path}: the file changed after export (damaged or partial copy); copy or "
                         f"export it again (verify_weights=False loads it anyway)")
