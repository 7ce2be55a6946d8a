"""Test and benchmark helpers (never used by the package itself).

``make_batch``: contract-conforming random batches (no dataset needed). The real batches come from
``projects.salma.datasets``; this builds the same keys directly from the model's tokenizer and
sizes, so model tests and latency benchmarks do not depend on files.

``forced_answer``: the real generation, steered to a given answer (e.g. one with ``[SEG]``), so
predict tests and benchmarks take the mask path with a random LLM.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch

from .constants import IGNORE_INDEX, IM_END, IM_START, IMG_CONTEXT_TOKEN, IMG_END_TOKEN, IMG_START_TOKEN
from .models.mllm import InternVLMLLM

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


def make_batch(
    model,
    samples: list[tuple[int, int]],
    *,
    tile_size: int,
    sam_size: int,
    mask_size: tuple[int, int] = (48, 64),
    with_answer: bool = True,
    seed: int = 0,
) -> dict:
    """A batch with one row per ``(n_objects, n_frames)``; ``n_objects == 0`` is a text+image row
    without masks. Masks are random rectangles at ``mask_size``."""
    generator = torch.Generator().manual_seed(seed)
    tokenizer = model.tokenizer
    image_tokens = model.mllm.model.config.image_seq_length
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
    seg_id = model.mllm.seg_token_id
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
    """Test helper (never used by the package): while active, every ``InternVLMLLM.generate``
    call runs the real greedy generation (the model's forward with its image tiles, KV cache,
    ``suppress_tokens``, eos handling) with ``bias`` added to one LM-head logit per step, so that
    it emits ``answer`` and then eos.

    A random tiny LLM rarely emits ``[SEG]``; without this a predict test takes the empty path
    (no mask) and passes without testing the masks.

    Args:
        answer: the answer text, or a function of each row's decoded prompt giving its answer.
        bias: what is added to the logit of the token to emit.
    """
    original = InternVLMLLM.generate

    def generate(self, input_ids, attention_mask, pixel_values=None, max_new_tokens=32):
        tokenizer = self.tokenizer
        targets = []  # per row: the token ids to emit, then eos
        for row in input_ids:
            text = answer(tokenizer.decode(row)) if callable(answer) else answer
            targets.append(tokenizer(text, add_special_tokens=False).input_ids + [tokenizer.eos_token_id])
        step = 0

        def bias_next_token(module, args, kwargs, output):
            nonlocal step
            for b, ids in enumerate(targets):  # logits (B, T, V): the last position predicts the next token
                output.logits[b, -1, ids[min(step, len(ids) - 1)]] += bias
            step += 1
            return output

        handle = self.model.register_forward_hook(bias_next_token, with_kwargs=True)
        try:
            return original(self, input_ids, attention_mask, pixel_values, max_new_tokens)
        finally:
            handle.remove()

    InternVLMLLM.generate = generate
    try:
        yield
    finally:
        InternVLMLLM.generate = original


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
