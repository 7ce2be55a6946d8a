"""LLaVA-format conversations (image VQA and text-only chat), so the LLM keeps its chat ability.

``[{"id", "image"?, "conversations": [{"from": "human"|"gpt", "value"}, ...]}]``; ``<image>`` marks
where the image goes in the first human turn (prepended when absent). No masks, no ``[SEG]``.
"""
from __future__ import annotations

import os

import numpy as np

from ..registry import DATASETS
from .base import SalmaDataset
from .chat import Turn
from .errors import DataError
from .io import expect, field, read_json, safe_path
from .transforms import load_image

IMAGE_PLACEHOLDER = "<image>"


@DATASETS.register_module()
class LLaVADataset(SalmaDataset):
    """Image (or text-only) conversations.

    Args:
        data_file: the json list.
        image_folder: folder the ``image`` fields are relative to.
        data_root: prefix joined to both when they are relative.
        **kwargs: :class:`SalmaDataset` arguments.
    """

    def __init__(self, *, data_file: str, image_folder: str = "", data_root: str = "", **kwargs) -> None:
        super().__init__(**kwargs)
        self.data_file = os.path.join(data_root, data_file)
        self.image_folder = os.path.join(data_root, image_folder)
        records = read_json(self.data_file, expect=list, what="(conversation records)")
        for rec, i, turns in self.checked_records(records, lambda rec, i: (rec, i, self._turns(rec, i))):
            self.items.append((rec.get("id", i), rec.get("image"), turns))
            words = sum(len(t.question.split()) + len(t.answer.split()) for t in turns)
            # Unknown image size: estimate with the largest tiling (lengths only steer batching).
            self.modality_lengths.append(self.vision.image_tokens() + words if rec.get("image") else -words)

    def _turns(self, rec: dict, i: int) -> list[Turn]:
        where = f"{self.data_file}: record {i}"
        expect(rec, dict, where=where)
        where = f"{where} (id {rec.get('id')})"
        image = field(rec, "image", (str, type(None)), where=where, default=None)
        if image:
            safe_path(image, what="image", where=where)
        conv = field(rec, "conversations", list, where=where, default=[])
        values = []
        for j, message in enumerate(conv):
            values.append(field(message, "value", str, where=f"{where}: turn {j}").strip())
            if field(message, "from", str, where=f"{where}: turn {j}") != ("human", "gpt")[j % 2]:
                values = None
                break
        if not conv or len(conv) % 2 or values is None:
            raise DataError(f"{where}: conversations must alternate human/gpt, starting with human",
                            reason="bad_conversation")
        empty = [j for j, v in enumerate(values) if not v]
        if empty:  # an empty question or answer: nothing to learn from that turn
            raise DataError(f"{where}: turn {empty[0]} ({conv[empty[0]]['from']}) is empty", reason="empty_expression")
        turns = [Turn(values[j], values[j + 1]) for j in range(0, len(values), 2)]
        if not rec.get("image") and any(IMAGE_PLACEHOLDER in t.question for t in turns):
            raise DataError(f"{where}: '{IMAGE_PLACEHOLDER}' without an image", reason="bad_conversation")
        return turns

    def prepare(self, index: int, rng: np.random.Generator) -> dict:
        sample_id, image_name, turns = self.items[index]
        vision, paths, orig_size, image_tokens = None, [], None, 0
        if image_name:
            path = os.path.join(self.image_folder, image_name)
            image = load_image(path)
            vision = self.image_inputs(image)
            image_tokens, prefix = vision.num_tokens, vision.prefix
            first = turns[0].question
            first = (first.replace(IMAGE_PLACEHOLDER, prefix.rstrip("\n"), 1) if IMAGE_PLACEHOLDER in first
                     else prefix + first)
            turns = [Turn(first, turns[0].answer)] + [Turn(t.question.replace(IMAGE_PLACEHOLDER, "").strip(),
                                                           t.answer) for t in turns[1:]]
            paths, orig_size = [path], (image.size[1], image.size[0])
        enc = self.encode(turns, objects_per_turn=[0] * len(turns), image_tokens=image_tokens,
                          source=f"{self.data_file}: id {sample_id}")
        meta = {"index": index, "sample_id": sample_id, "image_paths": paths, "orig_size": orig_size}
        return self.make_sample(enc, vision=vision, g_pixel_values=None, masks=None, meta=meta)
