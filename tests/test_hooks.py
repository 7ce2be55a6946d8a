"""Warm-up hooks ramp linearly from the first iteration and reach the model; RNGStateHook gives each
rank its own generators back (the launched 2-process runs are in test_distributed.py)."""
from types import SimpleNamespace

import pytest
import torch
from mmengine.logging import MessageHub

from projects.salma.engine import hooks as hooks_module
from projects.salma.engine.hooks import AuxLossWarmupHook, CMAWarmupHook, RNGStateHook, linear_warmup


class Target(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.cma, self.aux = [], []

    def set_cma_warmup_scale(self, s):
        self.cma.append(s)

    def set_aux_loss_warmup_scale(self, s):
        self.aux.append(s)


def test_linear_warmup_values():
    assert [linear_warmup(i, 100, 0.2) for i in (0, 1, 10, 19, 20, 50)] == [0.0, 0.05, 0.5, 0.95, 1.0, 1.0]
    assert linear_warmup(0, 100, 0.0) == 1.0


@pytest.mark.parametrize("hook_cls,attr,key", [(CMAWarmupHook, "cma", "cma_warmup_scale"),
                                               (AuxLossWarmupHook, "aux", "aux_loss_warmup_scale")])
def test_hook_ramps_logs_and_restores_after_val(hook_cls, attr, key):
    model = Target()
    hub = MessageHub.get_instance(f"test_hook_{attr}")
    wrapped = SimpleNamespace(module=model)  # like DDP / a DeepSpeed engine
    runner = SimpleNamespace(model=wrapped, max_iters=10, iter=0, message_hub=hub)
    hook = hook_cls(warmup_ratio=0.5)
    seen = []
    for i in range(7):
        runner.iter = i
        hook.before_train_iter(runner, i)
        seen.append(hub.get_scalar(f"train/{key}").current())
    assert seen == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.0]
    assert getattr(model, attr) == seen
    runner.iter = 2
    hook.before_train_iter(runner, 2)
    hook.before_val(runner)
    hook.after_val(runner)
    assert getattr(model, attr)[-2:] == [1.0, 0.4]


def test_hook_rejects_bad_ratio_and_models_without_setter():
    with pytest.raises(ValueError):
        CMAWarmupHook(1.5)
    runner = SimpleNamespace(model=torch.nn.Linear(1, 1), max_iters=1, iter=0, message_hub=MessageHub.get_instance("x"))
    with pytest.raises(AttributeError, match="set_cma_warmup_scale"):
        CMAWarmupHook(0.1).before_train_iter(runner, 0)


def _rank_states(iteration, world):
    """The states ``world`` ranks would have captured: each rank's generator seeded differently."""
    states = []
    for rank in range(world):
        torch.manual_seed(100 + rank)
        states.append(RNGStateHook.capture(iteration))
    return states


def _draws(n=4):
    return torch.rand(n).tolist()


def test_rng_state_hook_restores_this_ranks_state(monkeypatch):
    hub = MessageHub.get_instance("test_rng_ranks")
    runner = SimpleNamespace(iter=5, message_hub=hub)
    states = _rank_states(5, 2)
    hub.update_info("rng_state", states)
    got = []
    for rank in range(2):
        monkeypatch.setattr(hooks_module, "get_dist_info", lambda rank=rank: (rank, 2))
        torch.manual_seed(0)
        RNGStateHook().before_train_iter(runner, 0)
        got.append(_draws())
        torch.manual_seed(100 + rank)
        assert got[-1] == _draws()  # rank r continues its own stream
    assert got[0] != got[1]
    # another world size: no restore, a warning (the draws cannot repeat the interrupted run's)
    logged = []
    monkeypatch.setattr(hooks_module, "print_log", lambda msg, **kw: logged.append(msg))
    monkeypatch.setattr(hooks_module, "get_dist_info", lambda: (0, 1))
    torch.manual_seed(7)
    RNGStateHook().before_train_iter(runner, 0)
    got = _draws()
    torch.manual_seed(7)
    assert got == _draws() and len(logged) == 1 and "2 processes, this run has 1" in logged[0]


def test_rng_state_hook_one_process_list_and_older_single_state():
    hub = MessageHub.get_instance("test_rng_one")
    runner = SimpleNamespace(iter=3, message_hub=hub)
    torch.manual_seed(11)
    RNGStateHook().after_train_iter(runner, 0)
    [state] = hub.get_info("rng_state")  # one process: a list of one state
    assert state["iter"] == 4
    after = _draws()
    hub.update_info("rng_state", state)  # a checkpoint written before states were per rank
    runner.iter = 4
    torch.manual_seed(0)
    RNGStateHook().before_train_iter(runner, 0)
    assert _draws() == after
