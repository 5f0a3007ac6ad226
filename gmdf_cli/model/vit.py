"""GM-DF on CLIP's Vision Transformer (the paper's tower): each of open_clip's residual attention blocks carries
the Dataset-Embedding Generator (DNorm and the per-domain experts), and the encoder around them adds the domain
embeddings, second-order aggregation of middle blocks and MIM masking. open_clip is imported here, where a ViT is
built, and nowhere on the way to a model of another tower."""

from __future__ import annotations

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
from .config import GMDFConfig

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
        self.blocks = nn.ModuleList(GMDFBlock(b, cfg) for b in visual.transformer.resblocks)
        self.ln_post = visual.ln_post
        self.proj = visual.proj
        width = cfg.vision.width
        self.agg_layers = tuple(cfg.agg_layers)
        self.domain_embedding = domain_embeddings(cfg.num_domains, cfg.domain_dim)
        self.aggregation = SecondOrderAggregation(len(self.agg_layers), width, cfg.agg_adapter_dim)
        self.mask_token = nn.Parameter(torch.randn(width) * 0.02)
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
