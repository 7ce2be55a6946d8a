"""An epoch-based train loop that resumes in the middle of an epoch where it stopped.

SALMA-1B trains one epoch and checkpoints every N iterations. mmengine 0.10.7's
``EpochBasedTrainLoop`` restores ``iter`` and ``epoch`` on resume but then iterates the epoch's
DataLoader from batch 0: the resumed run trains again on the batches before the checkpoint and
ends past ``max_iters``, beyond the end of the lr schedule. ``IterBasedTrainLoop`` does resume at
the right batch, but by loading and discarding every batch before it (the whole data pipeline,
image decoding included, for nothing).

:class:`ResumableEpochBasedTrainLoop` starts the resumed epoch at batch
``k = iter - epoch * len(dataloader)`` by asking the sampler to ``skip`` the first
``k * batch_size`` indices of this rank's order for the epoch (the same order as the
uninterrupted run: the samplers seed by (seed, epoch) and ``DistSamplerSeedHook`` sets the epoch),
so skipped items are never loaded, and hooks see the same ``batch_idx`` as in that run. Random
draws are made equal by :class:`~projects.salma.engine.hooks.RNGStateHook`.
"""
from __future__ import annotations

import logging

import torch
from mmengine.logging import print_log
from mmengine.runner import EpochBasedTrainLoop
from torch.utils.data import BatchSampler

from ..registry import LOOPS


@LOOPS.register_module()
class ResumableEpochBasedTrainLoop(EpochBasedTrainLoop):
    """``EpochBasedTrainLoop`` (same arguments) that resumes mid-epoch without replaying data.

    The train sampler must have ``skip(num_samples)`` (``LengthGroupedSampler``,
    ``ResumableDefaultSampler``) and the DataLoader its default batching (``batch_size``, no custom
    ``batch_sampler``), so that ``k`` batches are exactly ``k * batch_size`` indices of each rank.
    Both are checked when the loop is built, not at the first resume days later.
    """

    def __init__(self, runner, dataloader, max_epochs: int, **kwargs) -> None:
        super().__init__(runner, dataloader, max_epochs, **kwargs)
        sampler = getattr(self.dataloader, "sampler", None)
        if not callable(getattr(sampler, "skip", None)):
            raise TypeError(
                f"{type(self).__name__} resumes mid-epoch by skipping sampler indices, but the train sampler "
                f"{type(sampler).__name__} has no skip(num_samples); use LengthGroupedSampler or "
                "ResumableDefaultSampler (DefaultSampler with skip), or EpochBasedTrainLoop")
        if type(self.dataloader.batch_sampler) is not BatchSampler:
            raise TypeError(
                f"{type(self).__name__} needs the DataLoader's own BatchSampler (k batches = k * batch_size "
                f"indices); got {type(self.dataloader.batch_sampler).__name__}")
        self._epoch_len = len(self.dataloader)

    def run(self) -> torch.nn.Module:
        """As ``EpochBasedTrainLoop.run``, and never past ``max_iters``."""
        self.runner.call_hook("before_train")
        while self._epoch < self._max_epochs and self._iter < self._max_iters and not self.stop_training:
            self.run_epoch()
            self._decide_current_val_interval()
            if (self.runner.val_loop is not None and self._epoch >= self.val_begin
                    and (self._epoch % self.val_interval == 0 or self._epoch == self._max_epochs)):
                self.runner.val_loop.run()
        self.runner.call_hook("after_train")
        return self.runner.model

    def resume_batch(self) -> int:
        """Batches of the current epoch already trained: 0 unless resumed from a mid-epoch checkpoint.

        An iteration checkpoint written after the last batch of epoch ``e`` holds ``epoch=e`` and
        ``iter=(e + 1) * len``: the epoch is then complete (``len``) and only its end hooks run.
        """
        done = self._iter - self._epoch * self._epoch_len
        if not 0 <= done <= self._epoch_len:
            raise RuntimeError(
                f"iteration {self._iter} is not in epoch {self._epoch} of {self._epoch_len} batches: the checkpoint "
                "was written with another dataset size, batch size or number of processes")
        return done

    def run_epoch(self) -> None:
        """One epoch, from the batch where a resumed run stopped."""
        self.runner.call_hook("before_train_epoch")
        self.runner.model.train()
        start = self.resume_batch()
        if start:
            print_log(f"Resuming epoch {self._epoch} at batch {start}/{self._epoch_len}: the sampler skips "
                      f"{start * self.dataloader.batch_size} samples per process without loading them",
                      logger="current", level=logging.INFO)
        if start < self._epoch_len:
            if start:
                self.dataloader.sampler.skip(start * self.dataloader.batch_size)
                if len(self.dataloader) != self._epoch_len - start:
                    raise RuntimeError(f"{type(self.dataloader.sampler).__name__}.skip left {len(self.dataloader)} "
                                       f"batches, expected {self._epoch_len - start}")
            for idx, data_batch in enumerate(self.dataloader, start=start):
                self.run_iter(idx, data_batch)
                if self._iter >= self._max_iters:
                    break
        self.runner.call_hook("after_train_epoch")
        self._epoch += 1
