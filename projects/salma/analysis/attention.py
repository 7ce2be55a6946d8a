"""Where CMA looks, and where what it adds lands (``tools/visualize_attention.py``; the shares
themselves: :mod:`projects.salma.evaluation.attention_stats`, also behind ``tools/test.py --attention-stats``).

CMA's queries are pixels and its keys are language tokens, so a pixel's attention is a distribution
over [null key, ``[SEG]``, expression tokens]: the maps show, per pixel, the share going to
``[SEG]``, to the expression tokens and to the null key. What CMA *changes* is the residual it adds
to each pixel's feature (gain x warm-up x gate x attention output): its norm per pixel is the
"CMA output" map, and the scalar statistic is the share of that output landing on the referred
object vs on a distractor (annotations flagged ``"distractor": 1``, as the synthetic distractor
mode writes them) vs on the image's other annotated objects. The masks are brought to the feature
grid by area (fractional coverage per cell); SAM-2's input is the image resized without padding,
so the grid covers the whole image.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..build import reader_settings
from ..datasets.collate import expand_eval_sample, salma_collate
from ..datasets.inference import InferenceReader
from ..datasets.transforms import load_image
from ..evaluation.attention_stats import SHARE_KEYS, CocoObjects, output_shares
from ..evaluation.res import first_mask, without_gt
from ..evaluation.runner import complete_dataset_cfg, resolve_runs
from ..models.cma import capture_attention
from ..registry import DATASETS


# ---------------------------------------------------------------------------------------------------
# maps of one sample
# ---------------------------------------------------------------------------------------------------
@dataclass
class AttentionRow:
    """What one model did on one sample (maps at the CMA feature resolution, None where it has no such part)."""

    label: str
    image: Image.Image
    text: str
    answer: str
    mask: np.ndarray | None  # (H0, W0) bool: the first [SEG]'s prediction
    prior: np.ndarray | None = None  # (h', w') sigmoid of the structure prior
    gate: np.ndarray | None = None  # (H, W)
    to_seg: np.ndarray | None = None  # (H, W) attention share on [SEG]
    to_expression: np.ndarray | None = None  # (H, W) attention share on the expression tokens
    to_null: np.ndarray | None = None  # (H, W) attention share on the null key
    output: np.ndarray | None = None  # (H, W) norm of what CMA adds
    shares: dict | None = None
    note: str = ""


def predict_row(model, row: dict, image: Image.Image, label: str, *, max_new_tokens: int = 32,
                objects: CocoObjects | None = None) -> AttentionRow:
    """Predict one generation-prompt row (``expand_eval_sample``'s) with CMA captured."""
    batch = model.data_preprocessor(salma_collate([{**row, "meta": without_gt(row["meta"])}]), False)["data"]
    with capture_attention(model) as records:
        output = model.predict(batch, max_new_tokens=max_new_tokens)[0]
    mask = first_mask(output)
    meta = row["meta"]
    text = meta["sentences"][meta["prompt_index"]] if "sentences" in meta else meta["questions"][meta["prompt_index"]]
    out = AttentionRow(label, image, text, output["text"], None if mask is None else mask.numpy())
    if getattr(model.grounding_encoder, "cma", None) is None:
        out.note = "no CMA"
        return out
    if not records:
        out.note = "no [SEG] in the answer"
        return out
    rec = records[0]
    h, w = rec.size
    grid = lambda t: t.float().reshape(h, w).cpu().numpy()  # noqa: E731
    out.to_null, out.to_seg = grid(rec.weights[0, :, 0]), grid(rec.weights[0, :, 1])
    out.to_expression = grid(rec.weights[0, :, 2:].sum(-1))
    out.output = grid(rec.delta[0])
    if rec.gate is not None:
        out.gate = grid(rec.gate[0])
    if rec.prior_logits is not None:
        out.prior = torch.sigmoid(rec.prior_logits[0].float()).cpu().numpy()
    if objects is not None and meta.get("gt_masks") is not None:
        k = meta["prompt_index"]
        regions = objects.regions(meta["image_id"], meta["ann_ids"][k], np.asarray(meta["gt_masks"][0, 0]))
        out.shares = output_shares(rec, 0, regions)
    return out


PANELS = (("image", "image"), ("prior", "structure prior"), ("gate", "gate"), ("to_seg", "attn -> [SEG]"),
          ("to_expression", "attn -> expression"), ("to_null", "attn -> null key"), ("output", "|CMA output|"),
          ("mask", "predicted mask"))


def render_rows(rows: list[AttentionRow], path: str, *, title: str = "") -> str:
    """One figure row per model: image | prior | gate | attention to [SEG] / expression / null key |
    norm of CMA's output | predicted mask. Attention shares on a fixed 0-1 scale (comparable across
    models); the output norm on each row's own scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), len(PANELS), figsize=(2.1 * len(PANELS), 2.5 * len(rows) + 0.5),
                             squeeze=False)
    for r, row in enumerate(rows):
        image = np.asarray(row.image.convert("RGB"))
        extent = (0, image.shape[1], image.shape[0], 0)
        for c, (key, name) in enumerate(PANELS):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.imshow(image, extent=extent)
            if key == "image":
                ax.set_ylabel(row.label, fontsize=8)
                ax.set_title(f"{row.text[:34]}", fontsize=7)
                continue
            value = getattr(row, key)
            if value is None:
                ax.imshow(np.zeros_like(image[..., 0]), cmap="gray", alpha=0.6, extent=extent)
                why = row.note or ("no prior" if key in ("prior", "gate") else "-")
                ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, color="white", fontsize=8)
            elif key == "mask":
                ax.imshow(np.ma.masked_where(~value, value.astype(float)), cmap="autumn", alpha=0.6, extent=extent,
                          vmin=0, vmax=1)
            else:
                vmax = float(value.max()) if key == "output" else 1.0
                ax.imshow(value, cmap="inferno", alpha=0.65, extent=extent, vmin=0.0, vmax=max(vmax, 1e-8),
                          interpolation="nearest")
            label = name
            if key == "output" and row.shares:
                label += "\n" + ", ".join(f"{k} {100 * row.shares[k]:.0f}%" for k in SHARE_KEYS if k in row.shares)
            if key == "mask":
                label += f"\n-> {row.answer[:28]}"
            ax.set_title(label, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------------
# samples for tools/visualize_attention.py
# ---------------------------------------------------------------------------------------------------
@dataclass
class Sample:
    """One generation-prompt row of one image, with the image and a name for its PNG."""

    key: str
    image: Image.Image
    row: dict


def dataset_samples(cfg, model, name: str, *, split: str | None = None, max_items: int = 3,
                    per_item: int = 1) -> tuple[list[Sample], CocoObjects | None]:
    """The first ``per_item`` sentences of the first ``max_items`` images of a RES ``test_datasets``
    entry, read as ``tools/test.py`` reads them; and the entry's annotated objects (for the shares)."""
    runs = resolve_runs(cfg, [name], split)
    if len(runs) != 1:
        raise ValueError(f"--dataset {name}: splits {[r.name for r in runs]}; choose one with --split")
    (run,) = runs
    if run.task != "res":
        raise ValueError(f"--dataset {name}: attention maps are drawn for RES entries (task 'res'), not {run.task!r}")
    dataset = DATASETS.build(complete_dataset_cfg(run, cfg.model.to_dict(), model))
    samples = []
    for index in range(min(max_items, len(dataset))):
        sample = dataset[index]
        image = load_image(sample["meta"]["image_paths"][0])
        for k, row in enumerate(expand_eval_sample(sample)[:per_item]):
            samples.append(Sample(f"{run.name.replace('/', '_')}_image{sample['meta']['image_id']}_s{k}", image, row))
    ann_path = getattr(dataset, "ann_path", None)
    return samples, CocoObjects.read(ann_path) if ann_path else None


def image_samples(cfg, model, images: list[str], texts: list[str]) -> list[Sample]:
    """Every (image file, text) pair, read as the exported model reads them (the config's reader settings)."""
    reader = InferenceReader(tokenizer=model.tokenizer, **reader_settings(cfg, model))
    samples = []
    for i, path in enumerate(images):
        image = load_image(path)
        rows = expand_eval_sample(reader.image_item(image, texts))
        for k, row in enumerate(rows):
            row["meta"]["sentences"] = list(texts)
            stem = os.path.splitext(os.path.basename(path))[0]
            samples.append(Sample(f"{i:02d}_{stem}_t{k}", image, row))
    return samples
