"""Fault injection (issue 29), training side: a kill while saving, damaged checkpoints, NaN losses.

Each case trains the tiny synthetic config for a few iterations (as tools/train.py does:
``build_runner(apply_cli(...))``), damages what a crash or a bad disk would, and asserts the outcome:
an older intact checkpoint survives and is resumed from (the damaged one named), an error names
the file, or the run stops naming the iteration and the loss terms with every saved weight finite.
"""
import os
import os.path as osp

import pytest
import torch
from mmengine.fileio.backends import LocalBackend
from mmengine.hooks import Hook

from projects.salma.engine.checkpoint import allow_mmengine_checkpoints
from projects.salma.engine.safe_checkpoint import CheckpointError, nonfinite_tensors
from projects.salma.checkpoint import read_state_dict
from test_train_engine import few_threads, load_cfg, synth_root, train  # noqa: F401


class Killed(BaseException):
    """What SIGKILL does to a Python process, as far as the files it was writing see."""


def _cfg(root, *, max_iters, every=2, keep=-1, name="faults"):
    cfg = load_cfg(root, max_iters=max_iters, ckpt_every=every, name=name)
    cfg.default_hooks.checkpoint.max_keep_ckpts = keep
    return cfg


def _load(path):
    allow_mmengine_checkpoints()
    return torch.load(path, map_location="cpu", weights_only=True)


def _pointer(work_dir) -> str:
    return open(osp.join(work_dir, "last_checkpoint"), encoding="utf-8").read().strip()


@pytest.fixture(scope="module")
def four_iters(synth_root, tmp_path_factory, few_threads):  # noqa: F811
    """A run of 4 iterations with checkpoints at 2 and 4 (both kept)."""
    work_dir = tmp_path_factory.mktemp("four")
    train(_cfg(synth_root, max_iters=4), work_dir)
    return work_dir


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    with open(osp.join(dst, "last_checkpoint"), "w", encoding="utf-8") as f:
        f.write(osp.join(dst, "iter_4.pth"))
    return dst


def test_kill_while_saving_keeps_the_previous_checkpoint_and_resume_uses_it(synth_root, tmp_path, monkeypatch,
                                                                          few_threads):  # noqa: F811
    calls, plain = [], LocalBackend.put

    def dies_halfway(self, obj, filepath):
        calls.append(filepath)
        if len(calls) == 2:  # the second checkpoint: half of it reaches the disk, then the process is gone
            with open(filepath, "wb") as f:
                f.write(obj[: len(obj) // 2])
            raise Killed()
        return plain(self, obj, filepath)
    monkeypatch.setattr(LocalBackend, "put", dies_halfway)
    with pytest.raises(Killed):
        train(_cfg(synth_root, max_iters=4, keep=1), tmp_path)
    monkeypatch.undo()
    first = osp.join(tmp_path, "iter_2.pth")
    assert _pointer(tmp_path) == first and _load(first)["meta"]["iter"] == 2
    assert sorted(n for n in os.listdir(tmp_path) if n.endswith(".pth")) == ["iter_2.pth"]  # no stub under a real name
    runner, rows = train(_cfg(synth_root, max_iters=4, keep=1), tmp_path, resume=True)
    assert rows[0]["iter"] == 2 and runner.iter == 4
    assert sorted(n for n in os.listdir(tmp_path) if n.endswith(".pth")) == ["iter_4.pth"]  # the old one went last
    assert _pointer(tmp_path) == osp.join(tmp_path, "iter_4.pth")


def _run_log(runner) -> str:
    return open(osp.join(runner.log_dir, f"{runner.timestamp}.log"), encoding="utf-8").read()


def test_truncated_newest_checkpoint_is_named_and_the_previous_one_resumed(four_iters, synth_root, tmp_path,
                                                                         few_threads):  # noqa: F811
    work_dir = _copy(four_iters, tmp_path / "w")
    newest = work_dir / "iter_4.pth"
    newest.write_bytes(newest.read_bytes()[: 2 << 20])  # a 2 MB stub
    runner, rows = train(_cfg(synth_root, max_iters=6), work_dir, resume=True)
    assert rows[0]["iter"] == 2 and runner.iter == 6
    log = _run_log(runner)
    assert f"{newest}: damaged checkpoint" in log and f"resuming from {work_dir / 'iter_2.pth'}" in log
    newest.write_bytes(newest.read_bytes()[: 2 << 20])  # the resumed run wrote it again
    with pytest.raises(CheckpointError, match=f"{newest}: damaged checkpoint, cannot be read"):
        train(_cfg(synth_root, max_iters=6), tmp_path / "other", resume=str(newest))  # named: no fallback


def test_no_intact_checkpoint_is_an_error_not_a_fresh_start(four_iters, synth_root, tmp_path):
    work_dir = _copy(four_iters, tmp_path / "w")
    for name in ("iter_2.pth", "iter_4.pth"):
        (work_dir / name).write_bytes(b"\0" * 100)
    with pytest.raises(CheckpointError, match=r"no intact checkpoint in .*iter_4.pth: damaged.*iter_2.pth: damaged"):
        train(_cfg(synth_root, max_iters=6), work_dir, resume=True)


def test_overwritten_bytes_inside_a_checkpoint_are_detected(four_iters, synth_root, tmp_path):
    work_dir = _copy(four_iters, tmp_path / "w")
    newest = work_dir / "iter_4.pth"
    data = bytearray(newest.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 4096] = os.urandom(4096)  # same size, inside the tensor data
    newest.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"{newest}: content hash blake2b .* does not match"):
        train(_cfg(synth_root, max_iters=6), tmp_path / "other", resume=str(newest))
    with pytest.raises(CheckpointError, match=f"{newest}: content hash"):  # tools/test.py --checkpoint
        read_state_dict(str(newest))


class PoisonLoss(Hook):
    """From iteration ``at`` (1-based) on, one loss term of the forward is NaN (the weights are finite)."""

    priority = "LOW"

    def __init__(self, at: int, term: str = "loss_mask"):
        self.at, self.term = at, term

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        model = runner.model
        if runner.iter + 1 == self.at:
            plain = type(model).forward.__get__(model)

            def forward(*args, **kwargs):
                losses = plain(*args, **kwargs)
                if kwargs.get("mode", "loss") == "loss" and self.term in losses:
                    losses[self.term] = losses[self.term] * float("nan")
                return losses
            model.forward = forward
        else:
            model.__dict__.pop("forward", None)


def _train_with(cfg, work_dir, *hooks):
    from projects.salma.engine.runner import apply_cli, build_runner

    runner = build_runner(apply_cli(cfg, work_dir=str(work_dir)))
    for hook in hooks:
        runner.register_hook(hook)
    runner.train()
    return runner


def test_nonfinite_loss_stops_naming_the_iteration_and_terms(synth_root, tmp_path, few_threads):  # noqa: F811
    with pytest.raises(FloatingPointError, match=r"iteration 3: the loss is not finite \(loss=nan, .*loss_mask=nan"):
        _train_with(_cfg(synth_root, max_iters=5, every=1), tmp_path, PoisonLoss(at=3))
    saved = sorted(n for n in os.listdir(tmp_path) if n.endswith(".pth"))
    assert saved == ["iter_1.pth", "iter_2.pth"]
    for name in saved:
        assert nonfinite_tensors(_load(tmp_path / name)["state_dict"]) == []


def test_nonfinite_loss_can_skip_the_batch_counted(synth_root, tmp_path, few_threads):  # noqa: F811
    cfg = _cfg(synth_root, max_iters=4, every=4)
    cfg.custom_hooks = [*cfg.custom_hooks, dict(type="NonFiniteLossHook", action="skip")]
    runner = _train_with(cfg, tmp_path, PoisonLoss(at=3))
    assert runner.iter == 4
    assert runner.message_hub.get_scalar("train/nonfinite_skipped").current() == 1
    assert nonfinite_tensors(_load(tmp_path / "iter_4.pth")["state_dict"]) == []


def test_a_checkpoint_with_nonfinite_weights_is_not_saved(synth_root, tmp_path, few_threads):  # noqa: F811
    class PoisonWeight(Hook):
        priority = 80  # after the optimizer step (LOW = 70), before the checkpoint (VERY_LOW = 90)

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            if runner.iter + 1 == 2:
                with torch.no_grad():
                    next(p for p in runner.model.parameters() if p.requires_grad).fill_(float("nan"))
    with pytest.raises(CheckpointError, match=r"iteration 2: not saving a checkpoint with non-finite values"):
        _train_with(_cfg(synth_root, max_iters=3, every=1), tmp_path, PoisonWeight())
    assert sorted(n for n in os.listdir(tmp_path) if n.endswith(".pth")) == ["iter_1.pth"]
