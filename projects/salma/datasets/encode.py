"""Tokenise a rendered conversation: input_ids, labels (answers only) and the expression map.

Each piece of :func:`chat.render_conversation` is tokenised on its own (as xtuner's encode_fn does
per turn), so a label boundary never falls inside a token and the prompt tokens are exactly those
inference gets from :func:`encode_prompt`. Character spans recorded while rendering plus the
tokenizer's ``offset_mapping`` give ``expr_ids``: k on the tokens of the k-th ``[SEG]``'s expression.

Too long? Whole trailing turns are dropped (with their objects), never a part of a turn, so a
``[SEG]`` or an image's tokens are never cut; if even the first turn does not fit, DataError.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from ..constants import IGNORE_INDEX, IMG_CONTEXT_TOKEN, SEG_TOKEN
from .chat import DEFAULT_SYSTEM, Turn, render_conversation
from .errors import DataError


@dataclass
class EncodedConversation:
    input_ids: torch.Tensor  # (L,) long
    labels: torch.Tensor  # (L,) long, IGNORE_INDEX off the answers
    expr_ids: torch.Tensor  # (L,) long, -1 off the expressions
    num_turns: int  # turns kept (trailing ones may have been dropped)
    num_objects: int  # objects of the kept turns == number of [SEG] ids


def _bos(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    # Qwen2.5 (InternVL2.5-1B/4B) has no BOS; a LLaMA-style tokenizer gets its BOS, unlabelled.
    return [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]


def encode_conversation(
    turns: Sequence[Turn],
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int = 8192,
    system: str = DEFAULT_SYSTEM,
    objects_per_turn: Sequence[int] | None = None,
    image_tokens: int = 0,
    drop_turns: bool = True,
    source: str = "",
    context_token: str = IMG_CONTEXT_TOKEN,
) -> EncodedConversation:
    """Encode ``turns`` within ``max_length`` tokens.

    Every turn is answered, except possibly the last (a generation prompt: no labels, and it is
    kept whole or the sample is rejected).

    Args:
        objects_per_turn: masks the sample has for each turn; the kept ``[SEG]`` ids must match
            their sum (default: trust the answers' ``[SEG]`` count).
        image_tokens: image placeholder ids the sample must contain (all in the first turn).
        context_token: the placeholder (InternVL ``<IMG_CONTEXT>``, Qwen-VL ``<|image_pad|>``).
        drop_turns: False for evaluation items, which must keep every sentence.
        source: names the sample in errors (``"<file>: <id>"``).
    """
    if not turns or any(t.answer is None for t in turns[:-1]):
        raise ValueError(f"{source}: only the last turn may be unanswered")
    pieces = render_conversation(turns, system=system)
    enc = tokenizer([p.text for p in pieces], add_special_tokens=False, return_offsets_mapping=True)
    ids = [list(x) for x in enc["input_ids"]]
    bos = _bos(tokenizer)

    # Pieces: [prompt_0, answer_0, prompt_1, answer_1, ..., "\n"]: turn t = pieces 2t and 2t+1;
    # a generation prompt ends with its prompt piece (no answer, no trailing "\n").
    prompt_only = turns[-1].answer is None
    tail = [] if prompt_only else [len(pieces) - 1]
    budget = max_length - len(bos) - sum(len(ids[i]) for i in tail)
    kept = 0
    for t in range(len(turns)):
        budget -= sum(len(ids[i]) for i in range(2 * t, min(2 * t + 2, len(pieces) - len(tail))))
        if budget < 0:
            break
        kept += 1
    if kept == 0 or (kept < len(turns) and (not drop_turns or prompt_only)):
        total = len(bos) + sum(len(x) for x in ids)
        raise DataError(
            f"{source}: conversation of {total} tokens does not fit max_length={max_length} "
            f"({'first turn too long' if kept == 0 else 'evaluation items keep every turn'})",
            reason="too_long",
        )
    keep = list(range(min(2 * kept, len(pieces) - len(tail)))) + tail

    input_ids, labels, expr_ids = list(bos), [IGNORE_INDEX] * len(bos), [-1] * len(bos)
    for i in keep:
        piece, piece_ids = pieces[i], ids[i]
        input_ids += piece_ids
        labels += piece_ids if piece.is_target else [IGNORE_INDEX] * len(piece_ids)
        piece_expr = np.full(len(piece_ids), -1, dtype=np.int64)
        if piece.spans:
            offsets = np.asarray(enc["offset_mapping"][i], dtype=np.int64).reshape(-1, 2)
            for start, end, k in piece.spans:  # a token belongs to a span if it overlaps it
                piece_expr[(offsets[:, 0] < end) & (offsets[:, 1] > start)] = k
        expr_ids += piece_expr.tolist()

    input_ids_t = torch.tensor(input_ids, dtype=torch.long)
    seg_id = tokenizer.convert_tokens_to_ids(SEG_TOKEN)
    expected = (sum((t.answer or "").count(SEG_TOKEN) for t in turns[:kept]) if objects_per_turn is None
                else int(sum(objects_per_turn[:kept])))
    found = int((input_ids_t == seg_id).sum())
    if found != expected:
        raise DataError(
            f"{source}: {found} {SEG_TOKEN} tokens in input_ids but {expected} masks "
            f"(an expression or question containing '{SEG_TOKEN}'?)",
            reason="seg_mismatch",
        )
    img_found = int((input_ids_t == tokenizer.convert_tokens_to_ids(context_token)).sum())
    if img_found != image_tokens:
        raise DataError(
            f"{source}: {img_found} {context_token} tokens but the images need {image_tokens}",
            reason="image_token_mismatch",
        )
    return EncodedConversation(
        input_ids=input_ids_t,
        labels=torch.tensor(labels, dtype=torch.long),
        expr_ids=torch.tensor(expr_ids, dtype=torch.long),
        num_turns=kept,
        num_objects=expected,
    )


def encode_prompt(question: str, tokenizer: PreTrainedTokenizerBase, *, system: str = DEFAULT_SYSTEM,
                  history: Sequence[tuple[str, str]] = ()) -> torch.Tensor:
    """Inference input ids (L,) for ``build_prompt(question, ...)``, tokenised as in training."""
    turns = [Turn(q, a) for q, a in history] + [Turn(question, None)]
    ids = list(_bos(tokenizer))
    for piece in render_conversation(turns, system=system):
        ids += tokenizer(piece.text, add_special_tokens=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)
