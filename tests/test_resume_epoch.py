"""Mid-epoch resume with ResumableEpochBasedTrainLoop, and the samplers' ``skip``.

A toy model (Linear, Dropout, Linear: the dropout makes the losses depend on the random stream
that RNGStateHook restores) on a toy dataset that records every ``__getitem__``, trained through
``build_runner(apply_cli(...))`` with the shared runtime (configs/_base_/default_runtime.py: iteration
checkpoints, DistSamplerSeedHook, RNGStateHook). 14 items in batches of 3: 5 batches an epoch, the
last one short, 3 epochs = 15 iterations, a checkpoint after every iteration. A run resumed from a
mid-epoch checkpoint, or from the one written after an epoch's last batch, must train on exactly
the batches (item ids, batch_idx) and produce exactly the losses and learning rates of the
uninterrupted run from there on, load no item it skips, and stop at the same final iteration.
"""
import os.path as osp

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.dataset import DefaultSampler
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from torch.utils.data import DataLoader, Dataset

from projects.salma.datasets import samplers
from projects.salma.datasets.samplers import LengthGroupedSampler, ResumableDefaultSampler
from projects.salma.engine.checkpoint import allow_mmengine_checkpoints
from projects.salma.engine.loops import ResumableEpochBasedTrainLoop
from projects.salma.engine.runner import apply_cli, build_runner
from projects.salma.registry import DATA_SAMPLERS, DATASETS, MODELS

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
SIZE, BATCH, EPOCHS = 14, 3, 3
EPOCH_LEN = -(-SIZE // BATCH)  # 5: the DataLoader keeps the short last batch
MAX_ITERS = EPOCHS * EPOCH_LEN
SAMPLERS = {
    "default": dict(type="ResumableDefaultSampler", shuffle=True),
    "length_grouped": dict(type="LengthGroupedSampler", per_device_batch_size=BATCH),
}


@DATASETS.register_module(name="_ResumeToyDataset", force=True)
class ToyDataset(Dataset):
    """Fixed random regression items; ``loaded`` lists every index ``__getitem__`` was asked for."""

    metainfo: dict = {}

    def __init__(self, size: int = SIZE):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(size, 4, generator=g), torch.randn(size, 1, generator=g)
        # for LengthGroupedSampler: mixed lengths, both modalities (> 0 and < 0)
        self.modality_lengths = [(i % 5 + 1) * (1 if i % 3 else -1) for i in range(size)]
        self.loaded = []

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        self.loaded.append(int(i))
        return dict(index=i, x=self.x[i], y=self.y[i])


@MODELS.register_module(name="_ResumeToyModel", force=True)
class ToyModel(BaseModel):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Dropout(0.5), torch.nn.Linear(16, 1))

    def forward(self, index, x, y, mode="loss"):
        return dict(loss=F.mse_loss(self.net(x), y))


class Recorder(Hook):
    """Per iteration: runner.iter, batch_idx, the item ids of the batch, the loss, the lr."""

    def __init__(self):
        self.rows = []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.rows.append(dict(iter=runner.iter, batch_idx=batch_idx, ids=data_batch["index"].tolist()))

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.rows[-1].update(loss=outputs["loss"].item(), lr=runner.optim_wrapper.get_lr()["lr"][0])


def toy_cfg(name, sampler="default", loop="ResumableEpochBasedTrainLoop", ckpt_every=1, batch=BATCH):
    cfg = Config.fromfile(osp.join(REPO, "configs/_base_/default_runtime.py"))
    cfg.default_scope = "salma"
    cfg.experiment_name = name  # a MessageHub per runner
    cfg.model = dict(type="_ResumeToyModel")
    cfg.train_dataloader = dict(batch_size=batch, num_workers=0, dataset=dict(type="_ResumeToyDataset"),
                                sampler=SAMPLERS.get(sampler, dict(type=sampler)),
                                collate_fn=dict(type="default_collate"))
    cfg.optim_wrapper = dict(type="OptimWrapper", optimizer=dict(type="SGD", lr=0.05, momentum=0.9))
    cfg.param_scheduler = [dict(type="CosineAnnealingLR", by_epoch=True, begin=0, end=EPOCHS, eta_min=0.0,
                                convert_to_iter_based=True)]
    cfg.train_cfg = dict(type=loop, max_epochs=EPOCHS)
    cfg.default_hooks.logger.interval = 1
    # ckpt_every=-1: no checkpoints (the resumed runs need none)
    cfg.default_hooks.checkpoint.update(interval=ckpt_every, max_keep_ckpts=-1, save_last=False)
    cfg.randomness = dict(seed=3)
    return cfg


def train(cfg, work_dir, **cli):
    runner = build_runner(apply_cli(cfg, work_dir=str(work_dir), **cli))
    recorder = Recorder()
    runner.register_hook(recorder)
    runner.train()
    return runner, recorder.rows


@pytest.fixture(scope="module", params=sorted(SAMPLERS))
def straight(request, tmp_path_factory):
    """The uninterrupted run, a checkpoint after every iteration."""
    work_dir = tmp_path_factory.mktemp(f"straight_{request.param}")
    runner, rows = train(toy_cfg(f"straight_{request.param}", request.param), work_dir)
    return dict(sampler=request.param, runner=runner, rows=rows, work_dir=str(work_dir))


def test_uninterrupted_run_sees_every_item_once_an_epoch(straight):
    rows, runner = straight["rows"], straight["runner"]
    assert runner.iter == MAX_ITERS and runner.epoch == EPOCHS and runner.max_iters == MAX_ITERS
    assert [r["iter"] for r in rows] == list(range(MAX_ITERS))
    assert [r["batch_idx"] for r in rows] == list(range(EPOCH_LEN)) * EPOCHS
    epochs = [[i for r in rows[e * EPOCH_LEN:(e + 1) * EPOCH_LEN] for i in r["ids"]] for e in range(EPOCHS)]
    assert all(sorted(ids) == list(range(SIZE)) for ids in epochs)
    assert epochs[0] != epochs[1]  # reshuffled each epoch (DistSamplerSeedHook -> set_epoch)
    assert runner.train_dataloader.dataset.loaded == [i for r in rows for i in r["ids"]]
    assert osp.isfile(osp.join(straight["work_dir"], "iter_7.pth"))


@pytest.mark.parametrize("k", [7, 10], ids=["mid_epoch", "epoch_end"])
def test_resume_continues_exactly_as_the_uninterrupted_run(straight, k, tmp_path):
    """k=7: epoch 1 at batch 2; k=10: the checkpoint after epoch 1's last batch (epoch=1, iter=10)."""
    ckpt = osp.join(straight["work_dir"], f"iter_{k}.pth")
    allow_mmengine_checkpoints()
    meta = torch.load(ckpt, map_location="cpu", weights_only=True)["meta"]
    assert (meta["epoch"], meta["iter"]) == (1, k)  # both land in epoch 1 as mmengine records it
    resumed, rows = train(toy_cfg(f"resumed_{straight['sampler']}_{k}", straight["sampler"], ckpt_every=-1),
                          tmp_path, resume=ckpt)
    expected = straight["rows"][k:]
    assert [(r["iter"], r["batch_idx"], r["ids"]) for r in rows] == [
        (r["iter"], r["batch_idx"], r["ids"]) for r in expected]
    np.testing.assert_array_equal([r["loss"] for r in rows], [r["loss"] for r in expected])
    np.testing.assert_array_equal([r["lr"] for r in rows], [r["lr"] for r in expected])
    assert resumed.iter == straight["runner"].iter == MAX_ITERS and resumed.epoch == EPOCHS
    # the skipped part of the epoch was never loaded: only the items trained on
    loaded = resumed.train_dataloader.dataset.loaded
    trained_before = k // EPOCH_LEN * SIZE + k % EPOCH_LEN * BATCH  # 20 items for k=7, 28 for k=10
    assert loaded == [i for r in rows for i in r["ids"]] and len(loaded) == SIZE * EPOCHS - trained_before
    for name in ("net.0.weight", "net.2.bias"):  # and the model ends where the uninterrupted one did
        torch.testing.assert_close(resumed.model.state_dict()[name], straight["runner"].model.state_dict()[name],
                                   rtol=0, atol=0)


def test_stock_epoch_loop_replays_the_epoch_on_resume(tmp_path):
    """Why the loop exists: mmengine 0.10.7's EpochBasedTrainLoop restarts epoch 1 at batch 0."""
    cfg = toy_cfg("stock", "DefaultSampler", loop="EpochBasedTrainLoop", ckpt_every=7)
    train(cfg, tmp_path / "a")
    resumed, rows = train(toy_cfg("stock_resumed", "DefaultSampler", loop="EpochBasedTrainLoop", ckpt_every=-1),
                          tmp_path / "b", resume=str(tmp_path / "a" / "iter_7.pth"))
    assert rows[0]["iter"] == 7 and rows[0]["batch_idx"] == 0
    assert resumed.iter == MAX_ITERS + 2  # the 2 batches of epoch 1 trained before the checkpoint, again


def test_loop_refuses_a_sampler_that_cannot_skip(tmp_path):
    runner = build_runner(apply_cli(toy_cfg("no_skip", "DefaultSampler", ckpt_every=-1), work_dir=str(tmp_path)))
    with pytest.raises(TypeError, match="DefaultSampler has no skip"):
        runner.train()


@DATA_SAMPLERS.register_module(name="_IgnoresSkipSampler", force=True)
class IgnoresSkipSampler(DefaultSampler):
    """Has ``skip`` but yields the whole epoch anyway: the loop must notice before training on it."""

    def skip(self, num_samples):
        pass


def test_resume_refuses_a_sampler_whose_skip_does_nothing(straight, tmp_path):
    """Epoch 1 at batch 2: 3 batches should be left, the sampler would give all 5."""
    with pytest.raises(RuntimeError, match="IgnoresSkipSampler.skip left 5 batches, expected 3"):
        train(toy_cfg(f"ignores_skip_{straight['sampler']}", "_IgnoresSkipSampler", ckpt_every=-1), tmp_path,
              resume=osp.join(straight["work_dir"], "iter_7.pth"))


def test_resume_with_another_epoch_length_is_an_error(straight, tmp_path):
    """Batch 2 makes epochs of 7 batches: iteration 12 (epoch 2 in the checkpoint) is in epoch 1."""
    cfg = toy_cfg(f"other_batch_{straight['sampler']}", straight["sampler"], batch=2, ckpt_every=-1)
    if straight["sampler"] == "length_grouped":
        cfg.train_dataloader.sampler.per_device_batch_size = 2
    with pytest.raises(RuntimeError, match="iteration 12 is not in epoch 2 of 7 batches"):
        train(cfg, tmp_path, resume=osp.join(straight["work_dir"], "iter_12.pth"))


def test_salma_1b_trains_with_the_resumable_loop_and_a_skipping_sampler():
    """The type strings resolve as Runner resolves them (root registry switched to scope 'salma')."""
    from mmengine.registry import DATA_SAMPLERS as ROOT_SAMPLERS
    from mmengine.registry import LOOPS as ROOT_LOOPS

    cfg = Config.fromfile(osp.join(REPO, "configs/SALMA-1B.py"))
    assert cfg.train_cfg.type == "ResumableEpochBasedTrainLoop" and cfg.train_cfg.max_epochs == 1
    with ROOT_LOOPS.switch_scope_and_registry(cfg.default_scope) as loops:
        assert loops.get(cfg.train_cfg.type) is ResumableEpochBasedTrainLoop
    with ROOT_SAMPLERS.switch_scope_and_registry(cfg.default_scope) as data_samplers:
        assert data_samplers.get(cfg.train_dataloader.sampler.type) is LengthGroupedSampler
    assert cfg.default_hooks.checkpoint.by_epoch is False  # iteration checkpoints: mid-epoch resumes happen


# ------------------------------------------------------------------ samplers


def build_sampler(kind, rank, world_size, dataset=None, **kwargs):
    dataset = dataset if dataset is not None else ToyDataset(50)
    if kind == "length_grouped":
        return LengthGroupedSampler(dataset, per_device_batch_size=4, seed=5, rank=rank, world_size=world_size,
                                    **kwargs)
    return ResumableDefaultSampler(dataset, seed=5, rank=rank, world_size=world_size, **kwargs)


@pytest.mark.parametrize("kind", ["length_grouped", "default"])
@pytest.mark.parametrize("world_size", [1, 2])
def test_skip_drops_this_ranks_first_indices_for_one_iteration(kind, world_size):
    for rank in range(world_size):
        sampler = build_sampler(kind, rank, world_size)
        sampler.set_epoch(2)
        full = list(sampler)
        assert len(full) == len(sampler) == 50 // world_size
        sampler.skip(8)
        assert len(sampler) == len(full) - 8
        assert list(sampler) == full[8:]
        assert len(sampler) == len(full) and list(sampler) == full  # the next epoch is whole again
        sampler.skip(len(full) + 3)
        assert len(sampler) == 0 and list(sampler) == []
        sampler.set_epoch(3)
        other = list(sampler)
        sampler.skip(4)
        assert list(sampler) == other[4:] and other != full


@pytest.mark.parametrize("kind", ["length_grouped", "default"])
def test_ranks_skip_their_own_share_of_the_world_batches(kind):
    """Two ranks resuming after 3 batches of 4 each: rank r continues its own stream at batch 3."""
    streams = [list(build_sampler(kind, r, 2)) for r in range(2)]
    assert sorted(streams[0] + streams[1]) == list(range(50))
    for rank in range(2):
        sampler = build_sampler(kind, rank, 2)
        sampler.skip(3 * 4)
        loader = DataLoader(ToyDataset(50), batch_size=4, sampler=sampler)
        assert len(loader) == 7 - 3  # 25 per rank: 7 batches, the last one short
        assert [b["index"].tolist() for b in loader] == [streams[rank][i:i + 4] for i in range(12, 25, 4)]


def test_skip_with_persistent_worker_processes():
    """SALMA-1B's loader (workers kept across epochs): the resumed epoch is cut, the next one whole.

    The sampler runs in the main process; a persistent DataLoader iterator re-creates the sampler's
    iterator each epoch, so the pending skip is taken by the first epoch after it is set, once.
    """
    sampler = build_sampler("length_grouped", 0, 1)
    orders = []
    for epoch in (1, 2):
        sampler.set_epoch(epoch)
        orders.append(list(sampler))
    loader = DataLoader(ToyDataset(50), batch_size=4, sampler=sampler, num_workers=2, persistent_workers=True)
    sampler.set_epoch(1)
    sampler.skip(5 * 4)
    resumed = [i for b in loader for i in b["index"].tolist()]
    sampler.set_epoch(2)
    following = [i for b in loader for i in b["index"].tolist()]
    assert resumed == orders[0][20:] and following == orders[1]


def test_rank_arguments_shard_as_the_process_group_would(monkeypatch):
    ds = ToyDataset(51)
    for rank in range(2):
        monkeypatch.setattr(samplers, "get_dist_info", lambda rank=rank: (rank, 2))
        monkeypatch.setattr("mmengine.dataset.sampler.get_dist_info", lambda rank=rank: (rank, 2))
        by_group = LengthGroupedSampler(ds, per_device_batch_size=4, seed=5)
        by_args = build_sampler("length_grouped", rank, 2, dataset=ds)
        assert list(by_args) == list(by_group) and len(by_args) == len(by_group) == 26
        mm = DefaultSampler(ds, seed=5, round_up=False)
        ours = build_sampler("default", rank, 2, dataset=ds, round_up=False)
        assert list(ours) == list(mm) and len(ours) == len(mm) == 26 - rank  # same order as DefaultSampler


def test_bad_skip_and_rank_arguments():
    sampler = build_sampler("default", 0, 1)
    with pytest.raises(ValueError, match="negative"):
        sampler.skip(-1)
    with pytest.raises(ValueError, match="both rank and world_size"):
        LengthGroupedSampler(ToyDataset(8), per_device_batch_size=2, seed=0, rank=1)
    with pytest.raises(ValueError, match=r"rank 2 is not in \[0, 2\)"):
        ResumableDefaultSampler(ToyDataset(8), seed=0, rank=2, world_size=2)
