"""The one chat template (InternVL2.5 / Qwen2.5), used by training and inference alike.

    <|im_start|>system\\n{system}<|im_end|>\\n                 (once, first; omitted when system == '')
    <|im_start|>user\\n{question}<|im_end|>\\n<|im_start|>assistant\\n{answer}<|im_end|>\\n   (per turn)

A conversation renders to *pieces*: prompt text (never trained on) and target text (the answer and
its ``<|im_end|>``: the only tokens with labels). ``build_prompt`` renders the same pieces with an
empty last answer, so inference sees byte-for-byte the prompt training saw.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal, Sequence

from ..constants import IM_END, IM_START
from .errors import DataError
from .io import expect

# Sa2VA trained without a system message (xtuner's qwen_chat with system=''); InternVL2.5's chat
# uses INTERNVL_SYSTEM. Configs choose through the datasets' ``system`` key.
DEFAULT_SYSTEM = ""
INTERNVL_SYSTEM = "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"


@dataclass(frozen=True)
class ExprSpan:
    """Characters ``[start, end)`` of the question or answer that describe one ``[SEG]``."""

    where: Literal["question", "answer"]
    start: int
    end: int


@dataclass
class Turn:
    """One QA turn. ``expr_spans[i]`` belongs to the i-th ``[SEG]`` of ``answer`` (None: no text).

    An unanswered turn (a generation prompt) may carry question spans: those of the ``[SEG]`` the
    model is expected to generate.
    """

    question: str
    answer: str | None = None
    expr_spans: Sequence[ExprSpan | None] = ()


@dataclass
class Piece:
    """A run of text tokenised on its own; ``spans`` are (start, end, seg_index_in_conversation)."""

    text: str
    is_target: bool
    spans: list[tuple[int, int, int]] = field(default_factory=list)


def render_conversation(turns: Sequence[Turn], *, system: str = DEFAULT_SYSTEM,
                        seg_token: str = "[SEG]") -> list[Piece]:
    """Render turns to prompt/target pieces, placing each expression span in piece coordinates.

    The last turn may have ``answer=None`` (a generation prompt). ``[SEG]`` indices count over the
    whole conversation in order, which is the order of ``[SEG]`` ids in ``input_ids`` (and, for
    a generation prompt, of the ``[SEG]`` to be generated).
    """
    pieces: list[Piece] = []
    prompt = f"{IM_START}system\n{system}{IM_END}\n" if system else ""
    seg_base = 0
    for t, turn in enumerate(turns):
        if turn.answer is None and t != len(turns) - 1:
            raise ValueError("only the last turn may have no answer")
        n_seg = len(turn.expr_spans) if turn.answer is None else turn.answer.count(seg_token)
        if turn.expr_spans and len(turn.expr_spans) != n_seg:
            raise ValueError(f"turn {t}: {len(turn.expr_spans)} expression spans for {n_seg} {seg_token}")
        prompt += f"{IM_START}user\n"
        q_offset = len(prompt)
        prompt += f"{turn.question}{IM_END}\n{IM_START}assistant\n"
        q_spans = [(q_offset + s.start, q_offset + s.end, seg_base + k)
                   for k, s in enumerate(turn.expr_spans) if s is not None and s.where == "question"]
        pieces.append(Piece(prompt, False, q_spans))
        if turn.answer is None:
            return pieces
        a_spans = [(s.start, s.end, seg_base + k)
                   for k, s in enumerate(turn.expr_spans) if s is not None and s.where == "answer"]
        pieces.append(Piece(f"{turn.answer}{IM_END}", True, a_spans))
        seg_base += n_seg
        prompt = "\n"
    pieces.append(Piece(prompt, False))
    return pieces


def build_prompt(question: str, *, system: str = DEFAULT_SYSTEM,
                 history: Sequence[tuple[str, str]] = ()) -> str:
    """Inference prompt: earlier (question, answer) turns, the question, ``<|im_start|>assistant\\n``."""
    turns = [Turn(q, a) for q, a in history] + [Turn(question, None)]
    return "".join(p.text for p in render_conversation(turns, system=system))


def jinja_chat_template(system: str = DEFAULT_SYSTEM) -> str:
    """The same template for ``tokenizer.apply_chat_template`` (exported tokenizers carry it).

    With ``add_generation_prompt=True`` it renders exactly :func:`build_prompt`; ``system`` is
    the default system message (a leading 'system' message replaces it; '' omits it).
    """
    default = json.dumps(system, ensure_ascii=False)  # a valid Jinja string literal
    return (
        "{%- if messages and messages[0]['role'] == 'system' %}"
        "{%- set system = messages[0]['content'] %}{%- set turns = messages[1:] %}"
        "{%- else %}{%- set system = " + default + " %}{%- set turns = messages %}{%- endif %}"
        "{%- if system %}{{ '" + IM_START + "system\\n' + system + '" + IM_END + "\\n' }}{%- endif %}"
        "{%- for message in turns %}"
        "{{ '" + IM_START + "' + message['role'] + '\\n' + message['content'] + '" + IM_END + "\\n' }}"
        "{%- endfor %}"
        "{%- if add_generation_prompt %}{{ '" + IM_START + "assistant\\n' }}{%- endif %}"
    )


def conversation_pairs(conversations: Sequence[dict], *, where: str) -> list[tuple[str, str]]:
    """(question, answer) pairs of a LLaVA-style ``[{"from": "human"|"gpt", "value"}]`` list.

    Consecutive human messages are joined by a newline (Sa2VA joins them too); otherwise the list
    must alternate, start with a question and end with an answer; an empty message is an error
    ('empty_expression'), a message that is not an object with a string ``value`` too ('bad_record').
    ``where`` ("<file>: record i") starts the DataError messages.
    """
    pairs: list[tuple[str, str]] = []
    question: str | None = None
    for j, msg in enumerate(conversations):
        at = f"{where}: message {j}"
        value = expect(expect(msg, dict, where=at).get("value"), str, where=f"{at}: value").strip()
        role = msg.get("from")
        if not value:
            raise DataError(f"{where}: message {j} is empty", reason="empty_expression")
        if role == "human":
            question = value if question is None else question + "\n" + value
        elif role == "gpt" and question is not None:
            pairs.append((question, value))
            question = None
        else:
            raise DataError(f"{where}: message {j} ({role!r}) does not answer a human question", reason="bad_conversation")
    if question is not None or not pairs:
        raise DataError(f"{where}: the conversation must end with an answer", reason="bad_conversation")
    return pairs
