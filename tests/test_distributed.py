"""Several processes through the real launchers, on CPU (gloo): tools/dist_train.sh and dist_test.sh.

The tiny model on a small synthetic mix of RefCOCO-style items (masks) and LLaVA-style items (no
mask), in SALMA-1B's loop and sampler (ResumableEpochBasedTrainLoop, LengthGroupedSampler), with
2 processes of batch 1 accumulating 2 batches per step (a global batch of 4): 3 epochs of 4
iterations per process, a checkpoint after iteration 6 (epoch 1, batch 2: a mid-epoch resume).

- DDP: each process gets its share of the one-process order; a step where one process's batch has
  no mask and the other's has trains (DDP's ``find_unused_parameters`` stays False; without the
  model's idle grounding loss that step leaves the other rank waiting in an all-reduce until the
  gloo timeout); after the 6 steps the weights equal one process accumulating 4 batches of 1 in
  the same order, which is the objective of the global batch: the mean of the batches' losses.
  (One batch of 4 items is another objective: the LLM loss is a mean over the batch's answer
  tokens, the mask losses over its (object, frame) pairs, TMC contrasts the batch's objects.)
  Every random draw (LoRA dropout, point sampling) comes from each process's own generator; the
  one-process run replays the two processes' generators in turn (:class:`SimulatedRanks`), so it
  is the same computation and any difference is gradient reduction arithmetic.
- Resume: each process gets its own generators and sampler position back, so the losses of every
  rank after the checkpoint equal the uninterrupted run's, under DDP (Runner) and ZeRO-2
  (FlexibleRunner + DeepSpeed). The DDP resume runs as two one-process "nodes" (NNODES,
  NODE_RANK, MASTER_ADDR, PORT).
- tools/dist_test.sh with 2 processes gives the one-process numbers.

Per-rank batches and losses come from tests/dist_probe.py (mmengine logs rank 0 only). Every
launch starts 2 Python processes importing torch, transformers and mmengine: the launches are
few and each serves several checks.
"""
import json
import os
import os.path as osp
import signal
import subprocess
import time

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook

from test_train_engine import read_config

from projects.salma.engine.checkpoint import allow_mmengine_checkpoints
from projects.salma.engine.runner import apply_cli, build_runner
from projects.salma.testing import free_port

pytestmark = pytest.mark.slow

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TESTS = osp.join(REPO, "tests")
WORLD, ACCUMULATE, EPOCHS = 2, 2, 3
ITEMS = 8  # 6 RefCOCO-style + 2 LLaVA-style
ITERS = EPOCHS * ITEMS // WORLD  # per process
RESUME_AT = 6  # epoch 1, batch 2; a step boundary (6 % ACCUMULATE == 0)
# Float tolerance of DDP vs one process: gloo sums the two gradients in another order than the
# accumulation does; the rounding (~1e-7 relative) passes through AdamW's normalisation.
WEIGHT_ATOL = 1e-5
LAUNCH_TIMEOUT = 300


# ------------------------------------------------------------------ helpers
def launch_env(**extra) -> dict:
    """The user's environment plus tests/ on the path (dist_probe) and one thread per process."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, TESTS]), "OMP_NUM_THREADS": "1",
            "PORT": str(free_port()), **{k: str(v) for k, v in extra.items()}}


def check(procs: list, what: str) -> float:
    """Wait for the launcher processes; fail with the end of their output if one failed or hung
    (its whole process group, workers included, is then stopped). Returns the seconds waited."""
    start = time.time()
    outputs = []
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=max(1.0, LAUNCH_TIMEOUT - (time.time() - start)))
        except subprocess.TimeoutExpired:
            for p in procs:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
            out = proc.communicate()[0]
            pytest.fail(f"{what} still running after {LAUNCH_TIMEOUT} s:\n{out[-6000:]}")
        outputs.append(out)
    failed = [(p.returncode, out) for p, out in zip(procs, outputs) if p.returncode]
    if failed:
        pytest.fail(f"{what} exited with {failed[0][0]}:\n{failed[0][1][-6000:]}")
    return time.time() - start


def dist_tool(tool: str, config: str, nprocs: int, *args, env: dict | None = None) -> subprocess.Popen:
    """``tools/<tool> config nprocs args...`` in its own process group (see :func:`check`)."""
    return subprocess.Popen(["bash", osp.join(REPO, "tools", tool), config, str(nprocs), *map(str, args)],
                            cwd=REPO, env=env or launch_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def probe(work_dir, rank: int) -> tuple[dict, list[dict]]:
    """(start row, iteration rows) that dist_probe wrote for ``rank``."""
    with open(osp.join(work_dir, f"probe_rank{rank}.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert rows[0]["event"] == "start" and all(r["event"] == "iter" for r in rows[1:])
    return rows[0], rows[1:]


def losses(rows: list[dict]) -> np.ndarray:
    """(iterations, terms) in a fixed order; a batch without mask has only loss_llm / loss_mask."""
    keys = ("loss", "loss_llm", "loss_mask", "loss_dice", "loss_tmc", "loss_boundary")
    return np.array([[r["losses"].get(k, np.nan) for k in keys] for r in rows], dtype=np.float64)


def checkpoint_weights(path: str, names) -> dict[str, torch.Tensor]:
    allow_mmengine_checkpoints()
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return {k: state[k].float() for k in names}


def train_config(root: str, out: str, *, batch: int = 1, accumulate: int = ACCUMULATE,
                 sampler_batch: int | None = None, checkpoint_every: int = RESUME_AT) -> str:
    """The tiny synthetic config on the RefCOCO + LLaVA mix, this module's schedule; the path.

    ``sampler_batch`` (default ``batch``): the length-grouped sampler cuts its order into batches
    of ``sampler_batch`` x processes; one process with ``WORLD`` here has the launched runs' order.
    """
    cfg = read_config(root)  # configs/tiny/salma_tiny_synthetic.py on root
    refcoco = cfg.train_dataloader.dataset.datasets[0]
    llava = dict(type="LLaVADataset", name="llava_synth", tokenizer=cfg.tokenizer, mode="train",
                 data_file=osp.join(root, "llava_synth", "llava.json"),
                 image_folder=osp.join(root, "refcoco_synth", "images"), **cfg.image_args)
    cfg.custom_imports = dict(imports=["dist_probe"], allow_failed_imports=False)
    cfg.train_dataloader.batch_size = batch
    cfg.train_dataloader.dataset = dict(type="DatasetMix", datasets=[refcoco, llava])
    cfg.train_dataloader.sampler = dict(type="LengthGroupedSampler", per_device_batch_size=sampler_batch or batch,
                                        seed=1)
    cfg.train_cfg = dict(type="ResumableEpochBasedTrainLoop", max_epochs=EPOCHS)
    cfg.optim_wrapper.accumulative_counts = accumulate
    cfg.param_scheduler = None  # constant lr: a step's lr does not depend on iterations per step
    cfg.custom_hooks = [dict(type="RankProbeHook")]  # no warm-up ramps (same reason); the scales stay 1
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint = dict(type="CheckpointHook", by_epoch=False, interval=checkpoint_every,
                                        max_keep_ckpts=-1, save_last=True)
    cfg.randomness = dict(seed=0)
    # a rank waiting for another that will never join a collective (e.g. gradients of unused
    # parameters) fails after 2 minutes instead of hanging
    cfg.env_cfg.dist_cfg = dict(backend="gloo", timeout=120)
    path = osp.join(out, f"train_b{batch}_acc{accumulate}.py")
    cfg.dump(path)
    return path


class TrainableSnapshot(Hook):
    """The trainable parameters as training starts (after mmengine's weight initialisation)."""

    def before_train(self, runner):
        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        self.initial = {n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}


class SimulatedRanks(Hook):
    """One process drawing as ``world`` processes do: iteration i runs on the torch generator of
    rank ``i % world`` (all start from the same state, as launched ranks with one seed do)."""

    priority = "LOWEST"  # before_train_iter: after RNGStateHook has put the running state back

    def __init__(self, world: int) -> None:
        self.world = world
        self.streams: list[torch.Tensor] | None = None

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if self.streams is None:
            self.streams = [torch.get_rng_state()] * self.world
        torch.set_rng_state(self.streams[runner.iter % self.world])

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.streams[runner.iter % self.world] = torch.get_rng_state()


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from projects.salma.datasets.synthetic import make_synthetic

    out = str(tmp_path_factory.mktemp("dist_synth"))
    make_synthetic(out, seed=0, num_images=6, num_val_images=2, num_videos=1, num_val_videos=2, num_frames=4,
                   num_llava=2, num_gcg=0)
    return out


@pytest.fixture(scope="module")
def ddp(synth, tmp_path_factory):
    """2 processes, DDP on gloo, batch 1, 2 accumulated batches per step, 3 epochs."""
    out = tmp_path_factory.mktemp("ddp")
    config = train_config(synth, str(out))
    work_dir = str(out / "work")
    seconds = check([dist_tool("dist_train.sh", config, WORLD, "--work-dir", work_dir)], "dist_train.sh (DDP)")
    print(f"\n[timing] dist_train.sh {WORLD} processes, DDP, {ITERS} iterations: {seconds:.1f} s")
    return dict(config=config, work_dir=work_dir, out=out)


# ------------------------------------------------------------------ DDP
def test_ddp_equals_one_process_accumulating_the_global_batch(ddp, synth, tmp_path):
    starts, rows = zip(*(probe(ddp["work_dir"], r) for r in range(WORLD)))
    for rank, start in enumerate(starts):
        assert start["rank_world"] == [rank, WORLD] and start["backend"] == "gloo"
        assert start["wrapper"] == "MMDistributedDataParallel" and start["find_unused_parameters"] is False
        assert [r["iter"] for r in rows[rank]] == list(range(ITERS))
    # a step that reduces gradients (the last batch of an accumulation) with a mask on one
    # process only: the idle grounding loss keeps every trainable module in both graphs
    sync_iters = [i for i in range(ITERS) if i % ACCUMULATE == ACCUMULATE - 1]
    assert any(sorted(rows[r][i]["has_mask"][0] for r in range(WORLD)) == [False, True] for i in sync_iters)

    # one process: batch 1, accumulating WORLD * ACCUMULATE batches, the same order and draws
    start = time.time()
    config = train_config(synth, str(tmp_path), accumulate=WORLD * ACCUMULATE, sampler_batch=WORLD,
                          checkpoint_every=WORLD * ITERS)
    runner = build_runner(apply_cli(Config.fromfile(config), work_dir=str(tmp_path / "one")))
    snapshot = TrainableSnapshot()
    for hook in (snapshot, SimulatedRanks(WORLD)):
        runner.register_hook(hook)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the launched processes run one thread each
    try:
        runner.train()
    finally:
        torch.set_num_threads(threads)
    print(f"\n[timing] one process, {WORLD * ITERS} iterations: {time.time() - start:.1f} s")
    _, one = probe(str(tmp_path / "one"), 0)
    assert len(one) == WORLD * ITERS
    # process r's iteration i is the one-process iteration WORLD * i + r: same items, same losses
    loss_diff = 0.0
    for rank in range(WORLD):
        mine = one[rank::WORLD]
        assert [r["items"] for r in rows[rank]] == [r["items"] for r in mine]
        np.testing.assert_allclose(losses(rows[rank]), losses(mine), rtol=0, atol=1e-5, err_msg=f"rank {rank}")
        loss_diff = max(loss_diff, np.nanmax(np.abs(losses(rows[rank]) - losses(mine))))
    initial = snapshot.initial
    ours = checkpoint_weights(osp.join(ddp["work_dir"], f"iter_{ITERS}.pth"), initial)
    ref = checkpoint_weights(str(tmp_path / "one" / f"iter_{WORLD * ITERS}.pth"), initial)
    moved = max((ref[k] - initial[k]).abs().max().item() for k in ref)
    diff = max((ours[k] - ref[k]).abs().max().item() for k in ours)
    print(f"\n[weights] DDP {WORLD}x1x{ACCUMULATE} vs 1x1x{WORLD * ACCUMULATE} after {ITERS // ACCUMULATE} steps: "
          f"max |diff| = {diff:.3g} over {len(ours)} trainable tensors (largest change from init {moved:.3g}); "
          f"per-rank losses max |diff| = {loss_diff:.3g}")
    assert len(initial) > 10 and moved > 100 * WEIGHT_ATOL  # the weights did move: the comparison can fail
    assert diff <= WEIGHT_ATOL


def test_ddp_resume_on_two_nodes_gives_each_rank_its_own_state(ddp, tmp_path):
    """Resumed from iteration 6 as 2 one-process "nodes" (NNODES, NODE_RANK, MASTER_ADDR, PORT):
    every rank continues its own sampler order with its own generators, as without the stop."""
    ckpt = osp.join(ddp["work_dir"], f"iter_{RESUME_AT}.pth")
    work_dir = str(tmp_path / "resumed")
    port = free_port()
    nodes = [dist_tool("dist_train.sh", ddp["config"], 1, "--work-dir", work_dir, "--resume", ckpt,
                       env=launch_env(NNODES=WORLD, NODE_RANK=node, MASTER_ADDR="127.0.0.1", PORT=port))
             for node in range(WORLD)]
    seconds = check(nodes, "dist_train.sh on 2 nodes (DDP resume)")
    print(f"\n[timing] dist_train.sh, {WORLD} nodes x 1 process, DDP resume, {ITERS - RESUME_AT} iterations: "
          f"{seconds:.1f} s")
    for node in range(WORLD):
        start, rows = probe(work_dir, node)
        assert start["env"] == dict(RANK=str(node), LOCAL_RANK="0", WORLD_SIZE=str(WORLD), GROUP_RANK=str(node),
                                    LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        assert start["rank_world"] == [node, WORLD] and start["backend"] == "gloo"
        _, straight = probe(ddp["work_dir"], node)
        assert [(r["iter"], r["batch_idx"], r["items"]) for r in rows] == [
            (r["iter"], r["batch_idx"], r["items"]) for r in straight[RESUME_AT:]]
        np.testing.assert_allclose(losses(rows), losses(straight[RESUME_AT:]), rtol=0, atol=1e-6,
                                   err_msg=f"rank {node}")
        assert {r["has_mask"][0] for r in rows} == {True, False}  # point sampling and dropout-only batches
    # the test can fail: the ranks' generators differ at the checkpoint (rank 0's on both would not do)
    allow_mmengine_checkpoints()
    states = torch.load(ckpt, map_location="cpu", weights_only=True)["message_hub"]["runtime_info"]["rng_state"]
    assert len(states) == WORLD and not torch.equal(states[0]["torch"], states[1]["torch"])
    names = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"].keys()
    ours = checkpoint_weights(osp.join(work_dir, f"iter_{ITERS}.pth"), names)
    ref = checkpoint_weights(osp.join(ddp["work_dir"], f"iter_{ITERS}.pth"), names)
    assert max((ours[k] - ref[k]).abs().max().item() for k in ours) <= 1e-6


# ------------------------------------------------------------------ ZeRO-2
def test_zero2_on_two_processes_trains_saves_and_resumes_each_rank(ddp, tmp_path):
    """FlexibleRunner + DeepSpeed ZeRO-2 (the shipped JSON: bf16) on 2 processes, then resumed
    from iteration 6: each rank's items and losses after the checkpoint equal the uninterrupted run's."""
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    seconds = check([dist_tool("dist_train.sh", ddp["config"], WORLD, "--work-dir", straight, "--deepspeed", "zero2")],
                    "dist_train.sh --deepspeed zero2")
    print(f"\n[timing] dist_train.sh {WORLD} processes, ZeRO-2, {ITERS} iterations: {seconds:.1f} s")
    ckpt = osp.join(straight, f"iter_{RESUME_AT}.pth")
    assert sorted(os.listdir(ckpt)) == ["bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt",
                                        "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt",
                                        "mp_rank_00_model_states.pt"]  # each rank's optimizer partition
    seconds = check([dist_tool("dist_train.sh", ddp["config"], WORLD, "--work-dir", resumed, "--deepspeed", "zero2",
                               "--resume", ckpt)], "dist_train.sh --deepspeed zero2 --resume")
    print(f"\n[timing] dist_train.sh {WORLD} processes, ZeRO-2 resume, {ITERS - RESUME_AT} iterations: {seconds:.1f} s")
    for rank in range(WORLD):
        start, rows = probe(straight, rank)
        assert start["rank_world"] == [rank, WORLD] and start["backend"] == "gloo" and start["zero_stage"] == 2
        assert [r["iter"] for r in rows] == list(range(ITERS)) and np.isfinite(losses(rows)[:, 0]).all()
        _, after = probe(resumed, rank)
        assert [(r["iter"], r["batch_idx"], r["items"]) for r in after] == [
            (r["iter"], r["batch_idx"], r["items"]) for r in rows[RESUME_AT:]]
        np.testing.assert_allclose(losses(after), losses(rows[RESUME_AT:]), rtol=0, atol=1e-6, err_msg=f"rank {rank}")
    allow_mmengine_checkpoints()
    saved = torch.load(osp.join(ckpt, "mp_rank_00_model_states.pt"), map_location="cpu", weights_only=False)
    states = saved["message_hub"]["runtime_info"]["rng_state"]
    assert len(states) == WORLD and not torch.equal(states[0]["torch"], states[1]["torch"])
    ours, ref = (torch.load(osp.join(d, f"iter_{ITERS}.pth", "mp_rank_00_model_states.pt"), map_location="cpu",
                            weights_only=False)["module"] for d in (resumed, straight))
    assert ours.keys() == ref.keys() and all(torch.equal(ours[k], ref[k]) for k in ours)


# ------------------------------------------------------------------ evaluation
def test_dist_test_on_two_processes_gives_the_one_process_numbers(ddp, tmp_path):
    """tools/dist_test.sh CFG 2 (the config's synthetic RefCOCO val and MeViS valid_u; the model
    built from the config, seed 0) gives the numbers and masks of one process. The LLM is
    steered to test_eval_e2e's answers: [SEG] except for plain prompts about squares."""
    from test_eval_e2e import answer_for, metrics_of, read_records, run_tool

    from projects.salma.testing import forced_answer

    config = str(tmp_path / "eval.py")
    with open(config, "w") as f:
        f.write(f"_base_ = [{ddp['config']!r}]\n"
                "custom_imports = dict(imports=['dist_fake_llm'], allow_failed_imports=False)\n")
    two, one = tmp_path / "two", tmp_path / "one"
    seconds = check([dist_tool("dist_test.sh", config, WORLD, "--checkpoint", "none", "--work-dir", two)],
                    "dist_test.sh")
    print(f"\n[timing] dist_test.sh {WORLD} processes: {seconds:.1f} s")
    threads = torch.get_num_threads()
    try:
        with forced_answer(answer_for):
            run_tool(config, "--checkpoint", "none", "--work-dir", one)
    finally:
        torch.set_num_threads(threads)
    metrics = metrics_of(str(one))
    assert metrics_of(str(two)) == metrics
    assert sorted(metrics) == ["mevis_synth/valid_u", "refcoco_synth/val"]
    # the masks path ran: some predicted masks overlap the objects
    assert metrics["refcoco_synth/val"]["gIoU"] > 0 and metrics["mevis_synth/valid_u"]["J"] > 0
    for run in metrics:
        assert {"results-rank0.jsonl", "results-rank1.jsonl"} <= set(os.listdir(two / run))
        ours, ref = read_records(str(two / run)), read_records(str(one / run))
        assert ours == ref and len(ref) > 1  # every item, the same masks
