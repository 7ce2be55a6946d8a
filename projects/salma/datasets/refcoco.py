"""RefCOCO / RefCOCO+ / RefCOCOg reader (refer API layout).

``<data_root>/instances.json`` (COCO: images, annotations with polygon or RLE segmentation) and
``<data_root>/refs(<split_by>).p`` (pickled refs ``{ref_id, ann_id, image_id, split, sentences:
[{sent, sent_id, ...}], ...}``); images (COCO train2014 names) under ``image_folder``.

Training item = one image: ``num_classes_per_sample`` of its refs drawn without replacement, one
random sentence each, one QA turn and one ``[SEG]`` per ref. Evaluation item = one image with
every sentence of the split (one turn and one ``[SEG]`` each, masks repeated per sentence) and the
ids (``sent_ids``, ``ref_ids``, ``ann_ids``) to report per sentence.
"""
from __future__ import annotations

import os
from collections import defaultdict

import numpy as np

from ..fingerprint import digest, file_signature
from ..registry import DATASETS
from .base import SalmaDataset
from .errors import DataError
from .io import field, load_pickle, read_json, safe_path
from .masks import decode_segmentation
from .templates import ANSWER_LIST, EVAL_ANSWER, EVAL_SEG_QUESTION, SEG_QUESTIONS, clean_expression
from .transforms import load_image

# Tokens per turn besides the expression (template, answer, chat markers): for length estimates.
_TURN_OVERHEAD = 30


@DATASETS.register_module()
class RefCOCODataset(SalmaDataset):
    """Referring expression segmentation on images.

    Args:
        data_root: folder with ``instances.json`` and the refs pickle (``DATA/refcoco``).
        image_folder: folder of the images named in ``instances.json`` (COCO train2014).
        split: ``'train'``, ``'val'``, ``'testA'``, ``'testB'``, ``'test'``.
        split_by: ``'unc'`` (refcoco, refcoco+) or ``'umd'`` (refcocog): picks ``refs(<split_by>).p``.
        refs_file, ann_file: override the file names (relative to ``data_root``).
        num_classes_per_sample: refs (objects) per training item.
        **kwargs: :class:`SalmaDataset` arguments (tokenizer, mode, image sizes, on_error, ...).
    """

    def __init__(self, *, data_root: str, image_folder: str, split: str = "train", split_by: str = "unc",
                 refs_file: str | None = None, ann_file: str = "instances.json", num_classes_per_sample: int = 3,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.image_folder = image_folder
        self.split = split
        self.num_classes_per_sample = num_classes_per_sample
        self.ann_path = os.path.join(data_root, ann_file)
        self.refs_path = os.path.join(data_root, refs_file or f"refs({split_by}).p")
        self._build_index()

    def _build_index(self) -> None:
        instances = read_json(self.ann_path, expect=dict, what="(COCO instances)")
        refs = load_pickle(self.refs_path)
        if not isinstance(refs, list):
            raise DataError(f"{self.refs_path}: expected a list of refs, got {type(refs).__name__}", reason="bad_file")
        self.images, self.annotations = {}, {}
        for kind, records in (("images", self.images), ("annotations", self.annotations)):
            for k, rec in enumerate(field(instances, kind, list, where=self.ann_path)):
                try:
                    self._add_instance(kind, k, rec, records)
                except DataError as err:
                    self.index_error(err)

        by_image: dict[int, list[dict]] = defaultdict(list)
        for k, ref in enumerate(refs):
            try:
                if field(ref, "split", str, where=f"{self.refs_path}: ref {k}") != self.split:
                    continue
                image_id, ref = self._check_ref(ref, k)
            except DataError as err:
                self.index_error(err)
                continue
            by_image[image_id].append(ref)

        for image_id in sorted(by_image):
            image_refs = sorted(by_image[image_id], key=lambda r: r["ref_id"])
            self.items.append((image_id, image_refs))
            info = self.images[image_id]
            image_tokens = self.vision.image_tokens(info["width"], info["height"])
            if self.mode == "train":
                n_turns = min(self.num_classes_per_sample, len(image_refs))
                words = n_turns * max(len(s.split()) for r in image_refs for _, s in r["sentences"])
            else:
                sents = [s for r in image_refs for _, s in r["sentences"]]
                n_turns, words = len(sents), sum(len(s.split()) for s in sents)
            self.modality_lengths.append(image_tokens + n_turns * _TURN_OVERHEAD + 2 * words)

    def _add_instance(self, kind: str, k: int, rec: dict, records: dict) -> None:
        """One COCO image (file name and size) or annotation (segmentation) record, checked."""
        where = f"{self.ann_path}: {kind}[{k}]"
        record_id = field(rec, "id", int, where=where)
        if kind == "images":
            records[record_id] = {"file_name": safe_path(field(rec, "file_name", str, where=where), what="file_name",
                                                         where=where),
                                  "height": field(rec, "height", int, where=where),
                                  "width": field(rec, "width", int, where=where)}
        else:
            records[record_id] = field(rec, "segmentation", (dict, list), where=where)

    def _check_ref(self, ref: dict, k: int) -> tuple[int, dict]:
        """(image_id, the ref with its non-empty sentences) of a ref of this split; each empty
        sentence is an error or, with ``on_error='skip'``, dropped and counted."""
        where = f"{self.refs_path}: ref {k}"
        ref_id = field(ref, "ref_id", int, where=where)
        where = f"{self.refs_path}: ref_id {ref_id}"
        ann_id, image_id = field(ref, "ann_id", int, where=where), field(ref, "image_id", int, where=where)
        sentences = []
        for s in field(ref, "sentences", list, where=where):
            sent_id = field(s, "sent_id", int, where=f"{where}: sentence")
            text = clean_expression(field(s, "sent", str, where=f"{where} sent_id {sent_id}"))
            if text:
                sentences.append((sent_id, text))
            else:  # nothing to ask: counted (skip) or an error, never dropped unseen
                self.index_error(DataError(f"{where} sent_id {sent_id}: empty sentence", reason="empty_expression"))
        if ann_id not in self.annotations:
            raise DataError(f"{where}: ann_id {ann_id} not in {self.ann_path}", reason="missing_ann")
        if image_id not in self.images:
            raise DataError(f"{where}: image_id {image_id} not in {self.ann_path}", reason="missing_image_entry")
        if not sentences:
            raise DataError(f"{where}: no sentence", reason="empty_expression")
        return image_id, {"ref_id": ref_id, "ann_id": ann_id, "sentences": sentences}

    def item_fingerprint(self, index: int) -> str:
        """What item ``index`` is computed from: its image record, refs, sentences and segmentations,
        and the image file's size and modification time (evaluation resume)."""
        image_id, image_refs = self.items[index]
        info = self.images[image_id]
        return digest({"image": info, "refs": image_refs,
                       "segmentations": [self.annotations[r["ann_id"]] for r in image_refs],
                       "file": file_signature(os.path.join(self.image_folder, info["file_name"]))})

    def prepare(self, index: int, rng: np.random.Generator) -> dict:
        image_id, image_refs = self.items[index]
        info = self.images[image_id]
        path = os.path.join(self.image_folder, info["file_name"])
        image = load_image(path)
        width, height = image.size
        if (height, width) != (info["height"], info["width"]):
            raise DataError(f"{path}: image is {height}x{width} but {self.ann_path} says "
                            f"{info['height']}x{info['width']} (image_id {image_id})", reason="size_mismatch")

        if self.mode == "train":
            picked = rng.choice(len(image_refs), min(self.num_classes_per_sample, len(image_refs)), replace=False)
            chosen = []
            for r in picked:
                ref = image_refs[r]
                chosen.append((ref, ref["sentences"][rng.integers(len(ref["sentences"]))]))
            templates, answers, turn_rng = SEG_QUESTIONS, ANSWER_LIST, rng
        else:
            chosen = [(ref, sent) for ref in image_refs for sent in ref["sentences"]]
            templates, answers, turn_rng = (EVAL_SEG_QUESTION,), (EVAL_ANSWER,), None

        vision = self.image_inputs(image)
        prefix = vision.prefix
        turns = self.seg_turns([sent for _, (_, sent) in chosen], prefix=prefix, templates=templates,
                               answers=answers, rng=turn_rng)
        source = f"{self.refs_path}: image_id {image_id}"
        enc = self.encode(turns, objects_per_turn=[1] * len(turns),
                          image_tokens=vision.num_tokens, source=source)
        chosen = chosen[: enc.num_turns]

        decoded: dict[int, np.ndarray] = {}
        for ref, _ in chosen:
            if ref["ann_id"] not in decoded:
                decoded[ref["ann_id"]] = decode_segmentation(
                    self.annotations[ref["ann_id"]], height, width,
                    source=f"{self.ann_path}: ann_id {ref['ann_id']} (image {info['file_name']})")
        masks = np.stack([decoded[ref["ann_id"]] for ref, _ in chosen])[:, None]  # (n_obj, 1, H, W)

        meta = {
            "index": index,
            "sample_id": image_id,
            "image_id": image_id,
            "split": self.split,
            "image_paths": [path],
            "orig_size": (height, width),
            "ref_ids": [ref["ref_id"] for ref, _ in chosen],
            "ann_ids": [ref["ann_id"] for ref, _ in chosen],
            "sent_ids": [sid for _, (sid, _) in chosen],
            "sentences": [sent for _, (_, sent) in chosen],
            "questions": self.questions(turns[: enc.num_turns], prefix),
        }
        if self.mode == "eval":
            meta["prompts"] = self.eval_prompts(turns, prefix=prefix, image_tokens=vision.num_tokens, source=source)
            meta["prompt_objects"] = [[k] for k in range(len(chosen))]
        return self.make_sample(enc, vision=vision, g_pixel_values=self.sam_inputs([image]),
                                masks=masks, meta=meta)
