"""GM-DF on CLIP's Vision Transformer (the paper's tower): each of open_clip's residual attention blocks carries
the Dataset-Embedding Generator (DNorm and the per-domain experts), and the encoder around them adds the domain
embeddings, second-order aggregation of middle blocks and MIM masking.

A model that scores with the prompt features cached in its weights is built from :func:`bare_vit` instead of
open_clip's ``VisionTransformer``: the same parts under the same names, made of torch's own modules, so that a
scan never imports open_clip (and with it torchvision, torch._dynamo and sympy: seconds and 250 MB)."""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from .components import (
    Domain,
    DomainExperts,
    DomainNorm,
    SecondOrderAggregation,
    domain_embeddings,
    domain_vector,
    modulate,
)
from .config import GMDFConfig, VisionConfig

if TYPE_CHECKING:
    from open_clip.transformer import ResidualAttentionBlock


class GMDFBlock(nn.Module):
    """One transformer block with GM-DF's Dataset-Embedding Generator (sec. 3.1), eq. 3 in CLIP's pre-norm form:

    ``x_att = x + MHA(LN_1(x))``, ``h = DNorm(x_att, c_d)`` (eq. 2, in place of CLIP's LN_2),
    ``ffn = MLP(h) + Experts(x_att)`` (journal eq. 1 and 6: expert i sees ``DNorm(x_att, c_i)``, its own domain's),
    ``x_out = x_att + ffn``. With zero-initialised modulation and expert scales this is exactly CLIP's block.

    x: (B, L, D), c: the samples' domain embedding (C,) or (B, C), sources: the N source domains' (N, C), own: the
    samples' domain indices -> (x_out (B, L, D), ffn (B, L, D), second-order term (B, D) or None).
    """

    def __init__(self, block: ResidualAttentionBlock, cfg: GMDFConfig) -> None:
        super().__init__()
        if hasattr(block, "ln_1_kv"):
            raise ValueError("cross-attention blocks are not supported")
        self.ln_1 = block.ln_1
        self.attn = block.attn
        self.ls_1 = block.ls_1
        self.mlp = block.mlp
        self.ls_2 = block.ls_2
        width = block.ln_2.normalized_shape[0]
        self.dnorm = DomainNorm(block.ln_2, cfg.domain_dim)
        self.experts = DomainExperts(width, cfg.num_domains, cfg.expert_dim)

    def forward(
        self,
        x: torch.Tensor,
        c: torch.Tensor,
        sources: torch.Tensor,
        own: Domain = 0,
        prev_ffn: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        y = self.ln_1(x)
        x = x + self.ls_1(self.attn(y, y, y, need_weights=False)[0])
        normed = self.dnorm.standardize(x)
        h = modulate(normed, *self.dnorm.affine(c))
        ffn = self.ls_2(self.mlp(h)) + self.experts(normed, *self.dnorm.affine(sources), own)
        second = SecondOrderAggregation.second_order(self.attn, y, prev_ffn) if prev_ffn is not None else None
        return x + ffn, ffn, second


class GMDFImageEncoder(nn.Module):
    """CLIP's ViT image tower with GM-DF blocks, domain embeddings, second-order aggregation and MIM masking.

    images (B, 3, H, W), domain int or (B,), patch_mask (B, P) bool or None
    -> pooled features (B, E) (unnormalised), final patch tokens (B, P, D) after ln_post.
    Masked patches are replaced by a learnt mask token BEFORE the first block, so the encoder never sees them.
    """

    def __init__(self, visual: nn.Module, cfg: GMDFConfig) -> None:
        super().__init__()
        if not isinstance(visual, BareViT):
            from open_clip.transformer import VisionTransformer

            if not isinstance(visual, VisionTransformer):
                raise ValueError(f"GM-DF needs open_clip's VisionTransformer, got {type(visual).__name__}")
        if visual.attn_pool is not None or visual.pool_type != "tok" or visual.final_ln_after_pool:
            raise ValueError("only class-token pooling ViTs are supported")
        if not isinstance(visual.patch_dropout, nn.Identity):
            raise ValueError("patch dropout is not supported")
        self.conv1 = visual.conv1
        self.class_embedding = visual.class_embedding
        self.positional_embedding = visual.positional_embedding
        self.ln_pre = visual.ln_pre
        resblocks = cast(nn.ModuleList, visual.transformer.resblocks)
        self.blocks = nn.ModuleList(GMDFBlock(b, cfg) for b in resblocks)
        self.ln_post = visual.ln_post
        self.proj = visual.proj
        width = cfg.vision.width
        self.agg_layers = tuple(cfg.agg_layers)
        self.domain_embedding = domain_embeddings(cfg.num_domains, cfg.domain_dim)
        self.aggregation = SecondOrderAggregation(len(self.agg_layers), width, cfg.agg_adapter_dim)
        self.mask_token = nn.Parameter(torch.randn(width).mul_(0.02))  # in place: no torch._dynamo on meta
        self.token_dim = width

    def cam_target(self) -> nn.Module:
        """Where Grad-CAM looks: the last block's first LayerNorm (its tokens, reshaped to the patch grid)."""
        return cast(GMDFBlock, self.blocks[-1]).ln_1

    def domain_vector(self, domain: Domain) -> torch.Tensor:
        return domain_vector(self.domain_embedding, domain)

    def forward(
        self, images: torch.Tensor, domain: Domain = 0, patch_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv1(images).flatten(2).transpose(1, 2)  # (B, P, D)
        if patch_mask is not None:
            x = torch.where(patch_mask.unsqueeze(-1), self.mask_token.to(x.dtype), x)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x)
        c = self.domain_vector(domain)
        sources = self.domain_embedding.weight[1:]
        terms: list[torch.Tensor] = []
        ffn: torch.Tensor | None = None
        for i, block in enumerate(self.blocks):
            x, new_ffn, second = block(x, c, sources, domain, ffn if i in self.agg_layers else None)
            if second is not None:
                terms.append(second)
            ffn = new_ffn
        x = self.ln_post(x)
        pooled = self.aggregation(x[:, 0], terms)
        if self.proj is not None:
            pooled = pooled @ self.proj
        return pooled, x[:, 1:]


class QuickGELU(nn.Module):
    """OpenAI CLIP's activation, ``x * sigmoid(1.702 x)`` (open_clip's ``QuickGELU``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class BareBlock(nn.Module):
    """The parts of open_clip's ``ResidualAttentionBlock`` a :class:`GMDFBlock` takes, under its names: ln_1, attn
    (batch first), ls_1, ln_2, mlp (c_fc, gelu, c_proj), ls_2. Never run on its own."""

    def __init__(self, width: int, heads: int, mlp_width: int, quick_gelu: bool) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ls_1 = nn.Identity()
        self.ln_2 = nn.LayerNorm(width)
        act: nn.Module = QuickGELU() if quick_gelu else nn.GELU()
        self.mlp = nn.Sequential(
            OrderedDict([("c_fc", nn.Linear(width, mlp_width)), ("gelu", act), ("c_proj", nn.Linear(mlp_width, width))])
        )
        self.ls_2 = nn.Identity()


class BareViT(nn.Module):
    """The parts of open_clip's ``VisionTransformer`` (class-token pooling, no patch dropout) that
    :class:`GMDFImageEncoder` takes, under their names, made of torch modules alone: what a model is built from
    when its weights are loaded into it at once (``TowerSpec.visual``). Its tensors are uninitialised."""

    attn_pool = None
    pool_type = "tok"
    final_ln_after_pool = False

    def __init__(self, vision: VisionConfig, embed_dim: int, quick_gelu: bool) -> None:
        super().__init__()
        width, grid = vision.width, vision.image_size // vision.patch_size
        self.conv1 = nn.Conv2d(3, width, kernel_size=vision.patch_size, stride=vision.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(width))
        self.positional_embedding = nn.Parameter(torch.empty(grid * grid + 1, width))
        self.patch_dropout = nn.Identity()
        self.ln_pre = nn.LayerNorm(width)
        heads, mlp_width = width // vision.head_width, int(width * vision.mlp_ratio)
        self.transformer = nn.Module()
        self.transformer.resblocks = nn.ModuleList(
            BareBlock(width, heads, mlp_width, quick_gelu) for _ in range(vision.layers)
        )
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.empty(width, embed_dim))


def bare_vit(cfg: GMDFConfig) -> BareViT:
    """``TowerSpec.visual`` of the ViT tower: the bare image tower of ``cfg``, for weights to be loaded into."""
    return BareViT(cfg.vision, cfg.embed_dim, cfg.quick_gelu)
