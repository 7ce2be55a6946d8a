"""Where CMA's output lands during a RES evaluation (``tools/test.py --attention-stats``).

What CMA *changes* is the residual it adds to each pixel's feature (gain x warm-up x gate x
attention output); the statistic is the share of that residual's norm landing on the referred
object vs on a distractor (annotations flagged ``"distractor": 1``, as the synthetic distractor
mode writes them) vs on the image's other annotated objects. The masks are brought to the feature
grid by area (fractional coverage per cell); SAM-2's input is the image resized without padding,
so the grid covers the whole image. The maps of :mod:`projects.salma.analysis.attention` use the
same shares.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..datasets.io import read_json
from ..datasets.masks import decode_segmentation
from ..models.cma import CMAAttention

SHARE_KEYS = ("target", "distractor", "other")


# ---------------------------------------------------------------------------------------------------
# shares of the CMA output
# ---------------------------------------------------------------------------------------------------
def coverage(mask: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """(H0, W0) {0,1} mask -> (h * w,) fraction of each feature cell it covers (area resize)."""
    m = torch.as_tensor(np.asarray(mask), dtype=torch.float32)[None, None]
    return F.interpolate(m, size=size, mode="area").flatten()


def output_shares(record: CMAAttention, row: int, regions: dict[str, np.ndarray | None]) -> dict[str, float]:
    """Share of CMA's added norm (``record.delta[row]``) on each region, and each region's area share
    (what an output spread evenly would give). Regions that are None are left out; NaN shares when
    CMA added nothing (zero gain)."""
    delta = record.delta[row].float()  # (HW,)
    total = float(delta.sum())
    out = {}
    for name, mask in regions.items():
        if mask is None:
            continue
        cov = coverage(mask, record.size)
        out[name] = float((cov * delta).sum()) / total if total > 0 else math.nan
        out[f"{name}_area"] = float(cov.mean())
    return out


@dataclass
class CocoObjects:
    """Every annotated object of a COCO ``instances.json`` by image: (ann_id, is_distractor, segmentation)."""

    path: str
    sizes: dict[int, tuple[int, int]]
    objects: dict[int, list[tuple[int, bool, object]]] = field(default_factory=dict)

    @classmethod
    def read(cls, path: str) -> "CocoObjects":
        instances = read_json(path, expect=dict, what="(COCO instances)")
        sizes = {im["id"]: (im["height"], im["width"]) for im in instances["images"]}
        objects: dict[int, list] = defaultdict(list)
        for ann in instances["annotations"]:
            objects[ann["image_id"]].append((ann["id"], bool(ann.get("distractor", 0)), ann["segmentation"]))
        return cls(path, sizes, dict(objects))

    def regions(self, image_id: int, target_ann_id: int, target: np.ndarray) -> dict[str, np.ndarray | None]:
        """target (the GT), distractor (union of flagged annotations; None if the image has none) and
        other (every other annotated object), each (H, W) uint8, disjoint from the target."""
        h, w = self.sizes[image_id]
        distractor, other = np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint8)
        has_distractor = False
        for ann_id, flagged, segmentation in self.objects.get(image_id, ()):
            if ann_id == target_ann_id:
                continue
            mask = decode_segmentation(segmentation, h, w, source=f"{self.path}: ann {ann_id}")
            if flagged:
                distractor |= mask
                has_distractor = True
            else:
                other |= mask
        target = target.astype(np.uint8)
        return {"target": target, "distractor": (distractor & (1 - target)) if has_distractor else None,
                "other": other & (1 - target) & (1 - distractor)}


class AttentionStats:
    """Per-sentence shares of CMA's output for a RefCOCO-style evaluation, and their means.

    Args:
        ann_path: the reader's COCO ``instances.json`` (objects and distractor flags).
    """

    def __init__(self, ann_path: str) -> None:
        self.objects = CocoObjects.read(ann_path)

    @classmethod
    def for_dataset(cls, dataset) -> "AttentionStats":
        ann_path = getattr(dataset, "ann_path", None)
        if ann_path is None:
            raise ValueError(f"--attention-stats: {type(dataset).__name__} has no COCO instances file (ann_path); "
                             "attention statistics need a RefCOCO-style reader")
        return cls(ann_path)

    def sentence(self, records: list[CMAAttention], meta: dict) -> dict | None:
        """Shares of the first ``[SEG]``'s decode (the RES prediction), or None without one (no
        ``[SEG]`` in the answer, or a model without CMA)."""
        if not records:
            return None
        k = meta["prompt_index"]
        target = np.asarray(meta["gt_masks"][0, 0])
        return output_shares(records[0], 0, self.objects.regions(meta["image_id"], meta["ann_ids"][k], target))

    @staticmethod
    def summarize(sentences) -> dict[str, float]:
        """Means over the sentences that have a CMA record (percent); NaN-free keys only."""
        values: dict[str, list[float]] = defaultdict(list)
        n = 0
        for rec in sentences:
            shares = rec.get("attention")
            if shares is None:
                continue
            n += 1
            for key, value in shares.items():
                if not math.isnan(value):
                    values[key].append(value)
        out = {f"attn_{key}": 100.0 * float(np.mean(v)) for key, v in values.items()}
        out["n_attention"] = n
        return out
