"""Log the data skips of each training epoch (``on_error='skip'`` must never hide a problem).

Index-build skips are read from the train dataset (counted in the main process); ``__getitem__``
skips are summed from ``meta['skipped']`` of the batches, which is exact with DataLoader workers.
The ``salma`` HOOKS registry finds it by name (its locations include this package).
"""
from __future__ import annotations

from collections import Counter

from mmengine.hooks import Hook

from ..registry import HOOKS


@HOOKS.register_module()
class DataSkipLoggerHook(Hook):
    """Counts skipped items per (dataset, reason) and logs them after each train epoch."""

    priority = "LOW"

    def __init__(self) -> None:
        self._runtime: Counter[tuple[str, str]] = Counter()

    def before_train_epoch(self, runner) -> None:
        self._runtime.clear()

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        data = (data_batch or {}).get("data") if isinstance(data_batch, dict) else None
        for meta in (data or {}).get("meta") or ():
            for reason, n in (meta.get("skipped") or {}).items():
                self._runtime[(meta.get("dataset", "?"), reason)] += n

    def after_train_epoch(self, runner) -> None:
        dataset = runner.train_dataloader.dataset
        index_counts = getattr(dataset, "index_skip_counts", {})
        if index_counts and not isinstance(next(iter(index_counts.values())), dict):
            index_counts = {getattr(dataset, "name", type(dataset).__name__): index_counts}
        runtime = {f"{d}/{r}": n for (d, r), n in sorted(self._runtime.items())}
        index = {f"{d}/{r}": n for d, counts in sorted(index_counts.items()) for r, n in sorted(counts.items())}
        runner.logger.info(f"Epoch {runner.epoch}: data skipped at index build {index or 'none'}; "
                           f"in __getitem__ {runtime or 'none'}")
        for key, n in {**{f"index/{k}": v for k, v in index.items()},
                       **{f"getitem/{k}": v for k, v in runtime.items()}}.items():
            runner.message_hub.update_scalar(f"data_skips/{key}", n)
