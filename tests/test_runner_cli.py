"""apply_cli's ``deepspeed=`` argument: ``zero2`` is the repository's JSON wherever the job starts;
an explicit path is the user's, relative to the current directory. Several CPU processes: what
``prepare_cpu_processes`` changes in a config (the launched runs are in test_distributed.py)."""
import importlib.util
import json
import os.path as osp

import pytest
from mmengine.config import Config

from projects.salma.engine import dist
from projects.salma.engine.runner import apply_cli
from projects.salma.testing import free_port

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def small_cfg():
    return Config(dict(
        train_dataloader=dict(batch_size=2),
        optim_wrapper=dict(type="AmpOptimWrapper", optimizer=dict(type="AdamW", lr=1e-4),
                           clip_grad=dict(max_norm=1.0), accumulative_counts=4),
    ))


def test_zero2_is_found_from_another_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here
    cfg = apply_cli(small_cfg(), work_dir=str(tmp_path), deepspeed="zero2")
    with open(osp.join(REPO, "configs", "deepspeed_zero2.json")) as f:
        shipped = json.load(f)
    strategy = cfg.strategy.to_dict()
    assert strategy.pop("type") == "DeepSpeedStrategy"
    assert strategy == dict(shipped, train_micro_batch_size_per_gpu=2, gradient_accumulation_steps=4,
                            gradient_clipping=1.0)
    assert strategy["zero_optimization"]["stage"] == 2
    assert cfg.runner_type == "FlexibleRunner" and cfg.optim_wrapper.type == "DeepSpeedOptimWrapper"


def test_explicit_json_path_is_relative_to_the_current_directory(tmp_path, monkeypatch):
    (tmp_path / "mine.json").write_text(json.dumps(dict(zero_optimization=dict(stage=1), bf16=dict(enabled=False))))
    monkeypatch.chdir(tmp_path)
    strategy = apply_cli(small_cfg(), work_dir=str(tmp_path), deepspeed="mine.json").strategy
    assert strategy.zero_optimization.stage == 1 and strategy.bf16.enabled is False
    assert strategy.gradient_accumulation_steps == 4
    monkeypatch.chdir(REPO)  # the same relative name means another file from another directory
    with pytest.raises(FileNotFoundError, match="no such JSON file: mine.json"):
        apply_cli(small_cfg(), work_dir=str(tmp_path), deepspeed="mine.json")


def test_cpu_processes_get_ddp_without_device_ids_and_deepspeed_without_its_shm_build(monkeypatch, tmp_path):
    import deepspeed.ops

    joined = []
    monkeypatch.setattr(dist, "join_process_group", lambda launcher, **kw: joined.append((launcher, kw)))
    cfg = apply_cli(small_cfg(), work_dir=str(tmp_path), launcher="pytorch")
    cfg.env_cfg = dict(dist_cfg=dict(backend="nccl", timeout=60))
    ddp = dist.prepare_cpu_processes(cfg).model_wrapper_cfg
    assert joined == [("pytorch", dict(backend="nccl", timeout=60))]
    assert ddp == dict(type="MMDistributedDataParallel", broadcast_buffers=False, find_unused_parameters=False,
                       device_ids=None)
    cfg.model_wrapper_cfg = dict(type="MMDistributedDataParallel", find_unused_parameters=True)  # the user's
    assert dist.prepare_cpu_processes(cfg).model_wrapper_cfg == dict(
        type="MMDistributedDataParallel", find_unused_parameters=True, device_ids=None)

    monkeypatch.setitem(deepspeed.ops.__compatible_ops__, "deepspeed_shm_comm", True)
    flexible = dist.prepare_cpu_processes(apply_cli(small_cfg(), work_dir=str(tmp_path), launcher="pytorch",
                                                    deepspeed="zero2"))
    assert "model_wrapper_cfg" not in flexible and deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] is False


def test_join_process_group_refuses_what_it_cannot_do(monkeypatch):
    with pytest.raises(ValueError, match="launcher must be one of"):
        dist.join_process_group("mpi")
    monkeypatch.setattr(dist.torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="'slurm' without CUDA"):
        dist.join_process_group("slurm")
    dist.join_process_group("none")  # one process: nothing to join
    assert not dist.torch_dist.is_initialized()


# ------------------------------------------------------------------ leaving the group
def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"salma_tool_{name}", osp.join(REPO, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def torchrun_env(monkeypatch):
    """torchrun's variables for a world of one on this machine."""
    for key, value in dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", LOCAL_RANK="0",
                           WORLD_SIZE="1").items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(dist.torch.cuda, "is_available", lambda: False)
    yield
    if dist.torch_dist.is_initialized():
        dist.torch_dist.destroy_process_group()


def test_leave_process_group_waits_for_every_rank_then_leaves(torchrun_env, monkeypatch):
    dist.join_process_group("pytorch")
    barriers = []
    monkeypatch.setattr(dist.torch_dist, "barrier", lambda *a, **k: barriers.append(dist.torch_dist.is_initialized()))
    dist.leave_process_group()
    assert barriers == [True] and not dist.torch_dist.is_initialized()
    dist.leave_process_group()  # one process, or already left: nothing to do
    assert barriers == [True]


@pytest.mark.parametrize("tool", ["train", "test"])
def test_launched_tools_leave_the_process_group_before_they_exit(tool, torchrun_env, monkeypatch, tmp_path):
    """A process that exits still in a gloo group can abort in interpreter shutdown (SIGABRT,
    'terminate called without an active exception': gloo's threads still hold tensors), which
    torchrun reports as the run failing after its last checkpoint was written."""
    module = load_tool(tool)
    joined = []

    def work(*args, **kwargs):  # what the runner / evaluation does first: join torchrun's group
        dist.join_process_group("pytorch")
        joined.append(dist.torch_dist.is_initialized())
        return {}

    config = tmp_path / "cfg.py"
    config.write_text("model = dict()\n")
    if tool == "train":
        monkeypatch.setattr(module, "build_runner", lambda cfg: type("Runner", (), {"train": work})())
    else:
        monkeypatch.setattr(module, "run_evaluation", work)
    module.main([str(config), "--launcher", "pytorch", "--work-dir", str(tmp_path / "work")]
                + (["--checkpoint", "none"] if tool == "test" else []))
    assert joined == [True] and not dist.torch_dist.is_initialized()
