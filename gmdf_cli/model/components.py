"""GM-DF's parts, one small module each. Equation numbers are the ACM MM 2025 paper's unless marked "journal".

Shapes: B batch, L tokens (1 + P patches), P patches, D tower width, N source domains, C domain-embedding width,
E joint embedding width, W text width, K visual-token vocabulary.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..device import full_precision


def _domain_rows(c: torch.Tensor, ndim: int) -> torch.Tensor:
    """Broadcast a domain-derived vector ((X,) shared by the batch, or (B, X) per sample) over token dims."""
    if c.dim() == 1:
        return c
    return c.view(c.shape[0], *([1] * (ndim - 2)), c.shape[-1])


class DomainNorm(nn.Module):
    """Domain-conditioned LayerNorm, eq. 2:
    ``DNorm(x, c_d) = (x - mu) / sigma * (gamma0 + W_gamma c_d) + (beta0 + W_beta c_d)``.

    ``gamma0``/``beta0`` are CLIP's own LayerNorm parameters (shared, not copied); ``W_gamma``/``W_beta`` start at
    zero, so at initialisation DNorm is exactly CLIP's LayerNorm.

    x: (B, L, D); c: (C,) for one domain shared by the batch (folded into one fused layer_norm) or (B, C).
    Returns (B, L, D).
    """

    def __init__(self, norm: nn.LayerNorm, domain_dim: int) -> None:
        super().__init__()
        dim = norm.normalized_shape[0]
        self.weight = norm.weight
        self.bias = norm.bias
        self.eps = norm.eps
        self.to_gamma = nn.Linear(domain_dim, dim, bias=False)
        self.to_beta = nn.Linear(domain_dim, dim, bias=False)
        nn.init.zeros_(self.to_gamma.weight)
        nn.init.zeros_(self.to_beta.weight)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        gamma = self.weight + self.to_gamma(c)
        beta = self.bias + self.to_beta(c)
        if c.dim() == 1:
            return F.layer_norm(x, self.weight.shape, gamma, beta, self.eps)
        normed = F.layer_norm(x, self.weight.shape, None, None, self.eps)
        return normed * _domain_rows(gamma, x.dim()) + _domain_rows(beta, x.dim())


class DomainBatchNorm(nn.Module):
    """Eq. 2 for a convolutional tower: BatchNorm's statistics with a domain-conditioned affine,
    ``BN(x) * (gamma0 + W_gamma c_d) + (beta0 + W_beta c_d)``. ``gamma0``/``beta0`` and the running statistics are
    CLIP's own BatchNorm's; ``W_gamma``/``W_beta`` start at zero, so at initialisation this is that BatchNorm.

    x: (B, C, H, W); c: (K,) or (B, K). Returns (B, C, H, W).
    """

    def __init__(self, bn: nn.BatchNorm2d, domain_dim: int) -> None:
        super().__init__()
        self.bn = bn
        self.to_gamma = nn.Linear(domain_dim, bn.num_features, bias=False)
        self.to_beta = nn.Linear(domain_dim, bn.num_features, bias=False)
        nn.init.zeros_(self.to_gamma.weight)
        nn.init.zeros_(self.to_beta.weight)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        bn = self.bn
        use_batch = bn.training or bn.running_mean is None
        normed = F.batch_norm(x, bn.running_mean, bn.running_var, None, None, use_batch, bn.momentum or 0.0, bn.eps)
        gamma = bn.weight + self.to_gamma(c)
        beta = bn.bias + self.to_beta(c)
        shape = (1, -1, 1, 1) if c.dim() == 1 else (c.shape[0], -1, 1, 1)
        return normed * gamma.view(shape) + beta.view(shape)


class StageAggregation(nn.Module):
    """The convolutional tower's counterpart of eq. 7-8: globally pooled features of middle stages, carried to the
    pooled embedding through small adapters weighted by ``alpha_l`` (starting at 0).

    pooled: (B, E); stages: list of (B, C_l). Returns (B, E).
    """

    def __init__(self, channels: list[int], out_dim: int, adapter_dim: int) -> None:
        super().__init__()
        self.adapters = nn.ModuleList(
            nn.Sequential(nn.Linear(c, adapter_dim), nn.GELU(), nn.Linear(adapter_dim, out_dim)) for c in channels
        )
        self.alpha = nn.Parameter(torch.zeros(len(channels)))

    def forward(self, pooled: torch.Tensor, stages: list[torch.Tensor]) -> torch.Tensor:
        for alpha, adapter, s in zip(self.alpha, self.adapters, stages, strict=True):
            pooled = pooled + alpha * adapter(s)
        return pooled


class DomainExperts(nn.Module):
    """Per-domain bottleneck experts (eq. 1) aggregated by scaled dot-product attention over experts (eq. 4-5).

    Expert i: ``E_i(h) = U_i GELU(W_i h)`` with bottleneck r (not a full-size MLP copy). Each token asks which expert
    to use: query ``q = W_q h + Q c_d`` (the domain embedding steers the routing, the wildcard embedding for unseen
    domains), keys ``k_i = W_k GELU(W_i h)``, weights ``a = softmax_i(q . k_i / sqrt(d_a))``, output
    ``s * sum_i a_i E_i(h)``. The residual scale ``s`` starts at 0 (journal eq. 2), so a fresh block equals CLIP's.
    The N down-projections and the query share one GEMM, the N up-projections another (one shared bias).

    h: (B, L, D); c: (C,) or (B, C). Returns (B, L, D).
    """

    def __init__(self, dim: int, num_experts: int, bottleneck: int, attn_dim: int, domain_dim: int) -> None:
        super().__init__()
        self.num_experts = num_experts
        self.bottleneck = bottleneck
        self.attn_dim = attn_dim
        self.down = nn.Linear(dim, num_experts * bottleneck + attn_dim)
        self.key = nn.Linear(bottleneck, attn_dim, bias=False)
        self.query_domain = nn.Linear(domain_dim, attn_dim, bias=False)
        self.up = nn.Linear(num_experts * bottleneck, dim)
        self.scale = nn.Parameter(torch.zeros(dim))
        self.last_routing: torch.Tensor | None = None

    def forward(self, h: torch.Tensor, c: torch.Tensor, keep_routing: bool = False) -> torch.Tensor:
        n, r = self.num_experts, self.bottleneck
        z = self.down(h)
        hidden = F.gelu(z[..., : n * r]).unflatten(-1, (n, r))  # (B, L, N, r)
        query = z[..., n * r :] + _domain_rows(self.query_domain(c), h.dim())  # (B, L, d_a)
        keys = self.key(hidden)  # (B, L, N, d_a)
        routing = torch.softmax((keys @ query.unsqueeze(-1)).squeeze(-1) / math.sqrt(self.attn_dim), dim=-1)
        if keep_routing:
            self.last_routing = routing.detach()
        mixed = (hidden * routing.unsqueeze(-1)).flatten(-2)  # (B, L, N*r)
        return self.up(mixed) * self.scale


class SecondOrderAggregation(nn.Module):
    """Second-order feature aggregation from middle layers into the class token, eq. 7-8.

    For each aggregated block l (the paper's layers 8-10), the MLP outputs ``m_j`` of the block before it (earlier-layer
    tokens) are carried to the class token through block l's attention: class-token attention weights ``A_{h,cls,j}``
    times the value-output projection,
    ``s_l = W_O concat_h(W_V^h sum_j A^l_{h,cls,j} m_j + b_V^h) + b_O``  (eq. 7; linear in m, so the token sum comes
    first and the cost is O(D^2) per image, not per token). Then ``f_cls <- f_cls + sum_l alpha_l Adapter_l(s_l)``
    (eq. 8) with ``alpha_l`` starting at 0.

    second_order: x_normed (B, L, D) = LN1 input of block l, m (B, L, D) -> (B, D).
    forward: f_cls (B, D), terms list of (B, D) -> (B, D).
    """

    def __init__(self, num_layers: int, dim: int, adapter_dim: int) -> None:
        super().__init__()
        self.adapters = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, adapter_dim), nn.GELU(), nn.Linear(adapter_dim, dim))
            for _ in range(num_layers)
        )
        self.alpha = nn.Parameter(torch.zeros(num_layers))

    @staticmethod
    def second_order(attn: nn.MultiheadAttention, x_normed: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        bsz, _, dim = x_normed.shape
        heads = attn.num_heads
        head_dim = dim // heads
        assert attn.in_proj_weight is not None and attn.in_proj_bias is not None
        w_q, w_k, w_v = attn.in_proj_weight.split(dim)
        b_q, _, b_v = attn.in_proj_bias.split(dim)
        q_cls = F.linear(x_normed[:, 0], w_q, b_q).view(bsz, heads, head_dim)
        # q . (W_k x_j + b_k): the b_k term is the same for every j and cancels in the softmax.
        u = torch.einsum("bhe,hed->bhd", q_cls, w_k.view(heads, head_dim, dim))
        attn_cls = torch.softmax(torch.einsum("bhd,bld->bhl", u, x_normed) / math.sqrt(head_dim), dim=-1)
        pooled = torch.einsum("bhl,bld->bhd", attn_cls, m)  # (B, H, D)
        values = torch.einsum("bhd,hed->bhe", pooled, w_v.view(heads, head_dim, dim)) + b_v.view(heads, head_dim)
        return attn.out_proj(values.reshape(bsz, dim))

    def forward(self, f_cls: torch.Tensor, terms: list[torch.Tensor]) -> torch.Tensor:
        for alpha, adapter, s in zip(self.alpha, self.adapters, terms, strict=True):
            f_cls = f_cls + alpha * adapter(s)
        return f_cls


class TextEncoder(nn.Module):
    """CLIP's text tower run on token embeddings instead of token ids (so prompt vectors can be learnt).

    embeds: (P, T, W) token embeddings; eot: (P,) position of each prompt's end token. Returns (P, E).
    """

    attn_mask: torch.Tensor | None

    def __init__(self, clip: Any) -> None:
        super().__init__()
        self.token_embedding: nn.Embedding = clip.token_embedding
        self.positional_embedding = clip.positional_embedding
        self.transformer = clip.transformer
        self.ln_final = clip.ln_final
        self.text_projection = clip.text_projection
        self.register_buffer("attn_mask", clip.attn_mask, persistent=False)

    def forward(self, embeds: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
        x = embeds + self.positional_embedding[: embeds.shape[1]]
        mask = self.attn_mask[: embeds.shape[1], : embeds.shape[1]] if self.attn_mask is not None else None
        x = self.ln_final(self.transformer(x, attn_mask=mask))
        pooled = x[torch.arange(x.shape[0], device=x.device), eot]
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(pooled)
        return pooled @ self.text_projection


class DomainClassPrompts(nn.Module):
    """Domain-class prompts, eq. 9, and adaptive temperatures, eq. 10.

    Prompt (d, c) = "a [e_dom^d] [e_cls^c] face showing forgery clues." with learnable ``e_dom^d`` (``prompt_ctx``
    token vectors per domain; d = 0 is the wildcard used for any unknown or unseen domain, d = 1..N the source domains)
    and learnable ``e_cls^c`` for c in {real, fake} (initialised from the words' own token embeddings).
    ``tau_d = tau_base + phi * ||e_dom^d||`` (eq. 10) with ``phi`` learnable, starting at 0.

    embeddings(): ((N+1)*2, T, W) prompt token embeddings, row d*2 + c. temperatures(): (N+1,).
    """

    template_ids: torch.Tensor
    tau_base: torch.Tensor

    def __init__(
        self,
        template_ids: torch.Tensor,
        dom_slots: list[int],
        cls_slot: int,
        class_init: torch.Tensor,
        num_domains: int,
        tau_base: float,
    ) -> None:
        super().__init__()
        width = class_init.shape[-1]
        self.register_buffer("template_ids", template_ids.clone())  # (1, T)
        self.dom_slots = dom_slots
        self.cls_slot = cls_slot
        self.dom_ctx = nn.Parameter(torch.randn(num_domains + 1, len(dom_slots), width) * 0.02)
        self.cls_ctx = nn.Parameter(class_init.clone().view(2, width))
        self.phi = nn.Parameter(torch.zeros(()))
        self.register_buffer("tau_base", torch.tensor(float(tau_base)))

    @property
    def eot(self) -> int:
        return int(self.template_ids[0].argmax())

    def embeddings(self, token_embedding: nn.Embedding) -> torch.Tensor:
        n_dom = self.dom_ctx.shape[0]
        base = token_embedding(self.template_ids).expand(n_dom * 2, -1, -1).clone()
        dom = self.dom_ctx.repeat_interleave(2, dim=0)  # (2(N+1), n_ctx, W): rows d*2+c
        cls = self.cls_ctx.repeat(n_dom, 1)  # (2(N+1), W)
        base[:, self.dom_slots] = dom
        base[:, self.cls_slot] = cls
        return base

    def temperatures(self) -> torch.Tensor:
        norms = self.dom_ctx.flatten(1).norm(dim=-1)
        return (self.tau_base + self.phi * norms).clamp_min(1e-3)


class PatchTokenizer(nn.Module):
    """Discrete visual tokens for masked image modelling (eq. 6), built offline with no download.

    The paper uses a Gumbel-softmax dVAE; a pretrained one cannot be had here, so GM-DF-CLI uses a random-projection
    quantiser (as in BEST-RQ): each patch is standardised, projected by a fixed seeded random matrix, L2-normalised
    and assigned to the nearest of K unit codewords. ``fit`` refines the codebook by spherical k-means on training
    patches. Both buffers live in the checkpoint, so tokens are reproducible.

    images (B, 3, H, W) -> ids (B, P) in [0, K).
    """

    projection: torch.Tensor
    codebook: torch.Tensor

    def __init__(self, patch_size: int, vocab: int, dim: int, seed: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        with torch.device("cpu"):  # seeded buffers, reproducible whatever the default device
            gen = torch.Generator().manual_seed(seed)
            projection = torch.randn(3 * patch_size**2, dim, generator=gen) / math.sqrt(dim)
            codebook = F.normalize(torch.randn(vocab, dim, generator=gen), dim=-1)
        self.register_buffer("projection", projection)
        self.register_buffer("codebook", codebook)

    def _codes(self, images: torch.Tensor) -> torch.Tensor:
        """Always fp32 (autocast off): the nearest codeword must not flip with the precision of the run."""
        p = self.patch_size
        with full_precision(images):
            patches = F.unfold(images.float(), kernel_size=p, stride=p).transpose(1, 2)  # (B, P, 3p^2)
            patches = (patches - patches.mean(-1, keepdim=True)) / (patches.std(-1, keepdim=True) + 1e-4)
            return F.normalize(patches @ self.projection.float(), dim=-1)  # (B, P, dim)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        codes = self._codes(images)
        with full_precision(codes):
            return (codes @ self.codebook.float().T).argmax(-1)

    @torch.no_grad()
    def fit(self, images: torch.Tensor, iters: int = 10) -> None:
        """Spherical k-means of the codebook on the patches of ``images`` (B, 3, H, W)."""
        codes = self._codes(images).flatten(0, 1)
        book = self.codebook.clone()
        for _ in range(iters):
            assign = (codes @ book.T).argmax(-1)
            sums = torch.zeros_like(book).index_add_(0, assign, codes)
            used = torch.bincount(assign, minlength=book.shape[0]) > 0
            book[used] = F.normalize(sums[used], dim=-1)
        self.codebook.copy_(book)


def random_patch_mask(
    batch: int, patches: int, ratio: float, generator: torch.Generator | None = None, device: torch.device | None = None
) -> torch.Tensor:
    """Mask exactly ``round(ratio * patches)`` random patches per image (eq. 6; 20% is the paper's best ratio).

    Returns a bool tensor (B, P), True where the patch is hidden from the encoder.
    """
    count = max(1, round(ratio * patches)) if ratio > 0 else 0
    order = torch.rand(batch, patches, generator=generator).argsort(dim=1)
    mask = torch.zeros(batch, patches, dtype=torch.bool)
    mask.scatter_(1, order[:, :count], True)
    return mask.to(device) if device is not None else mask
