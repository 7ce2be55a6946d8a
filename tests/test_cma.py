"""CrossModalAttention2D: identity at init, gate semantics, a 'bias' mode that matters, routing."""
import pytest
import torch

from projects.salma.models.cma import CrossModalAttention2D

B, C, H, W, N = 2, 32, 6, 5, 4


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, C, H, W, generator=g), torch.randn(B, N, C, generator=g)


def make(**kw):
    torch.manual_seed(0)
    return CrossModalAttention2D(C, num_heads=4, **kw)


@pytest.mark.parametrize("kw", [{}, {"use_multi_token": True, "topk_tokens": 2}, {"use_film": True},
                                {"enable_mask_bias": True, "mask_bias_mode": "bias"}])
def test_zero_gamma_is_identity(kw):
    cma = make(**kw)
    visual, text = inputs()
    prior = torch.randn(B, 1, 3, 3)
    assert torch.equal(cma(visual, text, prior), visual)


def test_single_token_input_and_warmup_scale_zero_is_identity():
    cma = make()
    with torch.no_grad():
        cma.gamma_attn.fill_(1.0)
    visual, text = inputs()
    assert not torch.allclose(cma(visual, text[:, 0]), visual)  # (B, C) text accepted
    cma.set_warmup_scale(0.0)
    assert torch.equal(cma(visual, text[:, 0]), visual)


def test_gate_zero_region_keeps_input_and_gate_one_applies_attention():
    cma = make(use_multi_token=True, enable_mask_bias=True, mask_bias_mode="gate")
    with torch.no_grad():
        cma.gamma_attn.fill_(1.0)
    visual, text = inputs()
    prior = torch.full((B, 1, H, W), 30.0)  # gate ~ 1
    prior[:, :, :3] = -30.0  # gate ~ 0 in the top half
    out = cma(visual, text, prior)
    assert torch.allclose(out[:, :, :3], visual[:, :, :3], atol=1e-6)
    assert (out[:, :, 3:] - visual[:, :, 3:]).abs().mean() > 1e-2
    # Where the gate is ~1 the result equals the ungated attention.
    ungated = make(use_multi_token=True)
    ungated.load_state_dict(cma.state_dict())
    assert torch.allclose(out[:, :, 3:], ungated(visual, text)[:, :, 3:], atol=1e-5)


def test_gate_strength_and_tau():
    cma = make(enable_mask_bias=True, mask_bias_tau=2.0, mask_bias_strength=2.0)
    with torch.no_grad():
        cma.gamma_attn.fill_(1.0)
    visual, text = inputs()
    plain = make()
    plain.load_state_dict(cma.state_dict())
    delta = plain(visual, text) - visual
    prior = torch.full((B, 1, H, W), 2.0)
    expected = visual + delta * torch.sigmoid(torch.tensor(1.0)) ** 2  # sigmoid(2 / tau) ** strength
    assert torch.allclose(cma(visual, text, prior), expected, atol=1e-5)


def test_bias_mode_changes_attention_distribution():
    cma = make(use_multi_token=True, enable_mask_bias=True, mask_bias_mode="bias")
    with torch.no_grad():
        cma.gamma_attn.fill_(1.0)
        cma.null_value.normal_()
    visual, text = inputs()
    fore = cma(visual, text, torch.full((B, 1, H, W), 10.0))
    back = cma(visual, text, torch.full((B, 1, H, W), -10.0))
    assert (fore - back).abs().mean() > 1e-2
    # A background prior sends (almost) all attention to the null key: output = x + out_proj(null_value).
    null_out = cma.out_proj(cma.null_value)[0, 0]
    assert torch.allclose(back, visual + null_out.view(1, C, 1, 1), atol=1e-3)
    # Without mask bias the prior is ignored.
    off = make(use_multi_token=True)
    off.load_state_dict(cma.state_dict())
    assert torch.equal(off(visual, text, torch.full((B, 1, H, W), -10.0)), off(visual, text))


def test_padding_and_single_token_mode_ignore_other_tokens():
    visual, text = inputs()
    changed = text.clone()
    changed[:, 2:] = torch.randn(B, N - 2, C)
    multi = make(use_multi_token=True)
    with torch.no_grad():
        multi.gamma_attn.fill_(1.0)
    padding = torch.zeros(B, N, dtype=torch.bool)
    padding[:, 2:] = True
    assert torch.allclose(multi(visual, text, None, padding), multi(visual, changed, None, padding), atol=1e-6)
    assert not torch.allclose(multi(visual, text), multi(visual, changed), atol=1e-4)
    single = make(use_multi_token=False)
    with torch.no_grad():
        single.gamma_attn.fill_(1.0)
    changed[:, 1] = torch.randn(B, C)
    assert torch.equal(single(visual, text), single(visual, changed))
    with pytest.raises(ValueError, match="first language token"):
        multi(visual, text, None, torch.ones(B, N, dtype=torch.bool))


def test_topk_router_gets_gradient():
    cma = make(use_multi_token=True, topk_tokens=2)
    with torch.no_grad():
        cma.gamma_attn.fill_(1.0)
    visual, text = inputs()
    cma(visual, text).pow(2).sum().backward()
    assert cma.router.weight.grad is not None and cma.router.weight.grad.abs().sum() > 0


def test_film_branch_is_identity_at_init_and_modulates_when_trained():
    cma = make(use_film=True, use_multi_token=True)
    visual, text = inputs()
    assert torch.equal(cma(visual, text), visual)
    with torch.no_grad():
        cma.gamma_film.fill_(1.0)
        cma.film.bias.normal_()
    assert not torch.allclose(cma(visual, text), visual)


def test_all_parameters_get_gradient():
    cma = make(use_multi_token=True, topk_tokens=2, use_film=True, enable_mask_bias=True, mask_bias_mode="bias")
    with torch.no_grad():
        cma.gamma_attn.fill_(0.5)
        cma.gamma_film.fill_(0.5)
        cma.film.weight.normal_(std=0.1)
    visual, text = inputs()
    cma(visual, text, torch.randn(B, 1, 3, 3)).pow(2).sum().backward()
    missing = [n for n, p in cma.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []


def test_bad_arguments():
    with pytest.raises(ValueError, match="divisible"):
        CrossModalAttention2D(30, num_heads=4)
    with pytest.raises(ValueError, match="mask_bias_mode"):
        CrossModalAttention2D(32, num_heads=4, mask_bias_mode="add")


@pytest.mark.parametrize("mode", ["gate", "bias"])
def test_bfloat16_module_keeps_bfloat16_with_a_resized_prior(mode):
    """A bf16 model (inference without autocast) must not get fp32 features back from the prior resize."""
    cma = make(use_multi_token=True, enable_mask_bias=True, mask_bias_mode=mode).to(torch.bfloat16)
    with torch.no_grad():
        cma.gamma_attn.fill_(1.0)
    visual, text = (t.to(torch.bfloat16) for t in inputs())
    out = cma(visual, text, torch.randn(B, 1, 3, 3).to(torch.bfloat16))
    assert out.dtype == torch.bfloat16 and out.shape == visual.shape


def test_topk_routing_always_keeps_seg_as_a_key():
    """[SEG] + 16 expression tokens, k = 2: the router picks among the expression tokens only, so
    the [SEG] embedding reaches every pixel of every row."""
    rows, n_expr = 8, 16
    cma = make(use_multi_token=True, topk_tokens=2)
    with torch.no_grad():
        cma.gamma_attn.fill_(1.0)
    g = torch.Generator().manual_seed(1)
    visual = torch.randn(rows, C, H, W, generator=g)
    text = torch.randn(rows, 1 + n_expr, C, generator=g)
    changed = text.clone()
    changed[:, 0] = torch.randn(rows, C, generator=g)
    delta = (cma(visual, text) - cma(visual, changed)).abs().amax(dim=1)  # (rows, H, W)
    assert (delta > 1e-4).all(), f"[SEG] ignored at {(delta <= 1e-4).sum().item()} of {delta.numel()} pixels"
    # The router's choice is among the expression tokens: [SEG] unbiased, k expression keys, their
    # log-weights a softmax over the kept ones.
    bias = cma._key_bias(cma.norm_text(text), torch.zeros(rows, 1 + n_expr, dtype=torch.bool))
    kept = bias > torch.finfo(bias.dtype).min / 2
    assert kept[:, 0].all() and (bias[:, 0] == 0).all()
    assert kept[:, 1:].sum(1).tolist() == [2] * rows
    assert torch.allclose(bias[:, 1:][kept[:, 1:]].view(rows, 2).exp().sum(1), torch.ones(rows))


def test_topk_routing_respects_padding_and_rows_without_expression_tokens():
    cma = make(use_multi_token=True, topk_tokens=2)
    tokens = cma.norm_text(inputs()[1])  # (B, N, C), N = 4
    padding = torch.tensor([[False, False, True, True], [False, True, True, True]])
    bias = cma._key_bias(tokens, padding)
    kept = bias > torch.finfo(bias.dtype).min / 2
    assert kept.tolist() == [[True, True, False, False], [True, False, False, False]]
    assert bias[0, 1].item() == pytest.approx(0.0) and bias[1, 0].item() == 0.0  # one routed token: weight 1


def test_topk_routing_needs_multi_token():
    with pytest.raises(ValueError, match="topk_tokens.*use_multi_token"):
        CrossModalAttention2D(C, num_heads=4, topk_tokens=2, use_multi_token=False)


def test_film_learns_from_its_real_initialisation():
    """Identity at init, yet every FiLM parameter moves after a few steps on a toy objective
    (an all-zero projection with a zero gain has zero gradient everywhere and never moves)."""
    cma = make(use_film=True, use_multi_token=True)
    visual, text = inputs()
    assert torch.equal(cma(visual, text), visual)
    film = {"film.weight": cma.film.weight, "film.bias": cma.film.bias, "gamma_film": cma.gamma_film}
    before = {n: p.detach().clone() for n, p in film.items()}
    target = visual * 1.5 + 0.3  # reachable by a per-channel scale and shift
    opt = torch.optim.Adam(film.values(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        (cma(visual, text) - target).pow(2).mean().backward()
        opt.step()
    still = [n for n, p in film.items() if torch.equal(p, before[n])]
    assert still == []
    assert (cma.film.weight - before["film.weight"]).abs().min() > 0  # every entry, not a few


# ---- attention capture (issue 15: attention maps) ---------------------------------------------------------
def _trained_like(**kw):
    cma = make(use_multi_token=True, **kw)
    with torch.no_grad():
        cma.gamma_attn.fill_(0.7)
        cma.null_value.normal_()
    return cma.eval()


@pytest.mark.parametrize("kw", [dict(enable_mask_bias=True, mask_bias_mode="gate"),
                                dict(enable_mask_bias=True, mask_bias_mode="bias", topk_tokens=2), {}])
def test_captured_attention_matches_torch_multi_head_attention(kw):
    """Captured weights: the mean over heads of torch's own multi-head attention weights over
    [null key, tokens] with the module's projections and logit bias; outputs unchanged by capturing."""
    from projects.salma.models.cma import capture_attention

    cma = _trained_like(**kw)
    visual, text = inputs(1)
    padding = torch.tensor([[False, False, False, True], [False, False, False, False]])
    prior = torch.randn(B, 1, 2 * H, 2 * W) * 3
    plain = cma(visual, text, prior, padding)
    with capture_attention(cma) as records:
        captured = cma(visual, text, prior, padding)
    assert torch.allclose(captured, plain, atol=1e-6)
    (rec,) = records
    assert rec.weights.shape == (B, H * W, 1 + N) and rec.size == (H, W)
    assert torch.allclose(rec.weights.sum(-1), torch.ones(B, H * W), atol=1e-6)
    assert torch.all(rec.weights[0, :, 1 + 3] == 0)  # padding gets no attention

    # independent reference: torch's multi-head attention with the same projections and mask
    x = cma.norm_visual(visual.flatten(2).transpose(1, 2))
    tokens = cma.norm_text(text)
    keys = torch.cat([cma.null_key.expand(B, -1, -1), tokens], dim=1)
    mask = torch.nn.functional.pad(cma._key_bias(tokens, padding), (1, 0))[:, None, :].expand(B, H * W, -1)
    if kw.get("mask_bias_mode") == "bias":
        resized = cma._resize_prior(prior, H, W)
        prior_bias = torch.nn.functional.logsigmoid(resized).unsqueeze(-1).expand(-1, -1, N)
        mask = mask + torch.nn.functional.pad(prior_bias, (1, 0))
    _, reference = torch.nn.functional.multi_head_attention_forward(
        x.transpose(0, 1), keys.transpose(0, 1), keys.transpose(0, 1), C, cma.num_heads, in_proj_weight=None,
        in_proj_bias=torch.cat([cma.q_proj.bias, torch.zeros(C), torch.zeros(C)]), bias_k=None, bias_v=None,
        add_zero_attn=False, dropout_p=0.0, out_proj_weight=cma.out_proj.weight, out_proj_bias=cma.out_proj.bias,
        training=False, need_weights=True, attn_mask=mask.repeat_interleave(cma.num_heads, 0),
        use_separate_proj_weight=True, q_proj_weight=cma.q_proj.weight, k_proj_weight=cma.k_proj.weight,
        v_proj_weight=cma.v_proj.weight, average_attn_weights=True)
    assert torch.allclose(rec.weights, reference, atol=1e-5)

    # what CMA adds to each pixel, and the gate / prior it used
    assert torch.allclose(rec.delta, (captured - visual).flatten(2).transpose(1, 2).norm(dim=-1), atol=1e-5)
    if kw.get("mask_bias_mode") == "gate":
        resized = torch.nn.functional.interpolate(prior, size=(H, W), mode="bilinear", align_corners=False)
        assert torch.allclose(rec.gate, torch.sigmoid(resized).flatten(1), atol=1e-6)
        assert torch.equal(rec.prior_logits, prior[:, 0])
    else:
        assert rec.gate is None
    assert torch.equal(rec.padding, padding)


def test_capture_is_scoped_and_off_by_default():
    from projects.salma.models.cma import capture_attention

    cma = _trained_like()
    visual, text = inputs()
    with capture_attention(cma) as records:
        cma(visual, text)
        cma(visual, text[:, :2])
    assert len(records) == 2 and records[1].weights.shape[-1] == 3
    cma(visual, text)  # after the block nothing is recorded
    assert len(records) == 2 and cma._capture is None
