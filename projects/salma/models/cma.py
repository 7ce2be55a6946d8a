"""Cross-modal attention (CMA) with Mask-Biased Attention (MBA), injected into SAM-2 features.

Every pixel of the lowest-resolution SAM-2 feature map attends to a few language tokens of one
object (its ``[SEG]`` embedding plus its expression tokens). A language-free SAM-2 "structure
prior" then steers where the attention output lands:

* ``gate``: the attention output is multiplied by ``sigmoid(prior / tau) ** strength``, so
  background pixels (prior << 0) keep their original feature;
* ``bias``: the prior biases the attention logits. A bias that is constant over keys is a
  softmax no-op, so every query also sees a learned *null* key whose value starts at zero: the
  prior adds ``strength * logsigmoid(prior / tau)`` to the logits of the language keys only,
  which moves background pixels' attention mass onto the null key.

The result is added back through a zero-initialised gain ``gamma`` times a warm-up scale, so the
module is exactly the identity at initialisation and during the first warm-up iteration. Only the
gains start at zero: what they multiply is randomly initialised, so every parameter can learn.

Fixes to the original module: attention over several tokens with a key padding mask (one key
makes softmax degenerate), differentiable top-k routing (the router's scores enter the logits
of the kept keys as log-softmax weights; ``[SEG]`` is always a key, the router only chooses among
the expression tokens), and a 'bias' mode that changes the distribution.

Analysis (``tools/visualize_attention.py``, ``tools/test.py --attention-stats``): inside
:func:`capture_attention` every call records a :class:`CMAAttention` (weights, gate, what it adds
per pixel). Only then are the attention weights formed explicitly; the default path stays one
fused ``scaled_dot_product_attention``.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class CMAAttention:
    """One CMA call, as seen by :func:`capture_attention` (B rows, H x W pixels, N language tokens).

    weights: (B, HW, 1+N) attention of each pixel over [null key, ``[SEG]``, expression tokens...],
        mean over heads (rows sum to one; padding tokens get zero).
    padding: (B, N) True where a language token is padding.
    prior_logits: (B, h', w') the structure prior as given (None without one).
    gate: (B, HW) the multiplicative gate applied to the attention output ('gate' mode), else None.
    delta: (B, HW) L2 norm of what CMA adds to each pixel's feature (gain, warm-up, gate, FiLM).
    size: (H, W) of the feature map.
    """

    weights: torch.Tensor
    padding: torch.Tensor
    prior_logits: torch.Tensor | None
    gate: torch.Tensor | None
    delta: torch.Tensor
    size: tuple[int, int]


@contextlib.contextmanager
def capture_attention(module: nn.Module) -> Iterator[list[CMAAttention]]:
    """Record every call of the CMA modules in ``module`` (itself one, or a model holding them) into
    the yielded list, detached, for this block only."""
    cmas = [m for m in module.modules() if isinstance(m, CrossModalAttention2D)]
    records: list[CMAAttention] = []
    for cma in cmas:
        cma._capture = records
    try:
        yield records
    finally:
        for cma in cmas:
            cma._capture = None


class CrossModalAttention2D(nn.Module):
    """Image features attend to language tokens; the output is gated by a structure prior.

    Args:
        dim: channel width of the visual feature and of the language tokens.
        num_heads: attention heads (``dim`` must be divisible by it).
        dropout: dropout on attention weights.
        use_multi_token: attend to all valid language tokens; if False only to the first
            (the ``[SEG]`` embedding).
        topk_tokens: if > 0, a router keeps the k highest-scoring valid expression tokens besides
            ``[SEG]`` (always a key); its softmax weights over the kept expression tokens bias their
            logits, so the router gets gradient. Needs ``use_multi_token``.
        use_film: add a FiLM branch (per-channel scale and shift from the pooled tokens).
        enable_mask_bias: use ``mask_logits`` (the structure prior) when given.
        mask_bias_mode: ``'gate'`` (multiply the output) or ``'bias'`` (bias the logits).
        mask_bias_tau: temperature applied to the prior logits.
        mask_bias_strength: exponent of the gate, or scale of the logit bias.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        dropout: float = 0.0,
        use_multi_token: bool = False,
        topk_tokens: int = 0,
        use_film: bool = False,
        enable_mask_bias: bool = False,
        mask_bias_mode: str = "gate",
        mask_bias_tau: float = 1.0,
        mask_bias_strength: float = 1.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}")
        if mask_bias_mode not in ("gate", "bias"):
            raise ValueError(f"mask_bias_mode must be 'gate' or 'bias', got {mask_bias_mode!r}")
        if mask_bias_tau <= 0:
            raise ValueError(f"mask_bias_tau must be > 0, got {mask_bias_tau}")
        if topk_tokens > 0 and not use_multi_token:
            raise ValueError(f"topk_tokens={topk_tokens} routes expression tokens, but use_multi_token=False keeps "
                             "only [SEG]: the router would never be used (set use_multi_token=True or topk_tokens=0)")
        self.dim = dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.use_multi_token = use_multi_token
        self.topk_tokens = topk_tokens
        self.use_film = use_film
        self.enable_mask_bias = enable_mask_bias
        self.mask_bias_mode = mask_bias_mode
        self.mask_bias_tau = mask_bias_tau
        self.mask_bias_strength = mask_bias_strength

        self.norm_visual = nn.LayerNorm(dim)
        self.norm_text = nn.LayerNorm(dim)
        self.q_proj = nn.Linear(dim, dim)
        # No key bias: it adds q . b to every key's logit alike, a softmax no-op with zero gradient.
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        # A key every pixel can attend to instead of language: where the prior says
        # "background", 'bias' mode pushes attention here. Its value starts at zero.
        self.null_key = nn.Parameter(torch.randn(1, 1, dim) * dim**-0.5)
        self.null_value = nn.Parameter(torch.zeros(1, 1, dim))
        # No bias: a score shared by every token cancels in the softmax over the kept ones.
        self.router = nn.Linear(dim, 1, bias=False) if topk_tokens > 0 else None
        # FiLM keeps nn.Linear's random init: with gamma_film = 0 the branch is still the identity,
        # gamma gets gradient first (its input x * scale + shift is non-zero), then the projection.
        # (A zero projection under a zero gain would give both a zero gradient forever.)
        self.film = nn.Linear(dim, 2 * dim) if use_film else None
        self.gamma_attn = nn.Parameter(torch.zeros(1))
        self.gamma_film = nn.Parameter(torch.zeros(1)) if use_film else None
        # Persistent, so an exported model predicts with the scale it was trained with.
        self.register_buffer("warmup_scale", torch.ones(()))
        self._capture: list[CMAAttention] | None = None  # set by capture_attention()

    def set_warmup_scale(self, scale: float) -> None:
        """Scale of the residual branch (the CMA warm-up hook ramps it from 0 to 1)."""
        self.warmup_scale.fill_(float(scale))

    def forward(
        self,
        visual: torch.Tensor,
        text: torch.Tensor,
        mask_logits: torch.Tensor | None = None,
        text_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            visual: (B, C, H, W) image features.
            text: (B, C) one token, or (B, N, C) tokens; token 0 is the ``[SEG]`` embedding.
            mask_logits: (B, 1, h, w) structure-prior logits (any resolution), or None.
            text_padding_mask: (B, N) True where a token is padding. Token 0 must be valid.
        Returns:
            (B, C, H, W) features.
        """
        batch, channels, height, width = visual.shape
        if text.dim() == 2:
            text = text[:, None]  # (B, 1, C)
        if text_padding_mask is None:
            text_padding_mask = torch.zeros(text.shape[:2], dtype=torch.bool, device=text.device)
        if not self.use_multi_token:
            text, text_padding_mask = text[:, :1], text_padding_mask[:, :1]
        if text_padding_mask[:, 0].any():
            raise ValueError("the first language token ([SEG]) of every row must be valid")

        x = visual.flatten(2).transpose(1, 2)  # (B, HW, C)
        tokens = self.norm_text(text)  # (B, N, C)
        key_bias = self._key_bias(tokens, text_padding_mask)  # (B, N)
        use_prior = self.enable_mask_bias and mask_logits is not None
        prior = self._resize_prior(mask_logits, height, width) if use_prior else None  # (B, HW)

        attn_out, weights = self._attend(self.norm_visual(x), tokens, key_bias, prior)  # (B, HW, C)
        gate = None
        if prior is not None and self.mask_bias_mode == "gate":
            gate = torch.sigmoid(prior / self.mask_bias_tau) ** self.mask_bias_strength  # (B, HW)
            attn_out = attn_out * gate.unsqueeze(-1)
        out = x + (self.gamma_attn * self.warmup_scale) * attn_out

        if self.film is not None:
            valid = (~text_padding_mask).unsqueeze(-1).to(tokens.dtype)  # (B, N, 1)
            pooled = (tokens * valid).sum(1) / valid.sum(1)  # (B, C)
            scale, shift = self.film(pooled).unsqueeze(1).chunk(2, dim=-1)  # (B, 1, C) each
            out = out + (self.gamma_film * self.warmup_scale) * (x * scale + shift)

        if self._capture is not None:
            self._capture.append(CMAAttention(
                weights=weights.detach(), padding=text_padding_mask.detach(),
                prior_logits=mask_logits[:, 0].detach() if use_prior else None,
                gate=None if gate is None else gate.detach(), delta=(out - x).detach().norm(dim=-1),
                size=(height, width)))
        return out.transpose(1, 2).reshape(batch, channels, height, width)

    def _key_bias(self, tokens: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        """Additive logits per language key (B, N): -inf on padding; with routing, ``[SEG]`` (token 0)
        keeps 0 and the k kept expression tokens get the router's log-softmax weights."""
        neg_inf = torch.finfo(tokens.dtype).min
        bias = torch.zeros(padding_mask.shape, dtype=tokens.dtype, device=tokens.device)
        bias = bias.masked_fill(padding_mask, neg_inf)
        if self.router is None:
            return bias
        # The router runs even without expression tokens (N = 1): its weight stays in the graph, so
        # every rank of a distributed step has its gradient.
        expr, expr_padding = tokens[:, 1:], padding_mask[:, 1:]  # (B, N-1): the router's candidates
        scores = self.router(expr).squeeze(-1).masked_fill(expr_padding, neg_inf)  # (B, N-1)
        kept = scores.topk(min(self.topk_tokens, expr.shape[1]), dim=1).indices  # (B, k)
        keep_mask = torch.zeros_like(expr_padding).scatter(1, kept, True) & ~expr_padding
        # log-softmax over the kept tokens only: their weights sum to one and carry gradient.
        routed = scores.masked_fill(~keep_mask, neg_inf).log_softmax(dim=1)
        routed = torch.where(keep_mask, routed, torch.full_like(routed, neg_inf))
        return torch.cat([bias[:, :1], routed], dim=1)

    @staticmethod
    def _resize_prior(mask_logits: torch.Tensor, height: int, width: int) -> torch.Tensor:
        if mask_logits.shape[-2:] != (height, width):  # resized in fp32, returned in the prior's dtype
            resized = F.interpolate(mask_logits.float(), size=(height, width), mode="bilinear", align_corners=False)
            mask_logits = resized.to(mask_logits.dtype)
        return mask_logits.flatten(1)  # (B, HW)

    def _attend(
        self, x: torch.Tensor, tokens: torch.Tensor, key_bias: torch.Tensor, prior: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Multi-head attention of pixels (B, HW, C) over [null key, tokens] (B, 1+N, C).

        Returns the output (B, HW, C) and, only while capturing, the weights (B, HW, 1+N) averaged
        over heads (else None: the fused kernel never forms them)."""
        batch, num_queries, _ = x.shape
        keys = torch.cat([self.null_key.expand(batch, -1, -1).to(tokens.dtype), tokens], dim=1)
        values_null = self.null_value.expand(batch, -1, -1).to(tokens.dtype)

        bias = F.pad(key_bias, (1, 0), value=0.0)[:, None, :]  # (B, 1, 1+N): null key unbiased
        bias = bias.expand(batch, num_queries, -1)
        if prior is not None and self.mask_bias_mode == "bias":
            # Per query, only the language keys are penalised where the prior says background.
            prior_bias = self.mask_bias_strength * F.logsigmoid(prior / self.mask_bias_tau)  # (B, HW)
            bias = bias + F.pad(prior_bias.unsqueeze(-1).expand(-1, -1, tokens.shape[1]), (1, 0), value=0.0)

        q = self._heads(self.q_proj(x))  # (B, h, HW, d)
        k = self._heads(self.k_proj(keys))  # (B, h, 1+N, d)
        v = torch.cat([values_null, self.v_proj(tokens)], dim=1)
        v = self._heads(v)  # (B, h, 1+N, d)
        mask = bias.unsqueeze(1).to(q.dtype)  # (B, 1, HW, 1+N)
        dropout = self.dropout if self.training else 0.0
        weights = None
        if self._capture is None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)  # (B, h, HW, d)
        else:  # the same computation with the weights formed explicitly
            probs = (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5 + mask).softmax(dim=-1)  # (B, h, HW, 1+N)
            weights = probs.mean(dim=1)
            out = F.dropout(probs, dropout, training=dropout > 0) @ v
        out = out.transpose(1, 2).reshape(batch, num_queries, self.dim)
        return self.out_proj(out), weights

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.dim // self.num_heads).transpose(1, 2)
