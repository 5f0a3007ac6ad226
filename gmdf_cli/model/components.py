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


Domain = int | torch.Tensor
"""A domain index for the whole batch (int) or per sample (LongTensor (B,)); 0 is the wildcard."""


def domain_embeddings(num_domains: int, dim: int) -> nn.Embedding:
    """The domain embeddings c_d of eq. 2, (N+1, C), index 0 the wildcard, drawn from N(0, 0.02). Drawn with
    ``randn`` and scaled in place: on the meta device (a model built to load weights into) ``normal_`` and an
    out-of-place product import torch._dynamo, seconds of start-up."""
    return nn.Embedding.from_pretrained(torch.randn(num_domains + 1, dim).mul_(0.02), freeze=False)


def domain_vector(embedding: nn.Embedding, domain: Domain) -> torch.Tensor:
    """The domain embedding c_d of eq. 2: (C,) for one domain index shared by the batch, (B, C) for (B,) indices."""
    if isinstance(domain, int):
        return embedding.weight[domain]
    return embedding(domain)


def paint_masked_patches(
    images: torch.Tensor, patch_mask: torch.Tensor, patch: int, colour: torch.Tensor
) -> torch.Tensor:
    """A convolutional tower's MIM input (eq. 6): the masked ``patch`` x ``patch`` squares of images (B, 3, S, S)
    painted with a learnt colour (3,), so the encoder never sees them. patch_mask: (B, (S/patch)^2) bool."""
    grid = images.shape[-1] // patch
    pixels = patch_mask.view(-1, 1, grid, grid).to(images.dtype)
    pixels = F.interpolate(pixels, scale_factor=patch, mode="nearest").bool()
    return torch.where(pixels, colour.view(1, 3, 1, 1).to(images.dtype), images)


class DomainNorm(nn.Module):
    """Domain-conditioned LayerNorm, eq. 2:
    ``DNorm(x, c_d) = (x - mu) / sigma * (gamma0 + W_gamma c_d) + (beta0 + W_beta c_d)``.

    ``gamma0``/``beta0`` are CLIP's own LayerNorm parameters (shared, not copied); ``W_gamma``/``W_beta`` start at
    zero, so at initialisation DNorm is exactly CLIP's LayerNorm. ``standardize`` and ``affine`` are its two halves,
    so one block can normalise once and apply several domains' affines (each expert sees its own domain's DNorm).

    x: (B, L, D); c: (C,) for one domain shared by the batch, (B, C) per sample, or (N, C) for ``affine`` of N
    domains. Returns (B, L, D).
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

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mu) / sigma`` over the last dim, (B, L, D)."""
        return F.layer_norm(x, self.weight.shape, None, None, self.eps)

    def affine(self, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(gamma0 + W_gamma c, beta0 + W_beta c)``, each (..., D) for c (..., C)."""
        return self.weight + self.to_gamma(c), self.bias + self.to_beta(c)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return modulate(self.standardize(x), *self.affine(c))


def modulate(normed: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """``normed * gamma + beta`` with gamma/beta (X,) shared or (B, X) per sample, broadcast over token dims (one
    fused pass over the tokens)."""
    return torch.addcmul(_domain_rows(beta, normed.dim()), normed, _domain_rows(gamma, normed.dim()))


class DomainBatchNorm(nn.Module):
    """Eq. 2 for a convolutional tower: BatchNorm's statistics with a domain-conditioned affine,
    ``BN(x) * (gamma0 + W_gamma c_d) + (beta0 + W_beta c_d)``. ``gamma0``/``beta0`` and the running statistics are
    CLIP's own BatchNorm's; ``W_gamma``/``W_beta`` start at zero, so at initialisation this is that BatchNorm.

    x: (B, C, H, W); c: (K,) or (B, K) (or (N, K) for ``affine``). Returns (B, C, H, W).
    """

    def __init__(self, bn: nn.BatchNorm2d, domain_dim: int) -> None:
        super().__init__()
        self.bn = bn
        self.to_gamma = nn.Linear(domain_dim, bn.num_features, bias=False)
        self.to_beta = nn.Linear(domain_dim, bn.num_features, bias=False)
        nn.init.zeros_(self.to_gamma.weight)
        nn.init.zeros_(self.to_beta.weight)

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        """BatchNorm without its affine: batch statistics in training, running ones at inference."""
        bn = self.bn
        use_batch = bn.training or bn.running_mean is None
        return F.batch_norm(x, bn.running_mean, bn.running_var, None, None, use_batch, bn.momentum or 0.0, bn.eps)

    def affine(self, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bn = self.bn
        return bn.weight + self.to_gamma(c), bn.bias + self.to_beta(c)

    def modulate(self, normed: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """The domain affine on a standardised (B, C, H, W) map."""
        gamma, beta = self.affine(c)
        shape = (1, -1, 1, 1) if c.dim() == 1 else (c.shape[0], -1, 1, 1)
        return normed * gamma.view(shape) + beta.view(shape)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.modulate(self.standardize(x), c)


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
    """One expert per source domain (journal eq. 1; MM eq. 1), aggregated by attention over the experts' outputs
    (journal eq. 6; MM eq. 4-5).

    Expert i sees the block's input under ITS domain's DNorm (eq. 2 with c_i): ``h_i = n * gamma_i + beta_i`` for
    the standardised input n, and is a bottleneck MLP ``dF_i(h_i) = U_i GELU(W_i h_i + b_i) + b'_i`` of width r (not
    a full-size copy). Eq. 6: ``Q = K = V = Concat(dF_1(h_1), ..., dF_N(h_N))``, the N expert outputs of a token as
    N rows (N, D); ``A = softmax(Q K^T / sqrt(D))`` (N, N); the block adds ``s * mean_rows(A V)``. No projection is
    learnt in the aggregation; the residual scale ``s`` starts at 0 (journal eq. 2), so a fresh block equals CLIP's.

    A source domain's samples train its own expert: in training, a sample of source domain d (index 1..N) sends
    gradient into expert d's weights and domain d's affine only (the other experts' weights and affines enter its
    forward as constants); wildcard samples (index 0: unseen domains, the meta-test domain) reach every expert. At
    inference every expert contributes.

    normed: (B, L, D) standardised input; gamma, beta: (N, D) the N source domains' DNorm affines; own: the samples'
    domain indices (int for the batch or (B,)). Returns (B, L, D).
    """

    def __init__(self, dim: int, num_experts: int, bottleneck: int) -> None:
        super().__init__()
        self.num_experts = num_experts
        self.down_weight = nn.Parameter(torch.empty(num_experts, bottleneck, dim))  # W_i
        self.down_bias = nn.Parameter(torch.empty(num_experts, bottleneck))  # b_i
        self.up_weight = nn.Parameter(torch.empty(num_experts, dim, bottleneck))  # U_i
        self.up_bias = nn.Parameter(torch.empty(num_experts, dim))  # b'_i
        pairs = ((self.down_weight, self.down_bias, dim), (self.up_weight, self.up_bias, bottleneck))
        for weight, bias, fan_in in pairs:
            bound = 1 / math.sqrt(fan_in)  # nn.Linear's default initialisation, per expert
            nn.init.uniform_(weight, -bound, bound)
            nn.init.uniform_(bias, -bound, bound)
        self.scale = nn.Parameter(torch.zeros(dim))

    def _hidden(
        self, normed: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, down: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        """``GELU(W_i h_i + b_i)`` for every expert, (B, L, N, r). ``W_i (n * gamma_i + beta_i) = (W_i diag(gamma_i))
        n + W_i beta_i``: the N down-projections of the N differently normalised inputs are one GEMM on n."""
        weight, bias = down
        n, r = weight.shape[:2]
        folded = (weight * gamma.unsqueeze(1)).reshape(n * r, -1)  # (N*r, D)
        shift = bias + torch.einsum("nrd,nd->nr", weight, beta)  # (N, r)
        return F.gelu(F.linear(normed, folded, shift.reshape(-1))).unflatten(-1, (n, r))

    def expert_outputs(self, normed: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """``dF_i(h_i)`` for every expert, written out, (B, L, N, D) (for inspection; ``forward`` never builds it)."""
        hidden = self._hidden(normed, gamma, beta, (self.down_weight, self.down_bias))
        return torch.einsum("blnr,ndr->blnd", hidden, self.up_weight) + self.up_bias

    def _parameters_for(
        self, own: int, gamma: torch.Tensor, beta: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """The experts' weights and affines with every expert but ``own`` (1..N) held constant (0: none held)."""
        tensors = [self.down_weight, self.down_bias, self.up_weight, self.up_bias, gamma, beta]
        if own == 0:
            return tensors[:4], gamma, beta
        keep = torch.arange(1, self.num_experts + 1, device=gamma.device) == own
        held = [torch.where(keep.view(-1, *[1] * (t.dim() - 1)), t, t.detach()) for t in tensors]
        return held[:4], held[4], held[5]

    def _mix(self, normed: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, own: int) -> torch.Tensor:
        """``s * `` eq. 6 without building the (B, L, N, D) expert outputs. With ``g_i = [GELU(W_i h_i + b_i); 1]``
        and ``V_i = [U_i, b'_i]`` (D, r+1), ``dF_i = V_i g_i``, so ``Q K^T = (g_i^T V_i^T V_j g_j)_ij`` from the
        (r+1)-wide hidden vectors and the small matrices ``V_i^T V_j``, and ``mean_rows(A V) = sum_j w_j V_j g_j``
        with ``w_j = mean_i A_ij``: one GEMM back to width D, whose matrix carries the scale ``s``."""
        (down_w, down_b, up_w, up_b), gamma, beta = self._parameters_for(own, gamma, beta)
        hidden = self._hidden(normed, gamma, beta, (down_w, down_b))
        n, r1 = self.num_experts, hidden.shape[-1] + 1
        g = F.pad(hidden, (0, 1), value=1.0)  # (B, L, N, r+1): [h; 1]
        v = torch.cat([up_w, up_b.unsqueeze(-1)], dim=-1).to(g.dtype)  # (N, D, r+1)
        cross = torch.einsum("ida,jdb->iajb", v, v).reshape(n, r1, n * r1)  # V_i^T V_j
        projected = torch.einsum("blia,iak->blik", g, cross).unflatten(-1, (n, r1))  # (B, L, N, N, r+1)
        gram = (projected * g.unsqueeze(-3)).sum(-1)  # (B, L, N, N) = Q K^T
        weights = torch.softmax(gram / math.sqrt(v.shape[1]), dim=-1).mean(dim=-2)  # (B, L, N)
        scaled = (v * self.scale.to(v.dtype).view(1, -1, 1)).permute(0, 2, 1).reshape(n * r1, -1)  # (N(r+1), D)
        return (g * weights.unsqueeze(-1)).flatten(-2) @ scaled

    def forward(
        self, normed: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, own: int | torch.Tensor = 0
    ) -> torch.Tensor:
        if not (self.training and torch.is_grad_enabled()):
            return self._mix(normed, gamma, beta, 0)
        if isinstance(own, int):
            return self._mix(normed, gamma, beta, own)
        own = own.to(normed.device)
        values = own.unique().tolist()
        if len(values) == 1:
            return self._mix(normed, gamma, beta, int(values[0]))
        out = normed.new_zeros(normed.shape)
        for value in values:  # a mixed batch: each domain's samples through their own expert's gradient
            rows = (own == value).nonzero().squeeze(1)
            out = out.index_copy(0, rows, self._mix(normed[rows], gamma, beta, int(value)))
        return out


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
    ``tau_d = tau_base + phi * ||e_dom^d||`` (eq. 10) with ``phi`` learnable, starting at 0 and read as ``max(phi, 0)``:
    a temperature never falls below ``tau_base``. (A negative phi times growing prompt norms drove every tau_d to the
    1e-3 floor in a 4-domain mnv2 run: logits x1000, L_cls 10.)

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
        self.dom_ctx = nn.Parameter(torch.randn(num_domains + 1, len(dom_slots), width).mul_(0.02))
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
        return (self.tau_base + self.phi.clamp_min(0) * norms).clamp_min(1e-3)


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
