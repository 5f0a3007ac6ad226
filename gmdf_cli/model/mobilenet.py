"""GM-DF on an ImageNet-pretrained MobileNetV2 (Keras's MobileNetV2, width 1.0, 224 px; the copy the MIT npm package
``nsfwjs`` ships, converted by ``gmdf_cli.tools.tfjs``): the plain network as Keras builds it, the CLIP-style image
tower around it (``clip.visual``: pooled features projected to the joint embedding), and the GM-DF tower with
domain-conditioned normalisation, per-domain experts, stage aggregation and MIM tokens in its later blocks.

Only the blocks from ``VisionConfig.expert_from`` on carry GM-DF's parts: they run at 1/16 and 1/32 of the input,
where an expert sees 196 or 49 positions instead of the 12,544 of the first block, and where features are the
network's own rather than generic edges.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from .components import DomainBatchNorm, DomainExperts
from .config import CLIP_MEAN, CLIP_STD, GMDFConfig, clip_shape
from .conv import ConvTowerParts

MOBILENET_V2 = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
"""Keras's MobileNetV2 at width 1.0: (expansion t, output channels c, blocks n, first stride s) per stage."""
HEAD_CHANNELS = 1280
TOKEN_BLOCK = 12
"""The last block at 1/16 of the input (96 channels): its positions are the MIM tokens, one per 16x16 patch."""


class ConvBN(nn.Module):
    """Keras's Conv2D (no bias) + BatchNormalization (eps 1e-3) + optional ReLU6. A stride-2 convolution pads the
    bottom and right by one pixel first, as Keras's ``ZeroPadding2D(correct_pad)`` does; a stride-1 one pads
    symmetrically ('same'). x: (B, C_in, H, W) -> (B, C_out, H / stride, W / stride)."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: bool = True):
        super().__init__()
        self.stride = stride
        padding = 0 if stride == 2 else kernel // 2
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01)
        self.act: nn.Module = nn.ReLU6() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 2:
            x = F.pad(x, (0, 1, 0, 1))
        return cast(torch.Tensor, self.act(self.bn(self.conv(x))))


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expansion (absent when t = 1), 3x3 depthwise, linear 1x1 projection, and the
    identity added when the stride is 1 and the width unchanged. x: (B, C_in, H, W) -> (B, C_out, H/s, W/s)."""

    def __init__(self, cin: int, cout: int, expansion: int, stride: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.expand: nn.Module = ConvBN(cin, hidden) if expansion != 1 else nn.Identity()
        self.depthwise = ConvBN(hidden, hidden, 3, stride, groups=hidden)
        self.project = ConvBN(hidden, cout, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.residual else out


class MobileNetV2(nn.Module):
    """Keras's MobileNetV2 without its classifier. images (B, 3, S, S) in [-1, 1] -> (B, 1280, S/32, S/32) after
    the last 1x1 convolution and ReLU6 (Keras's ``out_relu``)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBN(3, 32, 3, 2)
        blocks: list[InvertedResidual] = []
        cin = 32
        for expansion, cout, count, stride in MOBILENET_V2:
            for i in range(count):
                blocks.append(InvertedResidual(cin, cout, expansion, stride if i == 0 else 1))
                cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.head = ConvBN(cin, HEAD_CHANNELS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return cast(torch.Tensor, self.head(x))


def to_network_range(images: torch.Tensor) -> torch.Tensor:
    """CLIP-normalised ``(x - mean) / std`` -> ``2x - 1``, the range Keras's MobileNetV2 was trained on (x: the RGB
    pixels in [0, 1]). (B, 3, H, W) -> (B, 3, H, W)."""
    scale = torch.tensor(CLIP_STD, device=images.device, dtype=images.dtype).view(1, 3, 1, 1) * 2
    shift = torch.tensor(CLIP_MEAN, device=images.device, dtype=images.dtype).view(1, 3, 1, 1) * 2 - 1
    return images * scale + shift


class MobileNetV2Visual(nn.Module):
    """The CLIP-style image tower (``clip.visual``) of a MobileNetV2 config: CLIP-normalised images in the network's
    own range, globally average-pooled after ``out_relu`` and projected to the joint embedding.
    images (B, 3, S, S) -> (B, E)."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.trunk = MobileNetV2()
        self.proj = nn.Linear(HEAD_CHANNELS, embed_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.proj(self.trunk(to_network_range(images)).mean(dim=(2, 3))))


class GMDFInvertedResidual(nn.Module):
    """An inverted residual with eq. 2 in place of its projection's BatchNorm and the experts of journal eq. 1 and 6
    beside it: ``z = project(depthwise(expand(x)))``, ``y = DBN(z, c_d) (+ x)``, ``out = y + Experts(positions of
    z)``, expert i seeing ``DBN(z, c_i)``. With zero-initialised modulation and expert scale it is the plain block.

    x: (B, C_in, H, W), c (K,) or (B, K), sources (N, K), own: the samples' domain indices -> (B, C_out, H/s, W/s).
    """

    def __init__(self, block: InvertedResidual, cfg: GMDFConfig) -> None:
        super().__init__()
        self.expand, self.depthwise = block.expand, block.depthwise
        self.project_conv = block.project.conv
        self.residual = block.residual
        self.dnorm = DomainBatchNorm(block.project.bn, cfg.domain_dim)
        self.experts = DomainExperts(block.project.bn.num_features, cfg.num_domains, cfg.expert_dim)

    def forward(
        self, x: torch.Tensor, c: torch.Tensor, sources: torch.Tensor, own: int | torch.Tensor = 0
    ) -> torch.Tensor:
        normed = self.dnorm.standardize(self.project_conv(self.depthwise(self.expand(x))))
        out = self.dnorm.modulate(normed, c)
        if self.residual:
            out = out + x
        tokens = normed.flatten(2).transpose(1, 2)  # (B, HW, C)
        experts = self.experts(tokens, *self.dnorm.affine(sources), own)
        return out + experts.transpose(1, 2).reshape(out.shape)


class GMDFMobileNetImageEncoder(ConvTowerParts):
    """MobileNetV2 with GM-DF's parts from block ``expert_from`` on. images (B, 3, S, S) CLIP-normalised, domain,
    patch_mask (B, (S/16)^2) -> pooled features (B, E) and block 12's positions as tokens (B, (S/16)^2, 96) for the
    MIM head. Masked 16x16 patches are painted with a learnt colour before the stem, so the encoder never sees them;
    the pooled features of the ``agg_layers`` blocks reach the embedding through adapters weighted from 0."""

    def __init__(self, visual: nn.Module, cfg: GMDFConfig) -> None:
        super().__init__()
        if not isinstance(visual, MobileNetV2Visual):
            raise ValueError(f"expected gmdf's MobileNetV2Visual, got {type(visual).__name__}")
        trunk = visual.trunk
        first = cfg.vision.expert_from
        self.stem = trunk.stem
        self.blocks = nn.ModuleList(
            GMDFInvertedResidual(cast(InvertedResidual, b), cfg) if i >= first else b
            for i, b in enumerate(trunk.blocks)
        )
        self.gmdf_from = first
        self.head = trunk.head
        self.proj = visual.proj
        channels = [cast(InvertedResidual, b).project.bn.num_features for b in trunk.blocks]
        self.add_gmdf_parts(cfg, channels, token_dim=channels[TOKEN_BLOCK])

    def cam_target(self) -> nn.Module:
        """Where Grad-CAM looks: the last 1x1 convolution's ReLU6 map (B, 1280, S/32, S/32)."""
        return self.head

    def forward(
        self, images: torch.Tensor, domain: int | torch.Tensor = 0, patch_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        images, c, sources = self.prepare(images, domain, patch_mask)
        x = self.stem(to_network_range(images))
        pooled_stages: list[torch.Tensor] = []
        tokens = x
        for i, block in enumerate(self.blocks):
            x = block(x, c, sources, domain) if i >= self.gmdf_from else block(x)
            if i in self.agg_layers:
                pooled_stages.append(x.mean(dim=(2, 3)))
            if i == TOKEN_BLOCK:
                tokens = x.flatten(2).transpose(1, 2)
        pooled = self.proj(self.head(x).mean(dim=(2, 3)))
        return self.aggregation(pooled, pooled_stages), tokens


PRETRAINED_TOWERS = {"nsfwjs": "mobilenet-v2-nsfwjs.safetensors"}
"""Pretrained weights of non-CLIP image towers that ship with gmdf (tag -> file in ``weights/shipped``), made by
``gmdf_cli.tools.tfjs`` from the npm files; their provenance is in each file's metadata."""


def mobilenet_visual(cfg: GMDFConfig) -> MobileNetV2Visual:
    """The bare image tower (random weights): ``TowerSpec.visual``, and ``mobilenet_clip``'s ``visual``."""
    return MobileNetV2Visual(cfg.embed_dim)


def mobilenet_clip(cfg: GMDFConfig, pretrained: str | None) -> nn.Module:
    """A CLIP whose image tower is :class:`MobileNetV2Visual`, text tower as ``cfg`` says. ``pretrained``: a tag
    of ``PRETRAINED_TOWERS`` or a converted safetensors file of the bare network; the projection and the text tower
    start random either way (no CLIP was ever trained on this tower)."""
    import open_clip
    from safetensors.torch import load_file

    shape = clip_shape(cfg)
    shape["vision_cfg"] = {"image_size": 32, "patch_size": 16, "width": 64, "layers": 1, "head_width": 64}
    model = open_clip.CLIP(**shape)  # its throwaway ViT is replaced at once
    model.visual = mobilenet_visual(cfg)
    if pretrained:
        from ..weights.registry import SHIPPED_DIR

        path = SHIPPED_DIR / PRETRAINED_TOWERS[pretrained] if pretrained in PRETRAINED_TOWERS else Path(pretrained)
        if not path.is_file():
            raise ValueError(
                f"no MobileNetV2 weights {pretrained!r} (known: {', '.join(PRETRAINED_TOWERS)}, or a file)"
            )
        try:
            tensors = load_file(str(path))
        except Exception as exc:  # safetensors' own error type for a file that is not one
            raise ValueError(f"{path.name} is not a safetensors file ({exc})") from None
        missing, unexpected = model.visual.trunk.load_state_dict(tensors, strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise ValueError(
                f"{path.name} does not fit MobileNetV2: missing {missing[:3]}, unexpected {unexpected[:3]}"
            )
    model.train(False)
    return model
