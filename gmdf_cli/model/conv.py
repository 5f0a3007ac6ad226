"""GM-DF on CLIP's modified ResNet tower (the journal version also runs GM-DF on CLIP ResNet backbones): a
convolutional image encoder that learns from little data, carrying the same domain-conditioned normalisation,
per-domain experts, middle-stage aggregation and masked image modelling as the ViT tower."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from .components import (
    DomainBatchNorm,
    DomainExperts,
    StageAggregation,
    domain_embeddings,
    domain_vector,
    paint_masked_patches,
)
from .config import GMDFConfig

if TYPE_CHECKING:
    from open_clip.modified_resnet import Bottleneck


class GMDFBottleneck(nn.Module):
    """CLIP's bottleneck with eq. 2 in place of its last BatchNorm and the experts of journal eq. 1 and 6 beside it:
    ``z = conv3(...)``, ``y = ReLU(DBN(z, c_d) + shortcut(x))``, ``out = y + Experts(positions of z)``, expert i
    seeing ``DBN(z, c_i)``, its own domain's. With zero-initialised modulation and expert scale it is exactly CLIP's
    block.

    x: (B, C_in, H, W), c (K,) or (B, K), sources (N, K), own: the samples' domain indices
    -> (B, C_out, H / stride, W / stride).
    """

    def __init__(self, block: Bottleneck, cfg: GMDFConfig) -> None:
        super().__init__()
        self.conv1, self.bn1, self.act1 = block.conv1, block.bn1, block.act1
        self.conv2, self.bn2, self.act2 = block.conv2, block.bn2, block.act2
        self.avgpool, self.conv3, self.act3 = block.avgpool, block.conv3, block.act3
        self.downsample = block.downsample
        self.dnorm = DomainBatchNorm(block.bn3, cfg.domain_dim)
        channels = block.bn3.num_features
        self.experts = DomainExperts(channels, cfg.num_domains, cfg.expert_dim)

    def forward(
        self, x: torch.Tensor, c: torch.Tensor, sources: torch.Tensor, own: int | torch.Tensor = 0
    ) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.avgpool(self.act2(self.bn2(self.conv2(out))))
        normed = self.dnorm.standardize(self.conv3(out))
        identity = self.downsample(x) if self.downsample is not None else x
        out = self.act3(self.dnorm.modulate(normed, c) + identity)
        tokens = normed.flatten(2).transpose(1, 2)  # (B, HW, C)
        experts = self.experts(tokens, *self.dnorm.affine(sources), own)
        return out + experts.transpose(1, 2).reshape(out.shape)


class ConvTowerParts(nn.Module):
    """What GM-DF adds to any convolutional tower besides its blocks: the domain embeddings c_d (index 0 the
    wildcard), the stage aggregation of ``agg_layers`` (pooled (B, C_l) -> the embedding, weighted from 0), and
    the learnt colour that paints MIM-masked patches."""

    def add_gmdf_parts(self, cfg: GMDFConfig, channels: list[int], token_dim: int) -> None:
        """``channels``: the width of each position ``agg_layers`` may name; ``token_dim``: the MIM tokens' width."""
        self.patch = cfg.vision.patch_size
        self.agg_layers = tuple(cfg.agg_layers)
        self.token_dim = token_dim
        self.domain_embedding = domain_embeddings(cfg.num_domains, cfg.domain_dim)
        self.aggregation = StageAggregation([channels[i] for i in self.agg_layers], cfg.embed_dim, cfg.agg_adapter_dim)
        self.mask_token = nn.Parameter(torch.zeros(3))

    def domain_vector(self, domain: int | torch.Tensor) -> torch.Tensor:
        return domain_vector(self.domain_embedding, domain)

    def prepare(
        self, images: torch.Tensor, domain: int | torch.Tensor, patch_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The images with masked patches painted, the samples' domain embedding (C,) or (B, C), and the N source
        domains' (N, C)."""
        if patch_mask is not None:
            images = paint_masked_patches(images, patch_mask, self.patch, self.mask_token)
        return images, self.domain_vector(domain), self.domain_embedding.weight[1:]


class GMDFConvImageEncoder(ConvTowerParts):
    """CLIP's modified ResNet with GM-DF's parts. images (B, 3, S, S), domain, patch_mask (B, (S/16)^2) ->
    pooled features (B, E) and the third stage's positions as tokens (B, (S/16)^2, C_3) for the MIM head.
    Masked 16x16 patches are painted with a learnt colour BEFORE the stem, so the encoder never sees them."""

    def __init__(self, visual: nn.Module, cfg: GMDFConfig) -> None:
        super().__init__()
        from open_clip.modified_resnet import ModifiedResNet

        if not isinstance(visual, ModifiedResNet):
            raise ValueError(f"expected open_clip's ModifiedResNet, got {type(visual).__name__}")
        self.stem = nn.Sequential(
            visual.conv1,
            visual.bn1,
            visual.act1,
            visual.conv2,
            visual.bn2,
            visual.act2,
            visual.conv3,
            visual.bn3,
            visual.act3,
            visual.avgpool,
        )
        self.stages = nn.ModuleList(
            nn.ModuleList(GMDFBottleneck(b, cfg) for b in layer)
            for layer in (visual.layer1, visual.layer2, visual.layer3, visual.layer4)
        )
        self.attnpool = visual.attnpool
        channels = [layer[-1].bn3.num_features for layer in (visual.layer1, visual.layer2, visual.layer3)]
        self.add_gmdf_parts(cfg, channels, token_dim=channels[2])

    def cam_target(self) -> nn.Module:
        """Where Grad-CAM looks: the last bottleneck's output feature map."""
        last_stage = cast(nn.ModuleList, self.stages[-1])
        return last_stage[-1]

    def forward(
        self, images: torch.Tensor, domain: int | torch.Tensor = 0, patch_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        images, c, sources = self.prepare(images, domain, patch_mask)
        x = self.stem(images)
        pooled_stages: list[torch.Tensor] = []
        tokens = x
        for i, stage in enumerate(self.stages):
            for block in cast(nn.ModuleList, stage):
                x = block(x, c, sources, domain)
            if i in self.agg_layers:
                pooled_stages.append(x.mean(dim=(2, 3)))
            if i == 2:
                tokens = x.flatten(2).transpose(1, 2)
        pooled = self.aggregation(self.attnpool(x), pooled_stages)
        return pooled, tokens
