"""Bad-data policy: one exception type that names the file and the key, and skip counters.

Every reader raises :class:`DataError` for a problem in the data (missing or corrupt image, an RLE
whose size disagrees with its frame, a dangling ``anno_id``, an expression without object, an
empty video, a conversation that cannot fit ``max_length``). With ``on_error='raise'`` (default)
it propagates; with ``on_error='skip'`` the reader drops the item and counts it under
``DataError.reason``: nothing is substituted silently and nothing is retried without bound.
"""
from __future__ import annotations

from collections import Counter

from mmengine.logging import MMLogger

ON_ERROR_CHOICES = ("raise", "skip")


class DataError(ValueError):
    """A problem in the data; the message names the file and the key or id.

    Args:
        message: human-readable text, starting with the offending file.
        reason: short machine key under which a skip is counted (``'missing_image'``, ...).
    """

    def __init__(self, message: str, *, reason: str = "bad_data") -> None:
        super().__init__(message)
        self.reason = reason


def check_on_error(on_error: str) -> str:
    if on_error not in ON_ERROR_CHOICES:
        raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
    return on_error


class SkipLog:
    """Counts skips per reason and logs each one through mmengine's logger.

    ``index`` counts items dropped while the index is built (main process, exact);
    ``runtime`` counts items skipped in ``__getitem__`` in *this* process (with DataLoader
    workers these happen in the workers: each returned sample also carries its own skips in
    ``meta['skipped']``, which :class:`DataSkipLoggerHook` adds up).
    """

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.index: Counter[str] = Counter()
        self.runtime: Counter[str] = Counter()

    def record(self, err: DataError, *, at_index_build: bool) -> None:
        (self.index if at_index_build else self.runtime)[err.reason] += 1
        where = "index build" if at_index_build else "__getitem__"
        MMLogger.get_current_instance().warning(f"{self.owner}: skipped at {where} ({err.reason}): {err}")

    def totals(self) -> dict[str, int]:
        return dict(self.index + self.runtime)
