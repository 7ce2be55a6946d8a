"""Warm-up hooks ramp linearly from the first iteration and reach the model."""
from types import SimpleNamespace

import pytest
import torch
from mmengine.logging import MessageHub

from projects.salma.engine.hooks import AuxLossWarmupHook, CMAWarmupHook, linear_warmup


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
