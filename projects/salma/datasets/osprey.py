"""Osprey-724K reader: region masks in, text out (visual prompts, see ``visual_prompts``).

``Osprey-724K/osprey_<kind>.json`` = ``[{"file_name", "height", "width", "annotation":
[{"segmentation": polygons | RLE | uncompressed RLE}, ...], "conversations": [{"from", "value"}]
| "description": [str per region]}]``; images from COCO (several folders: the first that has the
file). Kinds (Sa2VA-1B trains on all five):

* ``conversation``, ``part_level``, ``lvis_positive_negative``: the record's conversation; its
  questions name regions as ``<region1>``, ...;
* ``short_form``: the same, each question followed by "Answer the question using a single word
  or phrase.";
* ``detail_description``: one turn per region, a description question about ``regionI`` and the
  record's ``description[I-1]`` as the answer (brackets dropped, as Sa2VA: "region1: a man ...").

The first question starts with the image tokens and the region list (``region_prompt``); the
sample carries the regions' token cells in ``prompt_masks``. No ``[SEG]``, no masks to predict.
Conversations are read by :func:`chat.conversation_pairs` (consecutive questions joined, else
strictly human / gpt alternating).
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from ..registry import DATASETS
from .base import SalmaDataset
from .chat import Turn, conversation_pairs
from .errors import DataError
from .io import expect, field, read_json, safe_path
from .masks import decode_segmentation
from .templates import SHORT_ANSWER_SUFFIX, VP_DESCRIPTION_QUESTIONS
from .transforms import load_image
from .visual_prompts import (check_region_cells, last_tile_layout, region_cells, region_prompt, token_grid,
                             untag_regions)

OSPREY_KINDS = ("conversation", "detail_description", "short_form", "part_level", "lvis_positive_negative")


@DATASETS.register_module()
class OspreyDataset(SalmaDataset):
    """Region-level conversations and descriptions (Osprey-724K).

    Args:
        data_file: one ``osprey_<kind>.json``.
        image_folder: folder, or folders searched in order, the file names are relative to.
        kind: one of ``OSPREY_KINDS`` (how the record becomes turns, see the module doc).
        data_root: prefix joined to ``data_file`` and ``image_folder`` when they are relative.
        **kwargs: :class:`SalmaDataset` arguments.
    """

    def __init__(self, *, data_file: str, image_folder: str | Sequence[str], kind: str = "conversation",
                 data_root: str = "", **kwargs) -> None:
        super().__init__(**kwargs)
        if kind not in OSPREY_KINDS:
            raise ValueError(f"kind must be one of {OSPREY_KINDS}, got {kind!r}")
        self.kind = kind
        self.data_file = os.path.join(data_root, data_file)
        folders = [image_folder] if isinstance(image_folder, str) else list(image_folder)
        self.image_folders = [os.path.join(data_root, f) for f in folders]
        self.check_regions_supported(self.data_file)
        self.grid = token_grid(self.image_seq_length)
        for item in self.checked_records(read_json(self.data_file, expect=list, what="(Osprey records)"), self._parse):
            self.items.append(item)
            words = sum(len(q.split()) + len(a.split()) for q, a in item["pairs"])
            # Region tokens are unknown before decoding: count a quarter of the grid per region.
            self.modality_lengths.append(self.vision.image_tokens(item["width"], item["height"]) + len(item["segmentations"]) * self.grid ** 2 // 4
                                         + 2 * words + 20 * len(item["pairs"]))

    def _parse(self, rec: dict, i: int) -> dict:
        """Index entry of record ``i`` (cheap checks only; masks are decoded in ``prepare``)."""
        where = f"{self.data_file}: record {i}"
        file_name = field(expect(rec, dict, where=where), "file_name", str, where=where, default="")
        where = f"{where} ({file_name})"
        height, width = (field(rec, key, int, where=where, default=0) for key in ("height", "width"))
        if not file_name or height <= 0 or width <= 0:
            raise DataError(f"{where}: needs file_name, height and width", reason="bad_record")
        safe_path(file_name, what="file_name", where=where)
        annotation = field(rec, "annotation", list, where=where, default=[])
        segmentations = [field(a, "segmentation", (dict, list, type(None)), where=f"{where}: annotation {k}",
                               default=None) for k, a in enumerate(annotation)]
        if not segmentations or any(s is None for s in segmentations):
            raise DataError(f"{where}: no region (annotation[].segmentation)", reason="empty_region")
        if self.kind == "detail_description":
            key = "description" if "description" in rec else "descriptions"
            descriptions = [expect(d, str, where=f"{where}: {key} {k}").strip()
                            for k, d in enumerate(field(rec, key, list, where=where, default=[]))]
            if len(descriptions) != len(segmentations):
                raise DataError(f"{where}: {len(descriptions)} descriptions for {len(segmentations)} regions",
                                reason="bad_record")
            if "" in descriptions:
                raise DataError(f"{where}: {key} {descriptions.index('')} is empty", reason="empty_expression")
            pairs = [("", untag_regions(d)) for d in descriptions]  # questions drawn per sample
        else:
            suffix = SHORT_ANSWER_SUFFIX if self.kind == "short_form" else ""
            conversations = field(rec, "conversations", list, where=where, default=[])
            pairs = [(untag_regions(q) + suffix, untag_regions(a))
                     for q, a in conversation_pairs(conversations, where=where)]
        return {"file_name": file_name, "height": height, "width": width, "segmentations": segmentations,
                "pairs": pairs, "record": i}

    def find_image(self, file_name: str) -> str:
        """The first image folder that has ``file_name`` (DataError naming every folder tried)."""
        for folder in self.image_folders:
            path = os.path.join(folder, file_name)
            if os.path.isfile(path):
                return path
        raise DataError(f"{file_name}: image file not found in {', '.join(self.image_folders)}",
                        reason="missing_image")

    def prepare(self, index: int, rng: np.random.Generator) -> dict:
        item = self.items[index]
        path = self.find_image(item["file_name"])
        image = load_image(path)
        width, height = image.size
        if (height, width) != (item["height"], item["width"]):
            raise DataError(f"{path}: image is {height}x{width} but {self.data_file} record {item['record']} says "
                            f"{item['height']}x{item['width']}", reason="size_mismatch")
        source = f"{self.data_file}: record {item['record']} ({item['file_name']})"
        masks = np.stack([decode_segmentation(s, height, width, source=f"{source} region{k + 1}")
                          for k, s in enumerate(item["segmentations"])])  # (n_regions, H, W)

        vision = self.image_inputs(image)  # (n_tiles, 3, S, S)
        layout = last_tile_layout(width, height, n_tiles=len(vision.pixel_values), use_thumbnail=self.use_thumbnail,
                                  min_num=self.min_dynamic_patch, max_num=self.max_dynamic_patch,
                                  image_size=self.image_size)
        cells = region_cells(masks, grid=self.grid, layout=layout)  # (n_regions, g, g)
        counts = check_region_cells(cells, source=source)
        prefix = vision.prefix + region_prompt(counts)

        pairs = item["pairs"]
        if self.kind == "detail_description":
            templates = VP_DESCRIPTION_QUESTIONS
            pairs = [(templates[0 if self.mode == "eval" else rng.integers(len(templates))]
                      .replace("<region>", f"region{k + 1}"), answer) for k, (_, answer) in enumerate(pairs)]
        turns = [Turn((prefix if k == 0 else "") + q, a) for k, (q, a) in enumerate(pairs)]
        image_tokens = vision.num_tokens + sum(counts)
        enc = self.encode(turns, objects_per_turn=[0] * len(turns), image_tokens=image_tokens, source=source)
        meta = {"index": index, "sample_id": f"{item['file_name']}#{item['record']}", "image_paths": [path],
                "orig_size": (height, width), "n_regions": len(counts), "region_tokens": counts,
                "questions": self.questions(turns[: enc.num_turns], prefix)}
        return self.make_sample(enc, vision=vision, g_pixel_values=None, masks=None, meta=meta,
                                prompt_masks=cells)
