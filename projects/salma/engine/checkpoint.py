"""Let mmengine 0.10.7 resume under torch's ``weights_only=True`` default, safely.

mmengine's ``load_from_local`` calls ``torch.load(filename, map_location=...)`` and predates
torch 2.6, where ``weights_only`` became True: its own checkpoints then fail to load because they
pickle a few mmengine/numpy objects (the message hub's history buffers, config dicts, numpy
scalars from the RNG state). Rather than loading arbitrary pickles (``weights_only=False``), we
keep the safe unpickler and allow exactly the classes mmengine writes. This is the one place.
"""
from __future__ import annotations

import codecs
from collections import OrderedDict, defaultdict

import numpy as np
import torch

_REGISTERED = False


def mmengine_checkpoint_globals() -> list:
    """The non-tensor types found in checkpoints written by mmengine's Runner."""
    from mmengine.config.config import ConfigDict
    from mmengine.logging.history_buffer import HistoryBuffer

    return [
        HistoryBuffer,
        ConfigDict,
        OrderedDict,
        defaultdict,
        codecs.encode,  # how numpy arrays of bytes are pickled
        np.ndarray,
        np.dtype,
        np._core.multiarray._reconstruct,
        np.dtypes.Float64DType,
        np.dtypes.Float32DType,
        np.dtypes.Int64DType,
        np.dtypes.UInt32DType,
        np.dtypes.BoolDType,
        np.float64,
        np.float32,
        np.int64,
    ]


def allow_mmengine_checkpoints() -> None:
    """Register mmengine's checkpoint types with torch's safe unpickler (idempotent)."""
    global _REGISTERED
    if not _REGISTERED:
        torch.serialization.add_safe_globals(mmengine_checkpoint_globals())
        _REGISTERED = True
