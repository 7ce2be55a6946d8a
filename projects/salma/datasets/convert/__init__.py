"""Converters from datasets as they are downloaded, and from your own files, to the layouts the
readers take (MeViS for videos, RefCOCO for images). Thin CLIs: ``tools/data/convert_*.py``.

Each converter checks every record first and names each bad one (file, line or key, object); by
default nothing is written while one is left (``on_error='skip'`` leaves them out and lists them).
"""
from .common import ConversionError, sa2va_anno_ids
from .own_data import convert_own_data
from .ref_davis17 import convert_ref_davis17
from .ref_ytvos import convert_ref_ytvos

__all__ = ["ConversionError", "sa2va_anno_ids", "convert_own_data", "convert_ref_davis17", "convert_ref_ytvos"]
