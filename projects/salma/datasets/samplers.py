"""Length-grouped sampling: batches of similar token length (less padding), one modality each.

Like LLaVA / xtuner's LengthGroupedSampler: shuffle, cut into groups of ``mega_batch_mult`` world
batches, sort each group by length, cut it into world batches (``per_device_batch_size`` x world
size), shuffle the batches; with ``group_by_modality`` the multimodal (length > 0) and text-only
(length < 0) samples never share a batch. Deterministic in (seed, epoch); follows mmengine's
DefaultSampler conventions (``set_epoch``, ``round_up``, rank ``r`` takes ``indices[r::world]``,
so each rank's batch comes from the same world batch).

Resuming in the middle of an epoch (:class:`~projects.salma.engine.loops.ResumableEpochBasedTrainLoop`)
needs the rest of that epoch's order without loading the part already trained on. So
:class:`LengthGroupedSampler` and :class:`ResumableDefaultSampler` (mmengine's DefaultSampler, same
order) take ``skip(num_samples)``, which drops the first ``num_samples`` of this rank's indices from
the next ``__iter__`` only. The order itself is unchanged: it depends on (seed, epoch) alone.
"""
from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch
from mmengine.dataset import DefaultSampler
from mmengine.dist import get_dist_info, sync_random_seed
from torch.utils.data import Sampler

from ..registry import DATA_SAMPLERS


def length_grouped_indices(lengths: Sequence[int], batch_size: int, group_size: int,
                           generator: torch.Generator, group_by_modality: bool = True) -> list[int]:
    """All indices, in batches of ``batch_size`` with similar |length| (incomplete ones last)."""
    perm = torch.randperm(len(lengths), generator=generator).tolist()
    pools = ([[i for i in perm if lengths[i] > 0], [i for i in perm if lengths[i] <= 0]]
             if group_by_modality else [perm])
    full, tails = [], []
    for pool in pools:
        batches = []
        for g in range(0, len(pool), group_size):
            group = sorted(pool[g: g + group_size], key=lambda i: abs(lengths[i]), reverse=True)
            batches += [group[b: b + batch_size] for b in range(0, len(group), batch_size)]
        full += [b for b in batches if len(b) == batch_size]
        tails += [i for b in batches if len(b) < batch_size for i in b]
    order = torch.randperm(len(full), generator=generator).tolist()
    return [i for k in order for i in full[k]] + tails


def dist_info(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """(rank, world size): the given ones (tests, tools that shard by hand) or the process group's."""
    if rank is None and world_size is None:
        return get_dist_info()
    if rank is None or world_size is None:
        raise ValueError("give both rank and world_size, or neither (then the process group's are used)")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    return rank, world_size


def shard_sizes(dataset_len: int, rank: int, world_size: int, round_up: bool) -> tuple[int, int]:
    """(samples on this rank, total size) as mmengine's DefaultSampler computes them."""
    if round_up:
        num_samples = math.ceil(dataset_len / world_size)
        return num_samples, num_samples * world_size
    return math.ceil((dataset_len - rank) / world_size), dataset_len


class SkipMixin:
    """``skip(n)``: the next ``__iter__`` starts at this rank's ``n``-th index (then back to 0).

    Used by the resumable train loop to start an epoch at batch ``k`` without loading batches
    ``0..k-1``: every rank has trained on ``k * batch_size`` of its own indices, so each skips that
    many of its own. ``__len__`` is what the next ``__iter__`` yields, so a DataLoader built on
    the sampler reports the batches left while a skip is pending and a full epoch otherwise.
    Subclasses call :meth:`_apply_skip` on this rank's index list and define ``num_samples``.
    """

    num_samples: int
    _skip = 0

    def skip(self, num_samples: int) -> None:
        if num_samples < 0:
            raise ValueError(f"cannot skip a negative number of samples ({num_samples})")
        self._skip = int(num_samples)

    def _apply_skip(self, indices: list[int]) -> Iterator[int]:
        skip, self._skip = self._skip, 0
        return iter(indices[skip:])

    def __len__(self) -> int:
        return max(0, self.num_samples - self._skip)


@DATA_SAMPLERS.register_module()
class ResumableDefaultSampler(SkipMixin, DefaultSampler):
    """mmengine's DefaultSampler (same order for the same seed and epoch) that can ``skip``.

    Args: those of DefaultSampler, plus ``rank`` / ``world_size`` (default: the process group's).
    """

    def __init__(self, dataset, shuffle: bool = True, seed: int | None = None, round_up: bool = True,
                 rank: int | None = None, world_size: int | None = None) -> None:
        super().__init__(dataset, shuffle=shuffle, seed=seed, round_up=round_up)
        self.rank, self.world_size = dist_info(rank, world_size)
        self.num_samples, self.total_size = shard_sizes(len(dataset), self.rank, self.world_size, round_up)

    def __iter__(self) -> Iterator[int]:
        return self._apply_skip(list(super().__iter__()))


@DATA_SAMPLERS.register_module()
class LengthGroupedSampler(SkipMixin, Sampler):
    """Sampler over a dataset exposing ``modality_lengths`` (or ``length_property``).

    Args:
        dataset: the dataset (e.g. a :class:`DatasetMix`).
        per_device_batch_size: the dataloader's batch size.
        mega_batch_mult: world batches per sorted group (default: min(len / (4 world batch), 50)).
        length_property: attribute holding one length per item (> 0 multimodal, < 0 text-only).
        group_by_modality: keep multimodal and text-only samples in separate batches.
        seed: shuffling seed (None: a random seed shared by all ranks, as DefaultSampler).
        round_up: pad the index list so every rank gets the same number of samples.
        rank, world_size: this process's place (default: the process group's).
    """

    def __init__(self, dataset, per_device_batch_size: int, mega_batch_mult: int | None = None,
                 length_property: str = "modality_lengths", group_by_modality: bool = True,
                 seed: int | None = None, round_up: bool = True, rank: int | None = None,
                 world_size: int | None = None) -> None:
        self.rank, self.world_size = dist_info(rank, world_size)
        self.dataset = dataset
        self.seed = sync_random_seed() if seed is None else seed
        self.epoch = 0
        self.round_up = round_up
        self.group_by_modality = group_by_modality
        self.lengths = list(getattr(dataset, length_property))
        if len(self.lengths) != len(dataset):
            raise ValueError(f"{length_property} has {len(self.lengths)} entries for {len(dataset)} items")
        self.batch_size = per_device_batch_size * self.world_size
        if mega_batch_mult is None:
            mega_batch_mult = max(1, min(len(dataset) // (self.batch_size * 4), 50))
        self.group_size = mega_batch_mult * self.batch_size
        self.num_samples, self.total_size = shard_sizes(len(dataset), self.rank, self.world_size, round_up)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        indices = length_grouped_indices(self.lengths, self.batch_size, self.group_size, generator,
                                         self.group_by_modality)
        if self.round_up and indices:
            indices = (indices * math.ceil(self.total_size / len(indices)))[: self.total_size]
        return self._apply_skip(indices[self.rank: self.total_size: self.world_size])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
