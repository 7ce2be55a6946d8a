"""Length-grouped sampling: batches of similar token length (less padding), one modality each.

Like LLaVA / xtuner's LengthGroupedSampler: shuffle, cut into groups of ``mega_batch_mult`` world
batches, sort each group by length, cut it into world batches (``per_device_batch_size`` x world
size), shuffle the batches; with ``group_by_modality`` the multimodal (length > 0) and text-only
(length < 0) samples never share a batch. Deterministic in (seed, epoch); follows mmengine's
DefaultSampler conventions (``set_epoch``, ``round_up``, rank ``r`` takes ``indices[r::world]``,
so each rank's batch comes from the same world batch).
"""
from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch
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


@DATA_SAMPLERS.register_module()
class LengthGroupedSampler(Sampler):
    """Sampler over a dataset exposing ``modality_lengths`` (or ``length_property``).

    Args:
        dataset: the dataset (e.g. a :class:`DatasetMix`).
        per_device_batch_size: the dataloader's batch size.
        mega_batch_mult: world batches per sorted group (default: min(len / (4 world batch), 50)).
        length_property: attribute holding one length per item (> 0 multimodal, < 0 text-only).
        group_by_modality: keep multimodal and text-only samples in separate batches.
        seed: shuffling seed (None: a random seed shared by all ranks, as DefaultSampler).
        round_up: pad the index list so every rank gets the same number of samples.
    """

    def __init__(self, dataset, per_device_batch_size: int, mega_batch_mult: int | None = None,
                 length_property: str = "modality_lengths", group_by_modality: bool = True,
                 seed: int | None = None, round_up: bool = True) -> None:
        self.rank, self.world_size = get_dist_info()
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
        if round_up:
            self.num_samples = math.ceil(len(dataset) / self.world_size)
            self.total_size = self.num_samples * self.world_size
        else:
            self.num_samples = math.ceil((len(dataset) - self.rank) / self.world_size)
            self.total_size = len(dataset)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        indices = length_grouped_indices(self.lengths, self.batch_size, self.group_size, generator,
                                         self.group_by_modality)
        if self.round_up and indices:
            indices = (indices * math.ceil(self.total_size / len(indices)))[: self.total_size]
        return iter(indices[self.rank: self.total_size: self.world_size])

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
