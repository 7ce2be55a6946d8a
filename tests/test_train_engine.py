"""Training through mmengine as tools/train.py does it: build_runner(apply_cli(cfg, ...)).

The tiny synthetic config on a small synthetic set (CPU, batch 2): the loss falls; a run resumed
from an iteration checkpoint continues with the same learning rate, warm-up scales, data order and
random draws, so its losses equal the uninterrupted run's; the warm-up scales reach the model's
buffers every iteration; the log line carries every loss term, lr, grad_norm, the scales, time and
eta; the same under DeepSpeed ZeRO-2 (FlexibleRunner) in one CPU process; the checkpoint loader's
allowlist admits mmengine's checkpoints and nothing more.

Schedule, warm-up ratios and checkpoint interval are overridden here (never in the config): N
iterations, checkpoints every K, where K is one epoch of the train set, so the resumed run starts
on an epoch boundary (the DataLoader restarts there) and crosses another one.
"""
import glob
import os
import os.path as osp
import pickle
import re

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook

from projects.salma.engine.checkpoint import allow_mmengine_checkpoints
from projects.salma.engine.hooks import linear_warmup
from projects.salma.engine.runner import apply_cli, build_runner
from projects.salma.testing import one_process_deepspeed

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(REPO, "configs/tiny/salma_tiny_synthetic.py")
BATCH = 2
CMA_RATIO, AUX_RATIO = 0.4, 0.8  # long enough that a resume lands inside the aux warm-up
LOSS_TERMS = ("loss_llm", "loss_mask", "loss_dice", "loss_tmc", "loss_boundary")


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    from projects.salma.datasets.synthetic import make_synthetic

    out = str(tmp_path_factory.mktemp("synthetic_train"))
    make_synthetic(out, seed=0, num_images=6, num_val_images=2, num_videos=2, num_val_videos=1, num_frames=4,
                   num_llava=2, num_gcg=2)
    return out


@pytest.fixture(scope="module")
def few_threads():
    """One intra-op thread while this module trains: the runs are tiny and CI machines are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Recorder(Hook):
    """What each iteration trains with: iteration, model buffers after the warm-up hooks, batch."""

    priority = "LOW"  # before_train_iter: after CMAWarmupHook / AuxLossWarmupHook (NORMAL)

    def __init__(self):
        self.rows = []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        model = runner.model
        while not hasattr(model, "aux_loss_scale"):  # DDP-style wrappers (DeepSpeed's forwards attributes)
            model = model.module if hasattr(model, "module") else model.model
        data = data_batch["data"]
        self.rows.append(dict(
            iter=runner.iter,
            cma=model.grounding_encoder.cma.warmup_scale.item(),
            aux=model.aux_loss_scale.item(),
            batch=[(m["dataset"], m["index"]) for m in data["meta"]],
            tokens=int(data["input_ids"].sum()),
        ))


def read_config(root):
    """The shipped tiny synthetic config on ``root`` (the variable is read while parsing)."""
    before = os.environ.get("SALMA_SYNTH_ROOT")
    os.environ["SALMA_SYNTH_ROOT"] = root
    try:
        return Config.fromfile(CONFIG)
    finally:
        if before is None:
            del os.environ["SALMA_SYNTH_ROOT"]
        else:
            os.environ["SALMA_SYNTH_ROOT"] = before


def load_cfg(root, *, max_iters, ckpt_every, name):
    """The tiny synthetic config with this test's schedule (the shape of demo.py's)."""
    cfg = read_config(root)
    cfg.experiment_name = name  # a MessageHub per runner: names are <name>_<timestamp>
    cfg.train_dataloader.batch_size = BATCH
    # Epochs end and restart here (the shipped config streams through InfiniteSampler): the
    # resume tests cross epoch boundaries on purpose.
    cfg.train_dataloader.sampler = dict(type="DefaultSampler", shuffle=True)
    cfg.train_cfg.max_iters = max_iters
    cfg.param_scheduler[0].end = 2  # LinearLR reaches the base lr at end - 1 (end=1: stuck at start_factor)
    cfg.param_scheduler[1].begin, cfg.param_scheduler[1].end = 2, max_iters
    cfg.custom_hooks = [dict(type="CMAWarmupHook", warmup_ratio=CMA_RATIO),
                        dict(type="AuxLossWarmupHook", warmup_ratio=AUX_RATIO),
                        dict(type="DataSkipLoggerHook")]
    cfg.default_hooks.logger.interval = 1
    # ckpt_every=-1: no checkpoints (a resumed run need not write any)
    cfg.default_hooks.checkpoint.update(interval=ckpt_every, max_keep_ckpts=-1, save_last=False)
    cfg.randomness = dict(seed=3, deterministic=True)
    return cfg


def train(cfg, work_dir, **cli):
    runner = build_runner(apply_cli(cfg, work_dir=str(work_dir), **cli))
    recorder = Recorder()
    runner.register_hook(recorder)
    runner.train()
    return runner, recorder.rows


def history(runner, key):
    values, _counts = runner.message_hub.get_scalar(f"train/{key}").data
    return np.asarray(values, dtype=np.float64)


def epoch_iters(root):
    """Iterations in one pass over the train set (DefaultSampler keeps the last, short batch)."""
    import projects.salma.datasets  # noqa: F401  (registers the readers)
    from projects.salma.registry import DATASETS

    n = len(DATASETS.build(read_config(root).train_dataloader.dataset))  # DefaultSampler: see load_cfg
    return -(-n // BATCH)


@pytest.fixture(scope="module")
def straight(synth_root, tmp_path_factory, few_threads):
    """One uninterrupted run of N iterations with checkpoints every K (= one epoch)."""
    k = epoch_iters(synth_root)
    n = 2 * k + 2
    work_dir = tmp_path_factory.mktemp("straight")
    runner, rows = train(load_cfg(synth_root, max_iters=n, ckpt_every=k, name="straight"), work_dir)
    return dict(runner=runner, rows=rows, k=k, n=n, work_dir=str(work_dir))


def test_tiny_training_loss_falls(straight):
    loss = history(straight["runner"], "loss")
    assert len(loss) == straight["n"] and np.isfinite(loss).all()
    first, last = loss[:3].mean(), loss[-3:].mean()
    assert last < first - 0.3, (first, last, loss)
    mask = history(straight["runner"], "loss_mask")  # the grounding side learns too, not only the LLM
    assert mask[-3:].mean() < mask[:3].mean() - 0.05, mask
    # the total is the sum of the terms the model returns, each of them logged
    terms = sum(history(straight["runner"], t) for t in LOSS_TERMS)
    np.testing.assert_allclose(terms, loss, rtol=1e-5)


def test_warmup_scales_reach_the_model_every_iteration(straight):
    rows, n = straight["rows"], straight["n"]
    assert [r["iter"] for r in rows] == list(range(n))
    np.testing.assert_allclose([r["cma"] for r in rows], [linear_warmup(i, n, CMA_RATIO) for i in range(n)], atol=1e-7)
    np.testing.assert_allclose([r["aux"] for r in rows], [linear_warmup(i, n, AUX_RATIO) for i in range(n)], atol=1e-7)
    assert rows[1]["aux"] < 1.0 and rows[-1]["aux"] == rows[-1]["cma"] == 1.0
    # ...and act: at iteration 0 the aux scale is 0, so TMC and boundary losses are exactly 0
    runner = straight["runner"]
    tmc, boundary = history(runner, "loss_tmc"), history(runner, "loss_boundary")
    assert tmc[0] == 0.0 and boundary[0] == 0.0
    assert (tmc[1:] > 0).all() and (boundary[1:] > 0).all()


def parse_log_lines(work_dir):
    logs = glob.glob(osp.join(work_dir, "*", "*.log"))
    assert len(logs) == 1, logs
    with open(logs[0]) as f:
        lines = [line for line in f if "Iter(train)" in line]
    parsed = []
    for line in lines:
        it = int(re.search(r"Iter\(train\) \[\s*(\d+)/", line).group(1))
        fields = dict(re.findall(r"(\w+): ([-+.\deE:]+)", line.split("]", 1)[1]))
        parsed.append((it, fields))
    return parsed


def test_log_line_has_losses_lr_grad_norm_scales_time_eta(straight):
    runner, n = straight["runner"], straight["n"]
    lines = parse_log_lines(straight["work_dir"])
    assert [it for it, _ in lines] == list(range(1, n + 1))
    lr = history(runner, "lr")
    expected = {"lr", "eta", "time", "data_time", "grad_norm", "loss", *LOSS_TERMS, "cma_warmup_scale",
                "aux_loss_warmup_scale"}
    for it, fields in lines:
        assert expected <= set(fields), (it, expected - set(fields))
        assert re.fullmatch(r"\d+:\d\d:\d\d", fields["eta"])
        assert float(fields["time"]) > 0 and float(fields["grad_norm"]) > 0
        assert float(fields["lr"]) == pytest.approx(lr[it - 1], rel=1e-4)
        # the scales in force at that iteration, not a window mean ('loss' in a name means smoothing)
        assert float(fields["cma_warmup_scale"]) == pytest.approx(linear_warmup(it - 1, n, CMA_RATIO), abs=1e-4)
        assert float(fields["aux_loss_warmup_scale"]) == pytest.approx(linear_warmup(it - 1, n, AUX_RATIO), abs=1e-4)
        assert float(fields["loss"]) == pytest.approx(sum(float(fields[t]) for t in LOSS_TERMS), abs=5e-4)
    assert len(set(lr)) > 3  # warm-up then cosine: the lr really moves


def test_resume_continues_as_the_uninterrupted_run(straight, synth_root, tmp_path):
    k, n = straight["k"], straight["n"]
    ckpt = osp.join(straight["work_dir"], f"iter_{k}.pth")
    assert osp.isfile(ckpt)
    resumed, rows = train(load_cfg(synth_root, max_iters=n, ckpt_every=-1, name="resumed"), tmp_path / "resumed",
                          resume=ckpt)
    assert resumed.iter == n and rows[0]["iter"] == k
    # same data in the same order, same warm-up scales in the model, iterations k+1..N
    assert [(r["batch"], r["tokens"]) for r in rows] == [(r["batch"], r["tokens"]) for r in straight["rows"][k:]]
    assert [(r["cma"], r["aux"]) for r in rows] == [(r["cma"], r["aux"]) for r in straight["rows"][k:]]
    assert 0 < rows[0]["aux"] < 1  # the resume lands inside the aux warm-up
    # same learning rate and the same losses (dropout and point sampling draw the same numbers)
    for key in ("lr", "loss", *LOSS_TERMS, "grad_norm"):
        np.testing.assert_allclose(history(resumed, key)[k:], history(straight["runner"], key)[k:], rtol=0,
                                   atol=1e-6, err_msg=key)


def test_checkpoint_loads_under_weights_only_and_keeps_the_rng_state(straight):
    allow_mmengine_checkpoints()
    k = straight["k"]
    ckpt = torch.load(osp.join(straight["work_dir"], f"iter_{k}.pth"), map_location="cpu", weights_only=True)
    assert ckpt["meta"]["iter"] == k
    [state] = ckpt["message_hub"]["runtime_info"]["rng_state"]  # one per process
    assert state["iter"] == k and state["torch"].dtype == torch.uint8
    assert ckpt["message_hub"]["log_scalars"]["train/loss"].mean(1) == pytest.approx(
        history(straight["runner"], "loss")[k - 1])


class _Reach:
    """Pickles as getattr(HistoryBuffer, name): what a hostile checkpoint would ask for."""

    def __init__(self, name):
        self.name = name

    def __reduce__(self):
        from mmengine.logging.history_buffer import HistoryBuffer

        return getattr, (HistoryBuffer, self.name)


def test_checkpoint_allowlist_hands_out_only_history_buffer_statistics(tmp_path):
    allow_mmengine_checkpoints()
    path = str(tmp_path / "x.pth")
    torch.save({"ok": _Reach("mean")}, path)
    loaded = torch.load(path, weights_only=True)["ok"]
    from mmengine.logging.history_buffer import HistoryBuffer

    assert loaded is HistoryBuffer.mean
    for name in ("__init__", "__class__", "update"):
        torch.save({"bad": _Reach(name)}, path)
        with pytest.raises(pickle.UnpicklingError, match="only HistoryBuffer"):
            torch.load(path, weights_only=True)


def test_tensorboard_switch(monkeypatch, synth_root):
    monkeypatch.setenv("SALMA_SYNTH_ROOT", synth_root)
    monkeypatch.delenv("SALMA_TENSORBOARD", raising=False)
    assert [b["type"] for b in Config.fromfile(CONFIG).visualizer.vis_backends] == ["LocalVisBackend"]
    monkeypatch.setenv("SALMA_TENSORBOARD", "1")
    assert [b["type"] for b in Config.fromfile(CONFIG).visualizer.vis_backends] == [
        "LocalVisBackend", "TensorboardVisBackend"]


@pytest.fixture
def one_process_group():
    """A one-process DeepSpeed group (gloo, no shared-memory op build), torn down after: see
    ``projects.salma.testing.one_process_deepspeed``."""
    with one_process_deepspeed("cpu"):
        yield


def test_deepspeed_zero2_trains_saves_and_resumes_on_cpu(synth_root, tmp_path, one_process_group, few_threads):
    n, k = 4, 2
    cfg = load_cfg(synth_root, max_iters=n, ckpt_every=k, name="zero2")
    straight, rows = train(cfg, tmp_path / "a", deepspeed="zero2")
    engine = straight.model.model
    assert type(engine).__name__ == "DeepSpeedEngine" and engine.zero_optimization_stage() == 2
    assert engine.bfloat16_enabled()  # the shipped JSON's bf16, on CPU
    assert next(engine.module.text_hidden_fcs.parameters()).dtype == torch.bfloat16
    assert osp.isfile(osp.join(tmp_path, "a", f"iter_{k}.pth", "mp_rank_00_model_states.pt"))
    np.testing.assert_allclose([r["aux"] for r in rows], [linear_warmup(i, n, AUX_RATIO) for i in range(n)], atol=1e-7)
    loss = history(straight, "loss")
    assert np.isfinite(loss).all() and loss[-1] < loss[0]
    for it, fields in parse_log_lines(str(tmp_path / "a")):
        assert {"lr", "grad_norm", "loss", *LOSS_TERMS, "aux_loss_warmup_scale", "eta", "time"} <= set(fields)
        assert float(fields["grad_norm"]) > 0

    resumed, rows_r = train(load_cfg(synth_root, max_iters=n, ckpt_every=-1, name="zero2_resumed"),
                            tmp_path / "b", deepspeed="zero2", resume=osp.join(tmp_path, "a", f"iter_{k}.pth"))
    assert rows_r[0]["iter"] == k
    assert [(r["batch"], r["aux"]) for r in rows_r] == [(r["batch"], r["aux"]) for r in rows[k:]]
    for key in ("lr", "loss", *LOSS_TERMS, "grad_norm"):
        np.testing.assert_allclose(history(resumed, key)[k:], history(straight, key)[k:], rtol=0, atol=1e-6,
                                   err_msg=key)


def test_deepspeed_zero2_trains_a_bf16_llm(synth_root, tmp_path, one_process_group, few_threads):
    """SALMA-1B's dtype mix (InternVL built in bf16, fp32 master copies of its trainable weights)
    under ZeRO-2 bf16: DeepSpeed keeps its own fp32 masters; the LLM's adapters and the [SEG]
    embedding row train, the loss stays finite."""
    cfg = load_cfg(synth_root, max_iters=3, ckpt_every=-1, name="zero2_bf16")
    cfg.model.mllm.torch_dtype = "bfloat16"
    runner = build_runner(apply_cli(cfg, work_dir=str(tmp_path), deepspeed="zero2"))
    seg_rows = []

    class SegRow(Hook):
        def before_train(self, runner):
            self.module = runner.model.model.module  # mmengine's wrapper -> DeepSpeedEngine -> the model
            seg_rows.append(self.seg_row().clone())

        def seg_row(self):
            return self.module.mllm.model.get_input_embeddings().weight[self.module.mllm.seg_token_id].detach().float()

    hook = SegRow()
    runner.register_hook(hook)
    runner.train()
    assert np.isfinite(history(runner, "loss")).all()
    assert hook.module.mllm.model.get_input_embeddings().weight.dtype == torch.bfloat16  # DeepSpeed's bf16 copy
    lora_b = {n: p for n, p in hook.module.named_parameters() if "lora_B" in n}
    assert lora_b and [n for n, p in lora_b.items() if not p.detach().abs().sum() > 0] == []  # zero at init
    assert not torch.equal(hook.seg_row(), seg_rows[0])


@pytest.mark.parametrize("choice,cuda,expected", [
    ("auto", True, "DeepSpeedStrategy"),  # tools/dist_train.sh on GPUs: ZeRO-2, as the original's launch
    ("auto", False, None),  # CPU processes (gloo): mmengine's runner
    ("none", True, None),  # the opt-out: AMP + DDP
    (None, True, None),  # tools/train.py without the flag
    ("zero2", False, "DeepSpeedStrategy"),
])
def test_dist_train_defaults_to_zero2_on_gpus_only(choice, cuda, expected, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    cfg = apply_cli(Config.fromfile(CONFIG), deepspeed=choice, launcher="pytorch")
    assert (cfg.get("strategy") or {}).get("type") == expected
    if expected:
        assert cfg.runner_type == "FlexibleRunner" and cfg.strategy["zero_optimization"]["stage"] == 2
        assert cfg.optim_wrapper["type"] == "DeepSpeedOptimWrapper"


def test_dist_train_sh_passes_auto_unless_deepspeed_is_given(tmp_path):
    """The launcher script adds ``--deepspeed auto`` only when the user gave no --deepspeed."""
    import subprocess

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python").write_text('#!/bin/sh\necho "$@"\n')
    (fake / "python").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}

    def args(*extra):
        out = subprocess.run(["bash", "tools/dist_train.sh", CONFIG, "2", *extra], env=env, check=True,
                             capture_output=True, text=True).stdout.split()
        return out[out.index("tools/train.py"):]

    assert args() == ["tools/train.py", CONFIG, "--launcher", "pytorch", "--deepspeed", "auto"]
    assert args("--deepspeed", "none") == ["tools/train.py", CONFIG, "--launcher", "pytorch", "--deepspeed", "none"]
    assert args("--deepspeed=zero2")[-1] == "--deepspeed=zero2" and "auto" not in args("--deepspeed=zero2")
