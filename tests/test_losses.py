"""Losses against hand-computed values."""
import math

import pytest
import torch
import torch.nn.functional as F

from projects.salma.models.losses import (
    boundary_loss,
    dice_loss,
    masked_avg_pool,
    point_sample,
    point_sampled_mask_losses,
    sobel_edges,
    tmc_loss,
    uncertain_point_coords,
)


def test_tmc_matches_hand_computed_infonce():
    visual = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # normalised: [1, 0], [.7071, .7071]
    t = 0.5
    s = 1 / math.sqrt(2)
    logits = torch.tensor([[1.0, s], [0.0, s]]) / t  # v_i . t_j / t
    # rows (visual -> text): -log softmax of the diagonal
    row = -(logits[0, 0] - torch.logsumexp(logits[0], 0)) - (logits[1, 1] - torch.logsumexp(logits[1], 0))
    col = -(logits[0, 0] - torch.logsumexp(logits[:, 0], 0)) - (logits[1, 1] - torch.logsumexp(logits[:, 1], 0))
    expected = 0.5 * (row / 2 + col / 2)
    assert torch.allclose(tmc_loss(visual, text, temperature=t), expected, atol=1e-6)


def test_tmc_same_object_copies_are_not_negatives():
    g = torch.Generator().manual_seed(0)
    visual, text = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    groups = torch.tensor([0, 0, 1, 1])
    loss = tmc_loss(visual, text, 0.1, groups)
    # By hand: row i competes only against texts of other objects (and its own).
    v, tx = F.normalize(visual, dim=-1), F.normalize(text, dim=-1)
    logits = v @ tx.t() / 0.1
    allowed = [[0, 2, 3], [1, 2, 3], [0, 1, 2], [0, 1, 3]]
    row = sum(torch.logsumexp(logits[i, allowed[i]], 0) - logits[i, i] for i in range(4)) / 4
    col = sum(torch.logsumexp(logits[allowed[i], i], 0) - logits[i, i] for i in range(4)) / 4
    assert torch.allclose(loss, 0.5 * (row + col), atol=1e-5)
    assert not torch.allclose(loss, tmc_loss(visual, text, 0.1))


def test_tmc_single_pair_is_zero_with_graph():
    v = torch.randn(1, 4, requires_grad=True)
    loss = tmc_loss(v, torch.randn(1, 4))
    assert loss.item() == 0.0 and loss.requires_grad


def test_masked_avg_pool_resizes_mask_to_feature():
    feat = torch.arange(16.0).view(1, 1, 4, 4)
    mask = torch.zeros(1, 8, 8)
    mask[0, :4, :4] = 1  # top-left quarter -> feature pixels (0,0),(0,1),(1,0),(1,1)
    assert masked_avg_pool(feat, mask).item() == pytest.approx((0 + 1 + 4 + 5) / 4)
    small = torch.zeros(1, 2, 2)
    small[0, 1, 1] = 1  # bottom-right quarter, upsampled
    assert masked_avg_pool(feat, small).item() == pytest.approx((10 + 11 + 14 + 15) / 4, abs=1.5)
    assert masked_avg_pool(feat, torch.zeros(1, 4, 4)).item() == 0.0


def square(shift=0, size=32):
    m = torch.zeros(1, size, size)
    m[0, 8 + shift : 20 + shift, 8:20] = 1
    return m


def test_boundary_loss_zero_for_identical_and_grows_with_shift():
    gt = square()
    logits = (gt * 2 - 1) * 30
    assert boundary_loss(logits, gt).item() < 1e-4
    values = [boundary_loss((square(s) * 2 - 1) * 30, gt).item() for s in (1, 2, 4)]
    assert 0 < values[0] < values[1] <= values[2]


def test_boundary_loss_is_per_sample_not_normalised_by_first():
    gt = torch.cat([square(), square(2)])
    pred = (torch.cat([square(), square()]) * 2 - 1) * 30
    both = boundary_loss(pred, gt)
    assert torch.allclose(both, boundary_loss(pred[1:], gt[1:]) / 2, atol=1e-5)


def test_sobel_follows_input_device_and_dtype():
    x = square().unsqueeze(1).double()
    edges = sobel_edges(x)
    assert edges.dtype == torch.float64 and edges.device == x.device
    assert edges[0, 0, 14, 14] == pytest.approx(1e-3)  # flat interior: sqrt(eps)


def test_point_sample_at_pixel_centres_reads_pixels():
    x = torch.arange(12.0).view(1, 1, 3, 4)
    coords = torch.tensor([[[0.5 / 4, 0.5 / 3], [3.5 / 4, 2.5 / 3]]])  # centres of (0,0) and (2,3)
    assert point_sample(x, coords).flatten().tolist() == pytest.approx([0.0, 11.0], abs=1e-5)


def test_uncertain_points_prefer_uncertain_region():
    logits = torch.full((1, 1, 32, 32), 10.0)
    logits[..., 16:] = 0.0  # right half uncertain
    coords = uncertain_point_coords(logits, num_points=100, oversample_ratio=3, importance_sample_ratio=0.75)
    assert coords.shape == (1, 100, 2)
    assert (coords[0, :75, 0] > 0.5 - 1 / 32).all()


def test_dice_and_point_losses_hand_values():
    logits = torch.tensor([[30.0, -30.0, 30.0, -30.0]])
    targets = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    # probs ~ [1, 0, 1, 0]: 1 - (2*1 + 1) / (2 + 1 + 1) = 0.25
    assert dice_loss(logits, targets).item() == pytest.approx(0.25, abs=1e-6)
    # Uniform points: a perfect prediction is ~free except at the few interpolated edge points.
    gt = square()
    bce, dice = point_sampled_mask_losses((gt * 2 - 1).unsqueeze(1) * 30, gt, 512, importance_sample_ratio=0.0)
    bce_bad, dice_bad = point_sampled_mask_losses((1 - 2 * gt).unsqueeze(1) * 30, gt, 512, importance_sample_ratio=0.0)
    assert bce < 1.0 and dice < 0.1
    assert bce_bad > 10 * bce and dice_bad > 0.9
