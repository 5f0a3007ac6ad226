"""Model shapes as small, serialisable configs (the open_clip way: a name -> a config -> one factory)."""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

WILDCARD = "*"
"""Name of the wildcard domain e_dom^0 (eq. 9), used for every unknown or unseen domain."""
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
"""The RGB mean and standard deviation CLIP's images are normalised by (open_clip's ``OPENAI_DATASET_*``): every
tower's input, the MobileNetV2 tower's included (it maps them back to its own range)."""


@dataclass(frozen=True)
class VisionConfig:
    """open_clip ``CLIPVisionCfg`` subset that GM-DF supports: a plain pre-norm ViT with a class token
    (``kind="vit"``), or CLIP's modified ResNet with attention pooling (``kind="resnet"``, ``stage_layers``
    bottlenecks per stage; ``patch_size`` is then the MIM patch, 16 = the third stage's stride), or Keras's
    MobileNetV2 (``kind="mobilenet"``: 17 inverted residuals, GM-DF's parts from block ``expert_from`` on; the MIM
    patch is 16, block 12's stride)."""

    image_size: int = 224
    patch_size: int = 16
    width: int = 768
    layers: int = 12
    head_width: int = 64
    mlp_ratio: float = 4.0
    kind: str = "vit"
    stage_layers: tuple[int, ...] = ()
    expert_from: int = 0
    """First MobileNetV2 block with domain-conditioned normalisation and experts (``kind="mobilenet"`` only)."""
    face_px: int = 0
    """Every face crop is shrunk to at most this many pixels across before it is resized to ``image_size``, in
    training and in scanning alike, so a large clean face and a small compressed one reach the model at one
    resolution (0: crops go in as cut)."""
    face_jpeg: int = 0
    """JPEG quality every face crop is re-encoded at (after ``face_px``), in training and scanning alike, so a PNG
    and a JPEG reach the model through the same codec (0: no re-encoding)."""


@dataclass(frozen=True)
class TextConfig:
    """open_clip ``CLIPTextCfg`` subset: causal text transformer pooled at the EOT token."""

    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    heads: int = 8
    layers: int = 12


@dataclass(frozen=True)
class TowerSpec:
    """What gmdf knows of one image tower kind (``VisionConfig.kind``) before building it: its help line, how many
    blocks (or stages) eq. 7-8's aggregation may pick from and the lowest it may pick, what a config's ``vision``
    must hold for it, and whether its Grad-CAM target emits tokens (``[B, 1 + grid**2, C]``, reshaped to a grid) or
    a feature map; and where the code that builds it lives."""

    description: str
    depth: Callable[[VisionConfig], int]
    encoder: str
    """``"module:Class"`` of GM-DF's image encoder around ``clip.visual``, imported when a model is built."""
    backbone: str | None = None
    """``"module:function"``, ``(config, pretrained) -> CLIP`` with this tower, for a tower open_clip does not
    build (None: open_clip's CLIP from ``clip_shape``)."""
    visual: str | None = None
    """``"module:function"``, ``(config) -> the bare image tower`` (what ``backbone(...).visual`` is, untrained):
    what a model scoring with cached prompt features builds instead of a whole CLIP (None: a CLIP's)."""
    first_agg: int = 0
    check: Callable[[VisionConfig], str | None] = lambda vision: None
    """An error message for a ``vision`` this tower cannot be built from, else None."""
    cam_tokens: bool = False

    @staticmethod
    def load(path: str) -> Any:
        """The object a ``"module:name"`` path names (the module is imported now, not when the CLI starts)."""
        module, _, name = path.partition(":")
        return getattr(importlib.import_module(module), name)


def _resnet_check(vision: VisionConfig) -> str | None:
    return None if len(vision.stage_layers) == 4 else "a ResNet tower needs stage_layers for its 4 stages"


def _mobilenet_check(vision: VisionConfig) -> str | None:
    ok = vision.patch_size == 16 and 0 <= vision.expert_from < 17
    return None if ok else "a MobileNetV2 tower needs patch_size 16 and expert_from in 0..16"


TOWER_KINDS: dict[str, TowerSpec] = {
    "vit": TowerSpec(
        "CLIP's Vision Transformer (GM-DF's experts and DNorm in every block)",
        depth=lambda vision: vision.layers,
        encoder="gmdf_cli.model.vit:GMDFImageEncoder",
        visual="gmdf_cli.model.vit:bare_vit",
        first_agg=1,
        cam_tokens=True,
    ),
    "resnet": TowerSpec(
        "CLIP's modified ResNet with attention pooling (GM-DF's parts per stage)",
        depth=lambda vision: 3,
        encoder="gmdf_cli.model.conv:GMDFConvImageEncoder",
        check=_resnet_check,
    ),
    "mobilenet": TowerSpec(
        "ImageNet MobileNetV2 (Keras's, from nsfwjs) with GM-DF's parts in its later blocks",
        depth=lambda vision: 17,
        encoder="gmdf_cli.model.mobilenet:GMDFMobileNetImageEncoder",
        backbone="gmdf_cli.model.mobilenet:mobilenet_clip",
        visual="gmdf_cli.model.mobilenet:mobilenet_visual",
        check=_mobilenet_check,
    ),
}
"""The tower registry: the image towers a config may name (``VisionConfig.kind``). A new tower is one module (its
encoder, and its backbone where open_clip has none) and its entry here."""


@dataclass(frozen=True)
class GMDFConfig:
    """Everything needed to rebuild a GM-DF model; stored in every checkpoint's metadata.

    ``domains`` are the N source domains (one expert and one domain embedding each); index 0 of every
    domain table is the wildcard domain used for anything not in ``domains``.
    """

    name: str
    embed_dim: int = 512
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    quick_gelu: bool = False
    clip_model: str | None = "ViT-B-16"
    """open_clip architecture name whose pretrained weights fit this config (None: custom shape)."""
    clip_pretrained: str | None = "openai"
    """open_clip pretrained tag that training starts from by default."""
    domains: tuple[str, ...] = ("ff", "celeb", "dff")
    expert_dim: int = 32
    """Bottleneck width r of each per-domain expert (eq. 1)."""
    domain_dim: int = 16
    """Width of the domain embedding c_d that conditions DNorm (eq. 2), the main path's and each expert's."""
    agg_layers: tuple[int, ...] = (7, 8, 9)
    """0-based blocks whose second-order features are aggregated (eq. 7-8); the paper's layers 8-10. For a ResNet
    tower: 0-based stages whose pooled features are aggregated; for a MobileNetV2 tower, 0-based blocks."""
    agg_adapter_dim: int = 32
    prompt_ctx: int = 4
    """Learnable tokens per domain embedding e_dom (eq. 9)."""
    prompt_template: str = "a {dom} {cls} face showing forgery clues."
    tau_base: float = 0.01
    """tau_base of eq. 10 (CLIP's own temperature is 0.01)."""
    mim_ratio: float = 0.2
    mim_vocab: int = 512
    mim_tokenizer_dim: int = 16
    mim_seed: int = 1234

    def __post_init__(self) -> None:
        if not self.domains:
            raise ValueError("a GM-DF config needs at least one source domain")
        if len(set(self.domains)) != len(self.domains) or WILDCARD in self.domains:
            raise ValueError(f"domain names must be unique and not {WILDCARD!r}: {self.domains}")
        tower = TOWER_KINDS.get(self.vision.kind)
        if tower is None:
            raise ValueError(f"unknown vision tower kind {self.vision.kind!r}")
        problem = tower.check(self.vision)
        if problem:
            raise ValueError(problem)
        depth, low = tower.depth(self.vision), tower.first_agg
        bad = [i for i in self.agg_layers if not low <= i < depth]
        if bad:
            raise ValueError(f"agg_layers {bad} outside {low}..{depth - 1}")
        if self.vision.image_size % self.vision.patch_size:
            raise ValueError("image_size must be a multiple of patch_size")
        if self.vision.face_px < 0 or not 0 <= self.vision.face_jpeg <= 100:
            raise ValueError("face_px must be >= 0 and face_jpeg in 0..100 (0: off)")

    @property
    def num_domains(self) -> int:
        return len(self.domains)

    @property
    def grid(self) -> int:
        return self.vision.image_size // self.vision.patch_size

    def replace(self, **changes: Any) -> GMDFConfig:
        return dataclasses.replace(self, **changes)

    def with_domains(self, domains: tuple[str, ...] | list[str]) -> GMDFConfig:
        return self.replace(domains=tuple(domains))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> GMDFConfig:
        raw = json.loads(text)
        raw["vision"] = VisionConfig(**{**raw["vision"], "stage_layers": tuple(raw["vision"].get("stage_layers", ()))})
        raw["text"] = TextConfig(**raw["text"])
        for key in ("domains", "agg_layers"):
            raw[key] = tuple(raw[key])
        if "expert_attn_dim" in raw:
            raise ValueError(
                "made by gmdf 0.1, whose experts were mixed by a learnt query rather than journal eq. 6's attention "
                "over their outputs; its tensors do not fit gmdf 0.2: retrain it with gmdf train"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown config fields {sorted(unknown)} (checkpoint from a newer gmdf?)")
        return cls(**raw)


def clip_shape(cfg: GMDFConfig) -> dict[str, Any]:
    """open_clip's ``CLIP(**shape)`` arguments for ``cfg``'s backbone."""
    v, t = cfg.vision, cfg.text
    return {
        "embed_dim": cfg.embed_dim,
        "quick_gelu": cfg.quick_gelu,
        "vision_cfg": {
            "image_size": v.image_size,
            "patch_size": v.patch_size,
            "width": v.width,
            "layers": list(v.stage_layers) if v.kind == "resnet" else v.layers,
            "head_width": v.head_width,
            "mlp_ratio": v.mlp_ratio,
        },
        "text_cfg": {
            "context_length": t.context_length,
            "vocab_size": t.vocab_size,
            "width": t.width,
            "heads": t.heads,
            "layers": t.layers,
        },
    }


def scaled_agg_layers(depth: int) -> tuple[int, ...]:
    """Map the paper's layers 8-10 of 12 (1-based) onto a ``depth``-block tower, 0-based and distinct."""
    picked = sorted({min(depth - 1, max(1, math.ceil(k * depth / 12) - 1)) for k in (8, 9, 10)})
    return tuple(picked)


def _tiny() -> GMDFConfig:
    depth = 4
    return GMDFConfig(
        name="vit-tiny",
        embed_dim=64,
        vision=VisionConfig(image_size=64, patch_size=8, width=64, layers=depth, head_width=16),
        text=TextConfig(context_length=32, width=64, heads=4, layers=2),
        clip_model=None,
        clip_pretrained=None,
        expert_dim=8,
        domain_dim=8,
        agg_layers=scaled_agg_layers(depth),
        agg_adapter_dim=16,
        prompt_ctx=2,
        mim_vocab=64,
        mim_tokenizer_dim=8,
    )


def _cnn_small() -> GMDFConfig:
    return GMDFConfig(
        name="cnn-small",
        embed_dim=256,
        vision=VisionConfig(
            image_size=192, patch_size=16, width=32, head_width=64, kind="resnet", stage_layers=(2, 2, 2, 2)
        ),
        text=TextConfig(context_length=32, width=128, heads=4, layers=3),
        clip_model=None,
        clip_pretrained=None,
        expert_dim=16,
        domain_dim=16,
        agg_layers=(1, 2),
        agg_adapter_dim=32,
        prompt_ctx=4,
        mim_vocab=256,
    )


def _mobilenet_v2() -> GMDFConfig:
    """cnn-small's text tower, embedding and GM-DF widths on the pretrained MobileNetV2."""
    return _cnn_small().replace(
        name="mnv2",
        vision=VisionConfig(image_size=224, patch_size=16, width=32, kind="mobilenet", expert_from=6),
        clip_pretrained="nsfwjs",
        agg_layers=(9, 12),
    )


CONFIGS: dict[str, GMDFConfig] = {}
"""Registry of named model shapes (``register_config``)."""
CONFIG_HELP: dict[str, str] = {}
"""One line per registered config, for help texts."""
DEFAULT_LR: dict[str, float] = {}
"""Adam's rate delta (eq. 12) that ``gmdf train`` uses for a config unless ``--lr`` is given."""


def register_config(config: GMDFConfig, help: str, lr: float) -> GMDFConfig:
    """Add a named config with its help line and default learning rate: every fact of a config in one call, so
    none can be missing (a config without its own rate once trained at another tower's)."""
    if config.name in CONFIGS:
        raise ValueError(f"a config named {config.name!r} is already registered")
    CONFIGS[config.name], CONFIG_HELP[config.name], DEFAULT_LR[config.name] = config, help, lr
    return config


# CLIP's own towers fine-tune slowly, a pretrained MobileNetV2 at ImageNet fine-tuning rates, towers from random
# weights faster
register_config(GMDFConfig(name="vit-b-16", quick_gelu=True), "the paper's CLIP ViT-B/16, from pretrained CLIP", 3e-6)
register_config(_tiny(), "a toy ViT for tests", 1e-3)
register_config(_cnn_small(), "a CLIP-style ResNet tower sized for CPUs", 1e-3)
register_config(_mobilenet_v2(), "an ImageNet MobileNetV2 tower sized for CPUs", 3e-4)


def get_config(name: str) -> GMDFConfig:
    try:
        return CONFIGS[name]
    except KeyError:
        raise KeyError(f"unknown model config {name!r}; known: {', '.join(sorted(CONFIGS))}") from None
