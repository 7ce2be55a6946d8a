"""Losses: point-sampled mask BCE + Dice (as Mask2Former / Sa2VA), TMC and boundary alignment.

Point sampling follows Mask2Former's ``get_uncertain_point_coords_with_randomness`` and
``point_sample`` (written here with ``grid_sample``; no mmcv): the loss is computed on points
biased towards uncertain logits, which is cheaper than the dense loss and sharpens edges.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


# --------------------------------------------------------------------------- point sampling
def point_sample(inputs: torch.Tensor, point_coords: torch.Tensor) -> torch.Tensor:
    """Bilinearly sample ``inputs`` (N, C, H, W) at ``point_coords`` (N, P, 2) in [0, 1] (x, y).

    Returns (N, C, P). ``align_corners=False`` as in detectron2's implementation.
    """
    grid = 2.0 * point_coords.unsqueeze(2) - 1.0  # (N, P, 1, 2) in [-1, 1]
    return F.grid_sample(inputs, grid.to(inputs.dtype), align_corners=False).squeeze(3)


@torch.no_grad()
def uncertain_point_coords(
    mask_logits: torch.Tensor, num_points: int, oversample_ratio: float = 3.0, importance_sample_ratio: float = 0.75
) -> torch.Tensor:
    """Sample (N, num_points, 2) coordinates, mostly where |logit| is smallest (most uncertain).

    ``oversample_ratio * num_points`` random candidates are scored by ``-|logit|``; the
    ``importance_sample_ratio`` most uncertain are kept and the rest are uniform random points.
    """
    num_masks = mask_logits.shape[0]
    num_sampled = int(num_points * oversample_ratio)
    candidates = torch.rand(num_masks, num_sampled, 2, device=mask_logits.device)  # (N, S, 2)
    uncertainty = -point_sample(mask_logits.float(), candidates).abs().squeeze(1)  # (N, S)
    num_uncertain = int(importance_sample_ratio * num_points)
    idx = uncertainty.topk(num_uncertain, dim=1).indices  # (N, U)
    coords = torch.gather(candidates, 1, idx.unsqueeze(-1).expand(-1, -1, 2))
    num_random = num_points - num_uncertain
    if num_random > 0:
        coords = torch.cat([coords, torch.rand(num_masks, num_random, 2, device=mask_logits.device)], dim=1)
    return coords


def sigmoid_bce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over all points of all masks. logits, targets: (N, P)."""
    return F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="mean")


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """'Naive' Dice (mmdet ``naive_dice=True``): 1 - (2|P∩G| + eps) / (|P| + |G| + eps), mean over N."""
    probs = logits.float().sigmoid().flatten(1)
    targets = targets.float().flatten(1)
    numerator = 2 * (probs * targets).sum(1) + eps
    denominator = probs.sum(1) + targets.sum(1) + eps
    return (1 - numerator / denominator).mean()


def point_sampled_mask_losses(
    mask_logits: torch.Tensor,
    gt_masks: torch.Tensor,
    num_points: int = 12544,
    oversample_ratio: float = 3.0,
    importance_sample_ratio: float = 0.75,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BCE and Dice on importance-sampled points.

    Args:
        mask_logits: (N, 1, h, w) predicted logits.
        gt_masks: (N, h, w) targets in {0, 1} (already at the logits' resolution).
    Returns:
        (bce, dice) scalars.
    """
    coords = uncertain_point_coords(mask_logits, num_points, oversample_ratio, importance_sample_ratio)
    point_logits = point_sample(mask_logits, coords).squeeze(1)  # (N, P)
    point_targets = point_sample(gt_masks.unsqueeze(1).to(mask_logits.dtype), coords).squeeze(1)  # (N, P)
    return sigmoid_bce_loss(point_logits, point_targets), dice_loss(point_logits, point_targets)


# --------------------------------------------------------------------------- TMC
def masked_avg_pool(feat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average of ``feat`` (N, C, H, W) inside ``mask`` (N, h, w), the mask resized to H×W.

    The mask is area-averaged down (or bilinearly up) to the feature size, so a 256² mask and a
    64² feature pool over the same region. Returns (N, C); an empty mask gives zeros.
    """
    mask = mask.to(feat.dtype).unsqueeze(1)  # (N, 1, h, w)
    if mask.shape[-2:] != feat.shape[-2:]:
        shrinking = mask.shape[-2] >= feat.shape[-2] and mask.shape[-1] >= feat.shape[-1]
        mode = "area" if shrinking else "bilinear"
        mask = F.interpolate(mask, size=feat.shape[-2:], mode=mode, **({} if shrinking else {"align_corners": False}))
    numerator = (feat * mask).sum(dim=(2, 3))
    denominator = mask.sum(dim=(2, 3)).clamp_min(1e-6)
    return numerator / denominator


def tmc_loss(
    visual: torch.Tensor, text: torch.Tensor, temperature: float = 0.07, group_ids: torch.Tensor | None = None
) -> torch.Tensor:
    """Symmetric InfoNCE between mask-pooled visual features and ``[SEG]`` embeddings.

    Args:
        visual: (N, D) pooled features, one per (object, frame).
        text: (N, D) the matching ``[SEG]`` embeddings.
        temperature: softmax temperature.
        group_ids: (N,) object identity. Rows of the same object (its frames, or other
            expressions referring to it) are not negatives of each other: they are removed from
            each other's denominators.
    Returns:
        scalar loss; 0 when there is nothing to contrast (N < 2).
    """
    num = visual.shape[0]
    if num < 2:
        return visual.sum() * 0.0 + text.sum() * 0.0
    v = F.normalize(visual.float(), dim=-1)
    t = F.normalize(text.float(), dim=-1)
    logits = v @ t.t() / temperature  # (N, N): visual i vs text j
    if group_ids is not None:
        same = group_ids[:, None] == group_ids[None, :]
        off_diagonal = ~torch.eye(num, dtype=torch.bool, device=logits.device)
        logits = logits.masked_fill(same & off_diagonal, float("-inf"))
    labels = torch.arange(num, device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


# --------------------------------------------------------------------------- boundary
_SOBEL_X = ((1.0, 0.0, -1.0), (2.0, 0.0, -2.0), (1.0, 0.0, -1.0))
_SOBEL_Y = ((1.0, 2.0, 1.0), (0.0, 0.0, 0.0), (-1.0, -2.0, -1.0))


def sobel_edges(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Gradient magnitude (N, 1, H, W) of ``x`` (N, 1, H, W); kernels live on ``x``'s device."""
    kernels = torch.tensor((_SOBEL_X, _SOBEL_Y), dtype=x.dtype, device=x.device).unsqueeze(1)  # (2,1,3,3)
    grad = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernels)  # (N, 2, H, W)
    return torch.sqrt((grad**2).sum(dim=1, keepdim=True) + eps)


def boundary_loss(pred_logits: torch.Tensor, gt_masks: torch.Tensor) -> torch.Tensor:
    """L1 between Sobel edge maps of the predicted probabilities and of the GT, per sample.

    Args:
        pred_logits: (N, 1, H, W) or (N, H, W) logits.
        gt_masks: same spatial shape, {0, 1}.
    Each sample's L1 is normalised by its own GT edge mass (so small objects count as much as
    large ones), then averaged over samples. 0 for identical binary masks with saturated
    logits; grows as the prediction shifts away from the GT.
    """
    if pred_logits.dim() == 3:
        pred_logits = pred_logits.unsqueeze(1)
    if gt_masks.dim() == 3:
        gt_masks = gt_masks.unsqueeze(1)
    pred_edges = sobel_edges(pred_logits.float().sigmoid())
    gt_edges = sobel_edges(gt_masks.float())
    per_sample = (pred_edges - gt_edges).abs().flatten(1).sum(1)  # (N,)
    normaliser = gt_edges.flatten(1).sum(1).clamp_min(1.0)
    return (per_sample / normaliser).mean()
