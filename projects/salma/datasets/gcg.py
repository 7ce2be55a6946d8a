"""Grounded caption generation (GCG) reader, GranD-f layout (GLaMM's published json).

``[{"file_name" (or "image"): str, "caption": str, "groundings": {phrase: {"token_positives":
[start, end], "rle_masks": [COCO RLE, ...], "segmentations"?: [COCO polygons or RLE, ...]}}}]``.
``token_positives`` is the phrase's character span in the caption; a phrase's masks are unioned;
a ``null`` grounding (GLaMM's files have some) is dropped and counted in ``filtered``. GLaMM's PSG
GCG (``OpenPsgGCG_train.json``) has this layout. RefCOCOg-GCG ships another layout:
:func:`convert_refcocog_gcg` (``tools/data/convert_gcg.py``) turns it into this one; phrases may
then carry COCO polygons in ``"segmentations"``. Flickr GCG is COCO-layout:
:class:`FlickrGCGDataset`.

The answer is the caption with each phrase replaced by ``<p> phrase </p> [SEG]`` (in caption
order), one mask per ``[SEG]``; ``expr_ids`` marks the phrase inside ``<p> ... </p>``.
"""
from __future__ import annotations

import os
from collections import Counter

import numpy as np
from mmengine.logging import MMLogger

from ..constants import PHRASE_END, PHRASE_START, SEG_TOKEN
from ..registry import DATASETS
from .base import SalmaDataset
from .chat import ExprSpan, Turn
from .errors import DataError
from .io import expect, field, read_json, safe_path
from .masks import decode_segmentation
from .templates import GCG_QUESTIONS
from .transforms import load_image


def convert_refcocog_gcg(records: list) -> tuple[list[dict], dict[str, int]]:
    """GLaMM's RefCOCOg-GCG json -> GranD-f layout; returns the records and what was dropped.

    Input: ``[{key: {"img_file_name", "caption", "refs": [{"sentence", "segmentation": [polygons]}]}}]``.
    A ref whose sentence does not occur in the caption (case-insensitive) or overlaps an earlier
    phrase is dropped (GLaMM drops / trims them silently); a record left without phrases too.
    """
    out, dropped = [], {"phrase_not_in_caption": 0, "overlapping_phrase": 0, "record_without_phrase": 0}
    for rec in records:
        info = next(iter(rec.values())) if len(rec) == 1 and "refs" not in rec else rec
        caption = str(info["caption"]).strip('"').strip()
        found = []
        for ref in info.get("refs", ()):
            start = caption.lower().find(ref["sentence"].lower())
            if start < 0:
                dropped["phrase_not_in_caption"] += 1
                continue
            found.append((start, start + len(ref["sentence"]), ref["segmentation"]))
        groundings, end = {}, -1
        for start, stop, segm in sorted(found, key=lambda f: f[:2]):
            if start < end or caption[start:stop] in groundings:
                dropped["overlapping_phrase"] += 1
                continue
            groundings[caption[start:stop]] = {"token_positives": [start, stop], "segmentations": [segm]}
            end = stop
        if not groundings:
            dropped["record_without_phrase"] += 1
            continue
        out.append({"file_name": info["img_file_name"], "caption": caption, "groundings": groundings})
    return out, dropped


def tag_caption(caption: str, spans: list[tuple[int, int]]) -> tuple[str, list[ExprSpan]]:
    """Caption with ``<p> phrase </p> [SEG]`` per span (sorted, disjoint) and the phrases' spans."""
    out, phrase_spans, cursor = "", [], 0
    for start, end in spans:
        out += caption[cursor:start] + f"{PHRASE_START} "
        phrase_spans.append(ExprSpan("answer", len(out), len(out) + end - start))
        out += f"{caption[start:end]} {PHRASE_END} {SEG_TOKEN}"
        cursor = end
    return out + caption[cursor:], phrase_spans


@DATASETS.register_module()
class GCGDataset(SalmaDataset):
    """Image + caption whose phrases are grounded by masks.

    Args:
        data_file: the json list (GranD-f layout above).
        image_folder: folder the file names are relative to.
        data_root: prefix joined to both when they are relative.
        **kwargs: :class:`SalmaDataset` arguments.
    """

    def __init__(self, *, data_file: str, image_folder: str, data_root: str = "", **kwargs) -> None:
        super().__init__(**kwargs)
        self.data_file = os.path.join(data_root, data_file)
        self.image_folder = os.path.join(data_root, image_folder)
        self.filtered: Counter[str] = Counter()  # dropped by the data's own rules (not errors)
        for item in self.checked_records(self._read_records(), self._parse):
            self.items.append(item)
            # Unknown image size: count the largest tiling (lengths only steer batching).
            self.modality_lengths.append(self.vision.image_tokens() + 60 + 2 * len(item["caption"].split())
                                         + 8 * len(item["phrases"]))
        if self.filtered:
            MMLogger.get_current_instance().info(f"{self.name}: {self.data_file}: filtered {dict(self.filtered)}")

    def _read_records(self) -> list[dict]:
        """Records in the GranD-f layout (a subclass converts its own layout)."""
        return read_json(self.data_file, expect=list, what="(GCG records)")

    def _parse(self, rec: dict, i: int) -> dict:
        where = f"{self.data_file}: record {i}"
        file_name = field(rec, "file_name", str, where=where, default=None) or field(rec, "image", str, where=where,
                                                                                      default=None)
        where = f"{where} ({file_name})"
        if not file_name:
            raise DataError(f"{where}: needs file_name", reason="bad_record")
        safe_path(file_name, what="file_name", where=where)
        caption = field(rec, "caption", str, where=where, default="").strip('"').strip()
        if not caption:
            raise DataError(f"{where}: empty caption", reason="empty_expression")
        groundings = []
        groundings_field = field(rec, "groundings", (dict, list, type(None)), where=where, default=None) or {}
        pairs = groundings_field.items() if isinstance(groundings_field, dict) else groundings_field
        for pair in pairs:
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and isinstance(pair[0], str)):
                raise DataError(f"{where}: groundings: expected (phrase, grounding) pairs, got {str(pair)[:40]}",
                                reason="bad_record")
            phrase, g = pair
            if g is None:  # PSG lists some phrases without a mask: not a grounding
                self.filtered["ungrounded_phrase"] += 1
                continue
            at = f"{where}: grounding {phrase!r}"
            span = expect(g, dict, where=at).get("token_positives")
            integers = isinstance(span, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in span)
            if not integers or len(span) != 2:
                raise DataError(f"{at}: token_positives: expected a list of 2 integers, got {str(span)[:40]}",
                                reason="bad_record")
            start, end = span
            masks = field(g, "rle_masks", list, where=at, default=[]) + field(g, "segmentations", list, where=at,
                                                                               default=[])
            if not 0 <= start < end <= len(caption) or not masks:
                raise DataError(f"{where}: grounding {phrase!r} needs a span inside the caption and a mask",
                                reason="bad_grounding")
            groundings.append((start, end, phrase, masks))
        if not groundings:
            raise DataError(f"{where}: no grounded phrase", reason="empty_expression")
        groundings.sort(key=lambda g: g[0])
        for a, b in zip(groundings, groundings[1:]):
            if b[0] < a[1]:
                raise DataError(f"{where}: phrases {a[2]!r} and {b[2]!r} overlap", reason="bad_grounding")
        return {"file_name": file_name, "caption": caption, "spans": [(s, e) for s, e, _, _ in groundings],
                "phrases": [p for _, _, p, _ in groundings], "masks": [m for _, _, _, m in groundings]}

    def prepare(self, index: int, rng: np.random.Generator) -> dict:
        item = self.items[index]
        path = os.path.join(self.image_folder, item["file_name"])
        image = load_image(path)
        width, height = image.size
        vision = self.image_inputs(image)
        question = GCG_QUESTIONS[0] if self.mode == "eval" else GCG_QUESTIONS[rng.integers(len(GCG_QUESTIONS))]
        answer, phrase_spans = tag_caption(item["caption"], item["spans"])
        prefix = vision.prefix
        n_obj = len(item["spans"])
        source = f"{self.data_file}: {item['file_name']}"
        image_tokens = vision.num_tokens
        turn = Turn(prefix + question, answer, phrase_spans)
        enc = self.encode([turn], objects_per_turn=[n_obj], image_tokens=image_tokens, source=source)
        masks = np.stack([
            np.max([decode_segmentation(m, height, width, source=f"{self.data_file}: {item['file_name']} "
                                        f"phrase {phrase!r}") for m in phrase_masks], axis=0)
            for phrase, phrase_masks in zip(item["phrases"], item["masks"])
        ])[:, None]  # (n_obj, 1, H, W)
        meta = {"index": index, "sample_id": item["file_name"], "image_paths": [path], "orig_size": (height, width),
                "caption": item["caption"], "phrases": item["phrases"], "questions": [question]}
        if self.mode == "eval":  # one prompt; its answer should ground every phrase
            meta["prompts"] = self.eval_prompts([turn], prefix=prefix, image_tokens=image_tokens, source=source)
            meta["prompt_objects"] = [list(range(n_obj))]
        return self.make_sample(enc, vision=vision, g_pixel_values=self.sam_inputs([image]),
                                masks=masks, meta=meta)


@DATASETS.register_module()
class FlickrGCGDataset(GCGDataset):
    """GLaMM's Flickr GCG (``flickr_mergedGT_GCG_train.json``), COCO layout.

    ``images``: ``{id, file_name, height, width, caption}``; ``annotations``: ``{image_id, bbox
    [x, y, w, h], tokens_positive [[start, end], ...], sam_mask (RLE), area, ignore?}``. As GLaMM:
    an annotation's phrase is its first ``tokens_positive`` span; captions under
    ``min_caption_words`` words, images smaller than ``min_image_size`` and ignored or empty boxes
    are dropped (counted in ``filtered``). Annotations of one span are one phrase (masks unioned).
    Args: as :class:`GCGDataset`, plus ``min_caption_words`` and ``min_image_size``.
    """

    def __init__(self, *, min_caption_words: int = 3, min_image_size: int = 32, **kwargs) -> None:
        self.min_caption_words = min_caption_words
        self.min_image_size = min_image_size
        super().__init__(**kwargs)

    def _read_records(self) -> list[dict]:
        """One GranD-f record per image; a bad image (or its annotation) is dropped and counted, or raised."""
        coco = read_json(self.data_file, expect=dict, what="(COCO layout: images, annotations)")
        by_image: dict[int, list[dict]] = {}
        for k, ann in enumerate(field(coco, "annotations", list, where=self.data_file, default=[])):
            try:
                by_image.setdefault(field(ann, "image_id", int, where=f"{self.data_file}: annotations[{k}]"),
                                    []).append(ann)
            except DataError as err:
                self.index_error(err)
        records = []
        for k, image in enumerate(field(coco, "images", list, where=self.data_file, default=[])):
            try:
                record = self._image_record(k, image, by_image)
            except DataError as err:
                self.index_error(err)
                continue
            if record is not None:
                records.append(record)
        return records

    def _image_record(self, k: int, image: dict, by_image: dict[int, list[dict]]) -> dict | None:
        """The GranD-f record of ``images[k]`` (None: filtered by GLaMM's rules)."""
        where = f"{self.data_file}: images[{k}]"
        image_id = field(image, "id", int, where=where)
        file_name = field(image, "file_name", str, where=where)
        where = f"{self.data_file}: image {image_id} ({file_name})"
        safe_path(file_name, what="file_name", where=where)
        caption = field(image, "caption", str, where=where, default="")
        height, width = field(image, "height", int, where=where), field(image, "width", int, where=where)
        if len(caption.split(" ")) < self.min_caption_words:
            self.filtered["short_caption"] += 1
            return None
        if min(height, width) < self.min_image_size:
            self.filtered["small_image"] += 1
            return None
        # Spans index the caption as written; the parser strips quotes and spaces around it.
        shift = caption.index(caption.strip('"').strip()) if caption.strip('"').strip() else 0
        spans: dict[tuple[int, int], list] = {}
        for ann in by_image.get(image_id, ()):
            at = f"{where}: annotation {ann.get('id')}"
            if not self._usable_box(ann, width, height, where=at):
                continue
            positives = field(ann, "tokens_positive", list, where=at)
            span = positives[0] if positives else None
            if not (isinstance(span, list) and len(span) == 2 and all(isinstance(v, int) for v in span)):
                raise DataError(f"{at}: tokens_positive: expected a list of [start, end] spans, got "
                                f"{str(positives)[:40]}", reason="bad_record")
            spans.setdefault(tuple(span), []).append(field(ann, "sam_mask", dict, where=at))
        return {"file_name": file_name, "caption": caption, "groundings": [
            (caption[start:end], {"token_positives": [start - shift, end - shift], "rle_masks": rles})
            for (start, end), rles in sorted(spans.items())]}

    def _usable_box(self, ann: dict, width: int, height: int, *, where: str) -> bool:
        """GLaMM's filter: not ignored, a box of at least 1x1 px overlapping the image, positive area."""
        box = field(ann, "bbox", list, where=where)
        if len(box) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box):
            raise DataError(f"{where}: bbox: expected [x, y, w, h], got {str(box)[:40]}", reason="bad_record")
        x, y, w, h = (float(v) for v in box)
        inter_w = max(0.0, min(x + w, float(width)) - max(x, 0.0))
        inter_h = max(0.0, min(y + h, float(height)) - max(y, 0.0))
        if ann.get("ignore", False):
            self.filtered["ignored_box"] += 1
            return False
        if inter_w * inter_h == 0 or field(ann, "area", (int, float), where=where, default=1) <= 0 or w < 1 or h < 1:
            self.filtered["degenerate_box"] += 1
            return False
        return True
