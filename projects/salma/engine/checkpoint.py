"""Let mmengine 0.10.7 resume under torch's ``weights_only=True`` default, safely.

mmengine's ``load_from_local`` calls ``torch.load(filename, map_location=...)`` and predates
torch 2.6, where ``weights_only`` became True: its own checkpoints then fail to load because they
pickle a few mmengine/numpy objects (the message hub's history buffers, config dicts, numpy
scalars such as the logged ``eta``, the numpy generator state of :class:`RNGStateHook`). Rather
than loading arbitrary pickles (``weights_only=False``), we keep the safe unpickler and allow
exactly the classes mmengine writes. This is the one place.

One of them is not a class: a ``HistoryBuffer`` pickles its statistics methods as
``getattr(HistoryBuffer, 'mean')`` (protocol 2 has no nested names). Allowing the real
``getattr`` would let a checkpoint reach any attribute of any allowed object (and from there
``__globals__`` and ``eval``), so ``builtins.getattr`` is bound to :func:`_history_buffer_getattr`,
which hands out only those four methods.
"""
from __future__ import annotations

import codecs
import pickle
from collections import OrderedDict, defaultdict

import numpy as np
import torch

_REGISTERED = False
_HISTORY_BUFFER_METHODS = ("min", "max", "current", "mean")


def _history_buffer_getattr(obj, name: str):
    """``getattr`` as the safe unpickler sees it: only ``HistoryBuffer``'s statistics methods."""
    from mmengine.logging.history_buffer import HistoryBuffer

    if obj is HistoryBuffer and name in _HISTORY_BUFFER_METHODS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(f"checkpoint asks for getattr({obj!r}, {name!r}); only HistoryBuffer's "
                                 f"{', '.join(_HISTORY_BUFFER_METHODS)} are allowed")


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
        np._core.multiarray.scalar,  # numpy scalars (the message hub's 'eta')
        np.dtypes.Float64DType,
        np.dtypes.Float32DType,
        np.dtypes.Int64DType,
        np.dtypes.UInt32DType,
        np.dtypes.BoolDType,
        np.float64,
        np.float32,
        np.int64,
        (_history_buffer_getattr, "builtins.getattr"),
    ]


def allow_mmengine_checkpoints() -> None:
    """Register mmengine's checkpoint types with torch's safe unpickler (idempotent)."""
    global _REGISTERED
    if not _REGISTERED:
        torch.serialization.add_safe_globals(mmengine_checkpoint_globals())
        _REGISTERED = True
