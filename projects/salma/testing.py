"""Test and benchmark helpers (never used by the package itself).

``real_size_model_cfg``: SALMA-1B's model config at real size with random weights (no files).

``make_batch``: contract-conforming random batches (no dataset needed). The real batches come from
``projects.salma.datasets``; this builds the same keys directly from the model's tokenizer and
sizes, so model tests and latency benchmarks do not depend on files.

``forced_answer``: the real generation, steered to a given answer (e.g. one with ``[SEG]``), so
predict tests and benchmarks take the mask path with a random LLM.

``one_process_deepspeed``: DeepSpeed ZeRO through the project's runner in one process (tests and
``tools/gpu_check.py``).
"""
from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Callable, Iterator

import torch

from .constants import IGNORE_INDEX, IM_END, IM_START, IMG_CONTEXT_TOKEN, IMG_END_TOKEN, IMG_START_TOKEN, SEG_TOKEN
from .models.mllm import InternVLMLLM, QwenVLMLLM

EXPRESSION = "the red circle on the left"


def _sample(tokenizer, n_obj: int, n_frames: int, image_tokens: int, with_answer: bool = True):
    image = IMG_START_TOKEN + IMG_CONTEXT_TOKEN * image_tokens + IMG_END_TOKEN + "\n"
    ids, labels, expr = [], [], []

    def add(text: str, supervised: bool, expr_index: int = -1) -> None:
        piece = tokenizer(text, add_special_tokens=False).input_ids
        ids.extend(piece)
        labels.extend(piece if supervised else [IGNORE_INDEX] * len(piece))
        expr.extend([expr_index] * len(piece))

    for k in range(n_obj):
        add(f"{IM_START}user\n" + (image * n_frames if k == 0 else "") + "Please segment ", False)
        add(EXPRESSION, False, expr_index=k)
        add(f".{IM_END}\n{IM_START}assistant\n", False)
        if with_answer or k < n_obj - 1:
            add(f"It is [SEG].{IM_END}", True)
            add("\n", False)
    return torch.tensor(ids), torch.tensor(labels), torch.tensor(expr)


def real_size_model_cfg(cfg, *, llm_dtype: str | None = None, arch: str | None = None):
    """``cfg.model`` at real size with random weights and no files (benchmarks, the GPU check): the
    MLLM architecture block ``cfg[arch]`` (default: the config's own, the one ``*_arch`` block it
    defines beyond InternVL2.5-1B's ``internvl2_5_1b_arch`` of ``configs/_base_/models/salma_1b.py``),
    SAM-2.1 hiera-large, and the tiny tokenizer of the MLLM's family (its ids fit the real
    vocabulary). ``llm_dtype`` overrides the config's MLLM dtype."""
    model_cfg = copy.deepcopy(cfg.model)
    arch = arch or own_arch(cfg)
    model_cfg.mllm.model_path = None
    model_cfg.mllm.config = copy.deepcopy(cfg[arch])
    if llm_dtype is not None:
        model_cfg.mllm.torch_dtype = llm_dtype
    family = "qwen_vl" if model_cfg.mllm.type == "QwenVLMLLM" else "internvl"
    model_cfg.mllm.tokenizer = dict(type="build_tiny_tokenizer", family=family)
    model_cfg.grounding_encoder.sam2 = dict(size="large")
    return model_cfg


def own_arch(cfg) -> str:
    """The name of the MLLM architecture block a config defines for random-weight builds."""
    blocks = sorted(k for k in cfg if k.endswith("_arch"))
    own = [k for k in blocks if k != "internvl2_5_1b_arch"] or [k for k in blocks]
    if len(own) != 1:
        raise ValueError(f"{cfg.filename}: cannot tell the MLLM architecture block among {blocks}; name it (arch=)")
    return own[0]


def make_batch(model, samples: list[tuple[int, int]], **kwargs) -> dict:
    """A batch for ``model`` (its tokenizer and image tokens per tile); see :func:`make_batch_for`."""
    return make_batch_for(model.tokenizer, model.mllm.model.config.image_seq_length, samples, **kwargs)


def make_batch_for(
    tokenizer,
    image_tokens: int,
    samples: list[tuple[int, int]],
    *,
    tile_size: int,
    sam_size: int,
    mask_size: tuple[int, int] = (48, 64),
    with_answer: bool = True,
    seed: int = 0,
) -> dict:
    """A batch with one row per ``(n_objects, n_frames)``; ``n_objects == 0`` is a text+image row
    without masks. Masks are random rectangles at ``mask_size``. ``tokenizer``: the model's (with
    SALMA's tokens); ``image_tokens``: InternVL tokens per tile (so no model is needed)."""
    generator = torch.Generator().manual_seed(seed)
    rows = [_sample(tokenizer, max(n, 1), t, image_tokens, with_answer) for n, t in samples]
    length = max(len(r[0]) for r in rows)

    def pad(values, fill):
        return torch.stack([torch.cat([v, torch.full((length - len(v),), fill, dtype=v.dtype)]) for v in values])

    masks = []
    for n_obj, n_frames in samples:
        if n_obj == 0:
            masks.append(None)
            continue
        m = torch.zeros(n_obj, n_frames, *mask_size, dtype=torch.uint8)
        for k in range(n_obj):
            y0, x0 = torch.randint(0, mask_size[0] // 2, (2,), generator=generator).tolist()
            m[k, :, y0 : y0 + mask_size[0] // 3, x0 : x0 + mask_size[1] // 3] = 1
        masks.append(m)
    seg_id = tokenizer.convert_tokens_to_ids(SEG_TOKEN)
    labels = pad([r[1] for r in rows], IGNORE_INDEX)
    input_ids = pad([r[0] for r in rows], tokenizer.pad_token_id)
    for b, (n_obj, _) in enumerate(samples):
        if n_obj == 0:  # no masks: the answer must not contain [SEG]
            input_ids[b][input_ids[b] == seg_id] = tokenizer.convert_tokens_to_ids(".")
            labels[b][labels[b] == seg_id] = tokenizer.convert_tokens_to_ids(".")
    return {
        "input_ids": input_ids,
        "attention_mask": pad([torch.ones(len(r[0]), dtype=torch.bool) for r in rows], False),
        "labels": labels,
        "expr_ids": pad([r[2] for r in rows], -1),
        "pixel_values": torch.randn(sum(t for _, t in samples), 3, tile_size, tile_size, generator=generator),
        "g_pixel_values": [
            torch.randn(t, 3, sam_size, sam_size, generator=generator) if n else None for n, t in samples
        ],
        "masks": masks,
        "meta": [{"id": f"dummy{b}", "orig_size": mask_size} for b in range(len(samples))],
    }


# ---------------------------------------------------------------------------------------------
# Test-only: make the real greedy generation answer what a test needs
# ---------------------------------------------------------------------------------------------
FORCING_BIAS = 1e4  # added to one logit per step: far above any logit of a real or random LM head


@contextlib.contextmanager
def forced_answer(answer: str | Callable[[str], str], *, bias: float = FORCING_BIAS) -> Iterator[None]:
    """Test helper (never used by the package): while active, every ``generate`` call of an MLLM
    (``InternVLMLLM``, ``QwenVLMLLM``) runs the real greedy generation (the model's forward with its
    image inputs, KV cache, suppressed tokens, eos handling) with ``bias`` added to one LM-head
    logit per step, so that it emits ``answer`` and then eos.

    A random tiny LLM rarely emits ``[SEG]``; without this a predict test takes the empty path
    (no mask) and passes without testing the masks.

    Args:
        answer: the answer text, or a function of each row's decoded prompt giving its answer.
        bias: what is added to the logit of the token to emit.
    """
    originals = {cls: cls.generate for cls in (InternVLMLLM, QwenVLMLLM)}

    def generate(self, input_ids, attention_mask, pixel_values=None, max_new_tokens=32, **kwargs):
        tokenizer = self.tokenizer
        targets = []  # per row: the token ids to emit, then eos
        for row in input_ids:
            text = answer(tokenizer.decode(row)) if callable(answer) else answer
            targets.append(tokenizer(text, add_special_tokens=False).input_ids + [tokenizer.eos_token_id])
        step = 0

        def bias_next_token(module, args, output):
            nonlocal step
            for b, ids in enumerate(targets):  # (B, T, V) or (B, V): the last position predicts the next token
                row = output[b] if output.dim() == 2 else output[b, -1]
                row[ids[min(step, len(ids) - 1)]] += bias
            step += 1
            return output

        handle = self.model.lm_head.register_forward_hook(bias_next_token)  # generation's only LM-head calls
        try:
            return originals[type(self)](self, input_ids, attention_mask, pixel_values, max_new_tokens, **kwargs)
        finally:
            handle.remove()

    for cls in originals:
        cls.generate = generate
    try:
        yield
    finally:
        for cls, original in originals.items():
            cls.generate = original


def assert_nontrivial_masks(masks, what: str = "masks") -> None:
    """Test helper: every mask (the last two dimensions) has both foreground and background, so a
    test that compares it with another is not comparing two empty (or two full) masks."""
    flat = torch.as_tensor(masks).flatten(-2)  # (..., H*W)
    if flat.numel() == 0:
        raise AssertionError(f"{what}: no masks at all (shape {tuple(flat.shape)})")
    area = flat.bool().sum(-1)
    trivial = (area == 0) | (area == flat.shape[-1])
    if trivial.any():
        raise AssertionError(f"{what}: {int(trivial.sum())} of {trivial.numel()} masks are empty or all foreground "
                             f"(foreground pixels per mask: {area.flatten().tolist()[:20]})")


# ---------------------------------------------------------------------------------------------
# DeepSpeed in one process (tests, tools/gpu_check.py)
# ---------------------------------------------------------------------------------------------
def free_port() -> int:
    """A TCP port free on this machine now (for a process group's MASTER_PORT)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def one_process_deepspeed(device: torch.device | str = "cpu") -> Iterator[None]:
    """Run mmengine's FlexibleRunner + DeepSpeedStrategy in this one process (world size 1), as
    often as needed in a row; everything is restored on exit.

    * The process-group environment DeepSpeed reads: rank 0 of 1 on a free local port. The runner's
      launcher stays 'none' (mmengine's 'pytorch' launcher calls ``torch.cuda.set_device``, which
      a CPU build lacks); DeepSpeed initialises the group itself (gloo on the CPU, nccl on CUDA).
    * On the CPU, DeepSpeed's shared-memory allreduce is not built: a JIT compile (about 100 s on
      2 cores, once per machine) of an op that one process never uses.
    * mmengine registers DeepSpeed's optimizers in every DeepSpeedStrategy without ``force``, so a
      second strategy in one process raises 'already registered': the registration runs once.
    * On exit the process group is destroyed and DeepSpeed's backend handle and its cached clone of
      the world group reset, so the next run starts a fresh group.
    """
    import importlib

    from mmengine.registry import OPTIMIZERS

    ds_comm = importlib.import_module("deepspeed.comm.comm")
    ds_torch = importlib.import_module("deepspeed.comm.torch")  # `import ... as` finds deepspeed.comm's `torch`
    ds_groups = importlib.import_module("deepspeed.utils.groups")
    mm_ds = importlib.import_module("mmengine._strategy.deepspeed")
    env = dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    if torch.device(device).type == "cpu":
        env["DS_ACCELERATOR"] = "cpu"
    saved_env = {k: os.environ.get(k) for k in env}
    build_shm_op, register = ds_torch.build_shm_op, mm_ds.register_deepspeed_optimizers
    os.environ.update(env)
    if torch.device(device).type == "cpu":
        ds_torch.build_shm_op = lambda: None
    ds_comm.cdb = None
    ds_groups._WORLD_GROUP = None
    mm_ds.register_deepspeed_optimizers = lambda: [] if "DeepSpeedCPUAdam" in OPTIMIZERS.module_dict else register()
    try:
        yield
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        ds_torch.build_shm_op, mm_ds.register_deepspeed_optimizers = build_shm_op, register
        ds_comm.cdb = None
        ds_groups._WORLD_GROUP = None
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
