"""Referring expression segmentation (RefCOCO / RefCOCO+ / RefCOCOg): per-sentence predictions,
the strict cIoU / gIoU, and the mmengine metric for validation during training.

Every sentence is its own generation prompt (the reader's ``meta['prompts']``, expanded by
``salma_eval_collate``); the model answers, and the mask of the answer's first ``[SEG]`` is the
prediction. The image is encoded once for all its sentences (vision tower, SAM-2, prior). A
sentence without ``[SEG]`` counts as an empty prediction (its GT area enters the union: the strict
numbers); the Sa2VA-style lenient numbers (such sentences skipped) are reported next to them,
labelled ``*_lenient``. Numbers are percentages.

Each sentence's contribution is kept as a :class:`~.metrics.RESAccumulator` state vector, so the
split's numbers are sums of per-sentence records: independent of how items were spread over ranks
or runs, and recomputable from the saved RLE masks.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from mmengine.evaluator import BaseMetric

from ..datasets.collate import expand_eval_sample, salma_collate
from ..datasets.masks import encode_mask
from ..models.cma import capture_attention
from ..models.llava_sam2 import ItemCache
from ..registry import METRICS
from .metrics import RESAccumulator

RES_KEYS = ("cIoU", "gIoU")


def first_mask(output: dict) -> torch.Tensor | None:
    """(H, W) bool mask of the answer's first ``[SEG]`` on the first frame, or None without one."""
    masks = output["masks"]  # (n_seg, T, H, W)
    return masks[0, 0] if masks.shape[0] else None


def without_gt(meta: dict) -> dict:
    """A row's meta for the model: the GT stays on the host (the preprocessor would move it)."""
    return {k: v for k, v in meta.items() if k != "gt_masks"}


def sentence_record(meta: dict, output: dict) -> dict:
    """Everything saved for one sentence: ids, prompt, answer, the RLE mask and its RES counts.

    ``meta`` is a row's meta (``prompt_index`` k into the item's per-sentence lists, GT in
    ``gt_masks`` (1, 1, H, W)); ``output`` the model's prediction of that row.
    """
    k = meta["prompt_index"]
    gt = meta["gt_masks"]
    if gt is None:
        raise ValueError(f"{meta.get('dataset')} image {meta.get('image_id')}: RES evaluation needs GT masks")
    gt = np.asarray(gt[0, 0])  # (H, W)
    pred = first_mask(output)
    acc = RESAccumulator()
    acc.add(None if pred is None else pred.numpy(), gt)
    return {
        "sent_id": meta["sent_ids"][k],
        "ref_id": meta["ref_ids"][k],
        "ann_id": meta["ann_ids"][k],
        "sentence": meta["sentences"][k],
        "question": meta["questions"][k],
        "answer": output["text"],
        "n_seg": int(output["masks"].shape[0]),
        "mask": None if pred is None else encode_mask(pred.numpy()),
        "res_state": acc.to_array().tolist(),
    }


def summarize_res(sentence_records: Iterable[dict], *, lenient: bool = True) -> dict[str, Any]:
    """Split numbers (percent) from per-sentence records, summed in the given order."""
    acc, n = RESAccumulator(), 0
    for rec in sentence_records:
        acc.merge(RESAccumulator.from_array(rec["res_state"]))
        n += 1
    if n == 0:
        raise ValueError("no sentences to summarise")
    raw = acc.compute(lenient=lenient)
    out: dict[str, Any] = {k: 100.0 * v for k, v in raw.items() if k != "n_missing"}
    out["n_sentences"] = n
    out["n_no_seg"] = int(acc.missing_count)
    return out


class RESEvaluator:
    """Predicts one RefCOCO-style item (an image with all its sentences) and summarises a split.

    Args:
        max_new_tokens: generation budget per answer.
        lenient: also report the Sa2VA-style numbers that skip sentences without ``[SEG]``.
        share_item: the image's sentences share one vision-tower pass, one SAM-2 encoding and one
            prior pass (``ItemCache``); False predicts each sentence from scratch, as Sa2VA's
            evaluator does (``test_options.share_item_inputs``; the same numbers, slower).
        attention: per-sentence statistics of CMA's attention
            (:class:`~projects.salma.evaluation.attention_stats.AttentionStats`): each prediction runs with CMA
            captured, its ``sentence(records, meta)`` is saved as the sentence's ``attention`` and
            ``summarize`` adds its means to the split's numbers. None: not captured.
    """

    task = "res"

    def __init__(self, *, max_new_tokens: int = 32, lenient: bool = True, share_item: bool = True,
                 attention=None) -> None:
        self.max_new_tokens = max_new_tokens
        self.lenient = lenient
        self.share_item = share_item
        self.attention = attention

    @staticmethod
    def item_key(dataset, index: int) -> str:
        """A stable id of item ``index`` (the COCO image id), known without loading the item."""
        return f"image:{dataset.items[index][0]}"

    @torch.no_grad()
    def predict_item(self, model, sample: dict) -> dict:
        """One record per image: its sentences' records, in the reader's sentence order."""
        meta = sample["meta"]
        rows = expand_eval_sample(sample)
        sentences = []
        shared = ItemCache()
        for row in rows:  # one prompt at a time: the image's tiles are not copied per sentence
            batch = model.data_preprocessor(salma_collate([{**row, "meta": without_gt(row["meta"])}]), False)["data"]
            capture = capture_attention(model) if self.attention is not None else contextlib.nullcontext()
            with capture as records:
                output = model.predict(batch, max_new_tokens=self.max_new_tokens,
                                       cache=shared if self.share_item else ItemCache())[0]
            sentences.append(sentence_record(row["meta"], output))
            if self.attention is not None:
                sentences[-1]["attention"] = self.attention.sentence(records, row["meta"])
        return {
            "image_id": meta["image_id"],
            "image_path": meta["image_paths"][0],
            "size": list(meta["orig_size"]),
            "sentences": sentences,
        }

    def summarize(self, records: Sequence[dict]) -> dict[str, Any]:
        out = summarize_res((s for rec in records for s in rec["sentences"]), lenient=self.lenient)
        out["n_images"] = len(records)
        if self.attention is not None:
            out.update(self.attention.summarize(s for rec in records for s in rec["sentences"]))
        return out


@METRICS.register_module()
class RESMetric(BaseMetric):
    """cIoU / gIoU (strict, and lenient labelled) for mmengine's val / test loops.

    Use with a RefCOCO-style reader in ``mode='eval'`` and the expanding collate::

        val_dataloader = dict(batch_size=1, dataset=dict(type='RefCOCODataset', mode='eval', ...),
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='salma.salma_eval_collate'))  # scope: root FUNCTIONS.get
        val_evaluator = dict(type='RESMetric')
        val_cfg = dict(type='ValLoop')

    Each batch row is one sentence; the model's ``predict`` output for it is scored against the
    row's ``meta['gt_masks']``. Results are kept per image (mmengine truncates the gathered
    results to the dataset's length, which counts images), so ranks' results gather correctly.
    """

    default_prefix = "res"

    def __init__(self, *, lenient: bool = True, collect_device: str = "cpu", prefix: str | None = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.lenient = lenient

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        metas = data_batch["data"]["meta"]
        if len(metas) != len(data_samples):
            raise ValueError(f"{len(data_samples)} predictions for {len(metas)} prompts")
        per_image: dict[int, list] = {}  # item index -> its sentences' states, in row order
        for meta, output in zip(metas, data_samples):
            per_image.setdefault(meta["index"], []).append(sentence_record(meta, output)["res_state"])
        self.results.extend({"index": index, "states": states} for index, states in per_image.items())

    def compute_metrics(self, results: list) -> dict[str, float]:
        return summarize_res(({"res_state": s} for image in results for s in image["states"]), lenient=self.lenient)
