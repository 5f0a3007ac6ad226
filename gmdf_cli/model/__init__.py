"""THE model module: configs, the GM-DF nn.Module and its parts, and its losses.

Names are loaded on first use (PEP 562), so reading a config (``gmdf --help``) does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_getattr
from .config import CONFIGS, WILDCARD, GMDFConfig, TextConfig, VisionConfig, get_config, scaled_agg_layers

if TYPE_CHECKING:
    from .components import (
        DomainBatchNorm,
        DomainClassPrompts,
        DomainExperts,
        DomainNorm,
        PatchTokenizer,
        SecondOrderAggregation,
        StageAggregation,
        TextEncoder,
        random_patch_mask,
    )
    from .conv import GMDFBottleneck, GMDFConvImageEncoder
    from .gmdf import GMDF, GMDFOutput, build_clip, build_model
    from .losses import (
        classification_loss,
        domain_alignment_loss,
        domain_class_contrastive_loss,
        frechet_distance,
        mim_loss,
    )
    from .vit import GMDFBlock, GMDFImageEncoder

_HOME = {
    **dict.fromkeys(
        [
            "DomainBatchNorm",
            "DomainClassPrompts",
            "DomainExperts",
            "DomainNorm",
            "PatchTokenizer",
            "SecondOrderAggregation",
            "StageAggregation",
            "TextEncoder",
            "random_patch_mask",
        ],
        ".components",
    ),
    **dict.fromkeys(["GMDFBottleneck", "GMDFConvImageEncoder"], ".conv"),
    **dict.fromkeys(["GMDF", "GMDFOutput", "build_clip", "build_model"], ".gmdf"),
    **dict.fromkeys(["GMDFBlock", "GMDFImageEncoder"], ".vit"),
    **dict.fromkeys(
        [
            "classification_loss",
            "domain_alignment_loss",
            "domain_class_contrastive_loss",
            "frechet_distance",
            "mim_loss",
        ],
        ".losses",
    ),
}


__getattr__ = lazy_getattr(__name__, _HOME)


__all__ = [
    "CONFIGS",
    "GMDF",
    "WILDCARD",
    "DomainBatchNorm",
    "DomainClassPrompts",
    "DomainExperts",
    "DomainNorm",
    "GMDFBlock",
    "GMDFBottleneck",
    "GMDFConfig",
    "GMDFConvImageEncoder",
    "GMDFImageEncoder",
    "GMDFOutput",
    "PatchTokenizer",
    "SecondOrderAggregation",
    "StageAggregation",
    "TextConfig",
    "TextEncoder",
    "VisionConfig",
    "build_clip",
    "build_model",
    "classification_loss",
    "domain_alignment_loss",
    "domain_class_contrastive_loss",
    "frechet_distance",
    "get_config",
    "mim_loss",
    "random_patch_mask",
    "scaled_agg_layers",
]
