"""Chat template, prompt/label split, expression map, truncation by whole turns."""
import pytest
import torch

from projects.salma.constants import IGNORE_INDEX, IM_END, IMG_CONTEXT_TOKEN, SEG_TOKEN
from projects.salma.datasets.chat import ExprSpan, Turn, build_prompt, render_conversation
from projects.salma.datasets.encode import encode_conversation, encode_prompt
from projects.salma.datasets.errors import DataError
from projects.salma.datasets.templates import fill_template, image_token_string, video_token_string


def _seg_turns(expressions, prefix=""):
    turns = []
    for k, e in enumerate(expressions):
        q, (s, t) = fill_template("Please segment {class_name} in this image.", e)
        head = prefix if k == 0 else ""
        turns.append(Turn(head + q, f"Sure, it is {SEG_TOKEN}.", [ExprSpan("question", len(head) + s, len(head) + t)]))
    return turns


def test_template_text():
    turns = [Turn("hi", "hello"), Turn("q2", "a2")]
    text = "".join(p.text for p in render_conversation(turns, system="SYS"))
    assert text == ("<|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
                    "hello<|im_end|>\n<|im_start|>user\nq2<|im_end|>\n<|im_start|>assistant\na2<|im_end|>\n")
    assert build_prompt("hi", system="SYS") == "<|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n" \
                                               "<|im_start|>assistant\n"
    assert build_prompt("hi").startswith("<|im_start|>user\n")  # system '' -> no system block
    assert build_prompt("q2", system="SYS", history=[("hi", "hello")]) == text[: text.index("a2")]


def test_labels_are_exactly_the_answers(tiny_tokenizer):
    prefix = image_token_string(2, 4)
    turns = _seg_turns(["the red circle", "the square on the left"], prefix=prefix)
    enc = encode_conversation(turns, tiny_tokenizer, max_length=512, system="You are a helpful assistant.",
                              image_tokens=8)
    ids, labels = enc.input_ids, enc.labels
    assert ids.dtype == labels.dtype == enc.expr_ids.dtype == torch.long
    assert ids.shape == labels.shape == enc.expr_ids.shape
    assert tiny_tokenizer.decode(labels[labels != IGNORE_INDEX]) == "".join(t.answer + IM_END for t in turns)
    assert (labels[labels != IGNORE_INDEX] == ids[labels != IGNORE_INDEX]).all()
    assert int((ids == tiny_tokenizer.convert_tokens_to_ids(IMG_CONTEXT_TOKEN)).sum()) == 8
    # the prompt of the first turn is exactly what inference tokenises
    prompt_ids = encode_prompt(turns[0].question, tiny_tokenizer, system="You are a helpful assistant.")
    assert torch.equal(ids[: len(prompt_ids)], prompt_ids)
    assert labels[len(prompt_ids) - 1] == IGNORE_INDEX and labels[len(prompt_ids)] != IGNORE_INDEX


def test_expr_ids_cover_the_expression_tokens(tiny_tokenizer):
    expressions = ["the red circle", "the larger blue shape", "purple triangle"]
    enc = encode_conversation(_seg_turns(expressions, prefix=video_token_string(3, 2)), tiny_tokenizer,
                              image_tokens=6)
    seg_id = tiny_tokenizer.convert_tokens_to_ids(SEG_TOKEN)
    assert int((enc.input_ids == seg_id).sum()) == 3 == enc.num_objects
    assert set(enc.expr_ids.tolist()) == {-1, 0, 1, 2}
    for k, e in enumerate(expressions):
        positions = (enc.expr_ids == k).nonzero().flatten()
        assert tiny_tokenizer.decode(enc.input_ids[positions]).strip() == e
        assert (positions.diff() == 1).all()  # contiguous
        assert (enc.labels[positions] == IGNORE_INDEX).all()  # expressions are in the questions


def test_answer_side_spans(tiny_tokenizer):
    answer = f"A <p> red circle </p> {SEG_TOKEN} and <p> blue square </p> {SEG_TOKEN}."
    spans = [ExprSpan("answer", answer.index("red"), answer.index("red") + 10),
             ExprSpan("answer", answer.index("blue"), answer.index("blue") + 11)]
    enc = encode_conversation([Turn("Describe.", answer, spans)], tiny_tokenizer)
    for k, phrase in enumerate(["red circle", "blue square"]):
        assert tiny_tokenizer.decode(enc.input_ids[enc.expr_ids == k]).strip() == phrase


def test_too_long_drops_whole_trailing_turns(tiny_tokenizer):
    turns = _seg_turns(["the red circle", "the blue square", "the green triangle"], prefix=image_token_string(1, 16))
    full = encode_conversation(turns, tiny_tokenizer, image_tokens=16)
    two = encode_conversation(turns[:2], tiny_tokenizer, image_tokens=16)
    short = encode_conversation(turns, tiny_tokenizer, max_length=len(two.input_ids), image_tokens=16)
    assert full.num_turns == 3 and short.num_turns == 2 and short.num_objects == 2
    assert torch.equal(short.input_ids, two.input_ids) and torch.equal(short.labels, two.labels)
    with pytest.raises(DataError, match="sample 7: .*does not fit max_length=20") as err:
        encode_conversation(turns, tiny_tokenizer, max_length=20, image_tokens=16, source="sample 7")
    assert err.value.reason == "too_long"
    with pytest.raises(DataError, match="evaluation"):
        encode_conversation(turns, tiny_tokenizer, max_length=len(two.input_ids), image_tokens=16,
                            drop_turns=False)


def test_seg_and_image_token_checks(tiny_tokenizer):
    bad = [Turn(f"Please segment the {SEG_TOKEN} thing.", f"It is {SEG_TOKEN}.")]
    with pytest.raises(DataError, match=r"refs.p: 3: 2 \[SEG\] tokens in input_ids but 1 masks") as err:
        encode_conversation(bad, tiny_tokenizer, objects_per_turn=[1], source="refs.p: 3")
    assert err.value.reason == "seg_mismatch"
    with pytest.raises(DataError, match="IMG_CONTEXT"):
        encode_conversation(_seg_turns(["x"], prefix=image_token_string(1, 4)), tiny_tokenizer, image_tokens=8)
