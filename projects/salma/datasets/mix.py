"""A training mix: several readers concatenated, each repeated a number of times (docs/design.md, "Training mix").

Index ``i`` maps to (reader d, local index j, repeat r); readers derived from
:class:`SalmaDataset` get ``r`` so repeated copies draw different frames / expressions / templates.
"""
from __future__ import annotations

import bisect
from typing import Sequence

from torch.utils.data import Dataset

from ..registry import DATASETS
from .base import SalmaDataset


@DATASETS.register_module()
class DatasetMix(Dataset):
    """Concatenation with per-dataset repeats.

    Args:
        datasets: dataset config dicts (built through ``DATASETS``) or datasets.
        repeats: one non-negative int per dataset (default 1 each; 0 leaves a dataset out).
    """

    def __init__(self, datasets: Sequence[dict | Dataset], repeats: Sequence[int] | None = None) -> None:
        self.datasets = [DATASETS.build(d) if isinstance(d, dict) else d for d in datasets]
        self.repeats = [1] * len(self.datasets) if repeats is None else [int(r) for r in repeats]
        if len(self.repeats) != len(self.datasets) or any(r < 0 for r in self.repeats):
            raise ValueError(f"need one non-negative repeat per dataset, got {list(repeats or [])} "
                             f"for {len(self.datasets)} datasets")
        self.cumulative_sizes: list[int] = []
        total = 0
        for d, r in zip(self.datasets, self.repeats):
            total += len(d) * r
            self.cumulative_sizes.append(total)

    def __len__(self) -> int:
        return self.cumulative_sizes[-1] if self.cumulative_sizes else 0

    def locate(self, index: int) -> tuple[int, int, int]:
        """(dataset index, local index, repeat) of global ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range ({len(self)} items)")
        d = bisect.bisect_right(self.cumulative_sizes, index)
        offset = index - (self.cumulative_sizes[d - 1] if d else 0)
        return d, offset % len(self.datasets[d]), offset // len(self.datasets[d])

    def __getitem__(self, index: int) -> dict:
        d, local, repeat = self.locate(index)
        dataset = self.datasets[d]
        return dataset.get_sample(local, repeat) if isinstance(dataset, SalmaDataset) else dataset[local]

    @property
    def modality_lengths(self) -> list[int]:
        out: list[int] = []
        for d, r in zip(self.datasets, self.repeats):
            out += list(getattr(d, "modality_lengths", [1] * len(d))) * r
        return out

    @property
    def lengths(self) -> list[int]:
        return [abs(n) for n in self.modality_lengths]

    def _names(self) -> list[str]:
        names = [getattr(d, "name", type(d).__name__) for d in self.datasets]
        return [n if names.count(n) == 1 else f"{n}#{i}" for i, n in enumerate(names)]

    @property
    def skip_counts(self) -> dict[str, dict[str, int]]:
        """Per dataset name: skips per reason counted in this process (index build + __getitem__)."""
        return {n: dict(getattr(d, "skip_counts", {})) for n, d in zip(self._names(), self.datasets)}

    @property
    def index_skip_counts(self) -> dict[str, dict[str, int]]:
        """Per dataset name: entries dropped while building the index."""
        return {n: dict(getattr(d, "index_skip_counts", {})) for n, d in zip(self._names(), self.datasets)}
