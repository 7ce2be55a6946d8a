"""Referring video object segmentation: Ref-DAVIS17, MeViS, ReVOS, Ref-YouTube-VOS.

One item = one video with all its expressions (reader ``RefVOSDataset`` in ``mode='eval'`` with
``stream_frames=True``: the LLM's K frames as tiles, SAM-2 input and GT of every frame read when
asked). Each expression is its own generation prompt; the answer's first ``[SEG]`` gives the
expression's masks on every frame (``projects.salma.models.video``: language decode on the K LLM
frames, SAM-2 memory propagation to the rest, or ``decode_all``), streamed frame by frame: each
frame's mask is encoded (RLE) and scored when it arrives, so memory does not grow with the video's
length. An expression without ``[SEG]`` is an empty prediction on every frame (scored, never
skipped).

Scores per expression follow docs/metrics.md: J and F averaged over all frames (``ExpressionScores``,
the per-frame values of ``video_jf``);
ReVOS adds A and R per expression (``revos_accuracy_and_robustness`` against the video's
foreground masks) and splits by ``type_id``; Ref-SAV (protocol ``'refsav'``) adds A and reports
long (``type_id`` 0) and short (1) expressions separately, as Sa2VA's ``eval_ref_sav.py``. Splits without GT (Ref-YouTube-VOS, MeViS valid)
only save masks; the runner turns them into the submission zip.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ..datasets.collate import expand_eval_sample, salma_collate
from ..datasets.masks import encode_mask
from ..models.video import VideoPredictor
from .metrics import (ExpressionScores, aggregate_refsav, aggregate_refvos, aggregate_revos, revos_accuracy,
                      revos_accuracy_and_robustness, video_jf)
from .res import without_gt

PROTOCOLS = ("refvos", "revos", "refsav")


class RefVOSEvaluator:
    """Predicts one video item and summarises a split.

    Args:
        predictor: the :class:`VideoPredictor` (model, propagation mode, tracker).
        protocol: ``'refvos'`` (J, F, J&F), ``'revos'`` (also A, R; referring / reasoning /
            overall by ``type_id``; needs the reader's ``foreground_file``) or ``'refsav'`` (J, F,
            J&F, A; long / short / overall by ``type_id``).
    """

    task = "ref_vos"

    def __init__(self, predictor: VideoPredictor, *, protocol: str = "refvos") -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        self.predictor = predictor
        self.protocol = protocol

    @staticmethod
    def item_key(dataset, index: int) -> str:
        """A stable id of item ``index`` (the video id), known without loading the item."""
        return f"video:{dataset.items[index]['vid']}"

    @torch.no_grad()
    def predict_item(self, model, sample: dict, *, foreground=None) -> dict:
        """One record per video: every expression's masks (RLE per frame) and, with GT, its scores.

        Streamed: masks arrive frame by frame (:meth:`VideoPredictor.stream`); each frame is
        encoded to RLE and scored (:class:`metrics.ExpressionScores`) against its GT frame, read
        then, so no array of the whole video is held. ``sample``: a reader item with every frame
        read when asked (``stream_frames=True``: ``sam_frames`` / ``gt_frames``), or with every
        frame in memory (``sam_all_frames=True``). ``foreground``: ReVOS foreground of the video
        (protocol 'revos'), (N, H, W) or one frame at a time (``RefVOSDataset.foreground_frames``).
        """
        meta = sample["meta"]
        vid = meta["video_id"]
        n_frames = len(meta["all_frame_paths"])
        llm_frames = list(meta["frame_indices"])  # (K,) positions in the video
        device = next(model.parameters()).device
        if "sam_frames" in sample:  # every frame read when the tracker reaches it
            frames, gt = sample["sam_frames"], sample["gt_frames"]
            llm_pixels = sample["g_pixel_values"].to(device)  # (K, 3, G, G): the LLM frames
            if len(frames) != n_frames:
                raise ValueError(f"video {vid}: {len(frames)} SAM-2 frames for {n_frames} frames")
        else:
            if list(meta["sam_frame_indices"]) != list(range(n_frames)):
                raise ValueError(f"video {vid}: evaluation needs SAM-2 input for every frame (reader "
                                 f"stream_frames=True or sam_all_frames=True)")
            frames = sample["g_pixel_values"]  # (N, 3, G, G), every frame
            llm_pixels = frames[llm_frames].to(device)  # (K, 3, G, G)
            gt = None if sample["masks"] is None else np.asarray(sample["masks"]).swapaxes(0, 1)  # (N, n_exp, H, W)
        if self.protocol == "revos" and gt is not None and foreground is None:
            raise ValueError(f"video {vid}: protocol 'revos' needs the foreground masks (reader foreground_file)")
        rows = expand_eval_sample(sample)
        # Rows carry the K LLM frames (one copy on the device, shared); the predictor decodes
        # them, or every frame (decode_all), and tracks the rest, frame by frame.
        model_rows = [{**row, "g_pixel_values": llm_pixels, "meta": without_gt(row["meta"])} for row in rows]
        batch = model.data_preprocessor(salma_collate(model_rows), False)["data"]
        stream = self.predictor.stream(batch, frames, llm_frames, tuple(meta["orig_size"]))

        prompts = [row["meta"]["prompt_index"] for row in rows]
        rles = [[None] * n_frames if a["n_masks"] else None for a in stream.answers]
        scores = None if gt is None else [
            ExpressionScores(n_frames, accuracy=self.protocol == "refsav", robustness=self.protocol == "revos")
            for _ in rows]
        for t, masks in stream:  # masks: per row (1, H, W), or (0, H, W) without [SEG]
            gt_t = None if gt is None else np.asarray(gt[t])  # (n_exp, H, W)
            fg_t = None if foreground is None or gt is None else foreground[t]
            for r, m in enumerate(masks):
                pred = m[0].numpy() if m.shape[0] else None
                if pred is not None:
                    rles[r][t] = encode_mask(pred)
                if scores is not None:
                    scores[r].add(t, gt_t[prompts[r]], pred, fg_t)

        expressions = []
        for r, (k, answer) in enumerate(zip(prompts, stream.answers)):
            rec = {
                "exp_id": meta["exp_ids"][k],
                "exp": meta["expressions"][k],
                "type_id": meta["type_ids"][k],
                "question": meta["questions"][k],
                "answer": answer["text"],
                "n_seg": answer["n_seg"],
                "masks": rles[r],
            }
            if scores is not None:
                rec.update(scores[r].result())
            expressions.append(rec)
        return {
            "video_id": vid,
            "size": list(meta["orig_size"]),
            "frame_names": list(meta["frame_names"]),
            "frame_paths": list(meta["all_frame_paths"]),
            "llm_frames": llm_frames,
            "expressions": expressions,
        }

    def summarize(self, records: Sequence[dict]) -> dict[str, Any]:
        exps = [e for rec in records for e in rec["expressions"]]
        if not exps:
            raise ValueError("no expressions to summarise")
        n_no_seg = sum(e["n_seg"] == 0 for e in exps)
        if "J" not in exps[0]:  # no GT: masks only (submission)
            return {"n_videos": len(records), "n_expressions": len(exps), "n_no_seg": n_no_seg}
        if self.protocol == "revos":
            out: dict[str, Any] = aggregate_revos(exps)
        elif self.protocol == "refsav":
            out = aggregate_refsav(exps)
        else:
            out = aggregate_refvos(exps)
        out["n_videos"] = len(records)
        out["n_no_seg"] = n_no_seg
        return out


def score_expression(
    gt: np.ndarray, pred: np.ndarray | None, foreground: np.ndarray | None, *, revos: bool, accuracy: bool = False
) -> dict[str, float]:
    """J, F (and A, R for ReVOS; A with ``accuracy``) of one expression, in [0, 1]; ``pred=None`` is
    an empty prediction.

    gt, pred: (N, H, W); foreground: (N, H, W) or None.
    """
    pred = np.zeros_like(gt, dtype=bool) if pred is None else pred
    j, f = video_jf(gt, pred)
    out = {"J": j, "F": f}
    if revos:
        out["A"], out["R"] = revos_accuracy_and_robustness(gt, pred, foreground)
    elif accuracy:
        out["A"] = revos_accuracy(gt, pred)
    return out
