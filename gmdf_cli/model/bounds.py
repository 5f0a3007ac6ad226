"""A model config read from a file is untrusted data: every field is checked for its type and its bounds before any
tensor is allocated (a hostile or damaged config could otherwise divide by zero, ask for negative sizes, nest without
end or allocate tens of gigabytes)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_CONFIG_CHARS = 64 * 1024
MAX_PARAMETERS = 2_000_000_000
"""Larger models (over 8 GB in fp32) are refused: no GM-DF config comes near it (ViT-B/16 with text: 0.15 G)."""
DOMAIN_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")

INT_BOUNDS: dict[str, dict[str, tuple[int, int]]] = {
    "vision": {
        "image_size": (16, 1024),
        "patch_size": (1, 64),
        "width": (8, 4096),
        "layers": (1, 64),
        "head_width": (8, 4096),
        "face_px": (0, 4096),
        "face_jpeg": (0, 100),
    },
    "text": {
        "context_length": (4, 512),
        "vocab_size": (256, 100_000),
        "width": (8, 4096),
        "heads": (1, 64),
        "layers": (1, 48),
    },
    "": {
        "embed_dim": (8, 4096),
        "expert_dim": (1, 1024),
        "domain_dim": (1, 1024),
        "agg_adapter_dim": (1, 4096),
        "prompt_ctx": (1, 64),
        "mim_vocab": (2, 65_536),
        "mim_tokenizer_dim": (1, 1024),
        "mim_seed": (0, 2**31 - 1),
    },
}
FLOAT_BOUNDS = {("vision", "mlp_ratio"): (0.25, 8.0), ("", "tau_base"): (1e-6, 10.0), ("", "mim_ratio"): (0.0, 0.95)}


class ConfigError(ValueError):
    """The config is not one gmdf can build; the message is one line."""


def _int(value: Any, where: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{where} must be an integer, not {type(value).__name__}")
    if not low <= value <= high:
        raise ConfigError(f"{where} = {value} is outside {low}..{high}")
    return value


def _float(value: Any, where: str, low: float, high: float) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ConfigError(f"{where} must be a finite number")
    if not low <= value <= high:
        raise ConfigError(f"{where} = {value} is outside {low}..{high}")
    return float(value)


def _section(raw: dict[str, Any], name: str) -> dict[str, Any]:
    section = raw if not name else raw.get(name)
    if not isinstance(section, dict):
        raise ConfigError(f"config field {name} must be an object")
    for field, (low, high) in INT_BOUNDS[name].items():
        if field in section:
            _int(section[field], f"{name or 'config'}.{field}", low, high)
    for (owner, field), (lo, hi) in FLOAT_BOUNDS.items():
        if owner == name and field in section:
            _float(section[field], f"{name or 'config'}.{field}", lo, hi)
    return section


def _int_list(value: Any, where: str, most: int, low: int, high: int) -> list[int]:
    if not isinstance(value, list) or len(value) > most:
        raise ConfigError(f"{where} must be a list of at most {most} integers")
    return [_int(v, f"{where}[{i}]", low, high) for i, v in enumerate(value)]


def _text(value: Any, where: str, most: int = 200, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or len(value) > most:
        raise ConfigError(f"{where} must be text of at most {most} characters")


def _shapes(raw: dict[str, Any], vision: dict[str, Any], text: dict[str, Any]) -> None:
    width, head = vision.get("width", 768), vision.get("head_width", 64)
    kind = vision.get("kind", "vit")
    channels = width * 32 if kind == "resnet" else width  # a ResNet's last stage: 32 x width
    if kind != "mobilenet" and channels % head:  # a MobileNetV2's shape is fixed: no heads, no width
        raise ConfigError(f"the tower's width {channels} is not a multiple of vision.head_width {head}")
    if vision.get("image_size", 224) % vision.get("patch_size", 16):
        raise ConfigError("vision.image_size must be a multiple of vision.patch_size")
    if text.get("width", 512) % text.get("heads", 8):
        raise ConfigError("text.width must be a multiple of text.heads")
    ratio = vision.get("mlp_ratio", 4.0)
    vision_params = 13 * width * width * vision.get("layers", 12) * max(1.0, ratio / 4)
    stages = vision.get("stage_layers", [])
    vision_params += sum(stages) * 17 * (width * 2 ** len(stages)) ** 2
    text_params = 13 * text.get("width", 512) ** 2 * text.get("layers", 12) + text.get("vocab_size", 49408) * 512
    if vision_params + text_params > MAX_PARAMETERS:
        raise ConfigError(f"the config asks for about {(vision_params + text_params) / 1e9:.1f} G parameters")


def check_config(text: str) -> dict[str, Any]:
    """Parse and check a stored config (JSON text); returns the parsed object, or raises ``ConfigError``."""
    if not isinstance(text, str) or len(text) > MAX_CONFIG_CHARS:
        raise ConfigError(f"the config is not text of at most {MAX_CONFIG_CHARS} characters")
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError):
        raise ConfigError("the config is not valid JSON") from None
    if not isinstance(raw, dict):
        raise ConfigError("the config must be a JSON object")
    _section(raw, "")
    vision, text_section = _section(raw, "vision"), _section(raw, "text")
    _int_list(vision.get("stage_layers", []), "vision.stage_layers", 4, 1, 16)
    _text(vision.get("kind", "vit"), "vision.kind", 16)
    _int(vision.get("expert_from", 0), "vision.expert_from", 0, 63)
    _int_list(raw.get("agg_layers", []), "agg_layers", 16, 0, 63)
    domains = raw.get("domains")
    if not isinstance(domains, list) or not 1 <= len(domains) <= 32:
        raise ConfigError("domains must be a list of 1 to 32 names")
    for name in domains:
        if not isinstance(name, str) or not DOMAIN_NAME.match(name):
            raise ConfigError("a domain name must be 1-64 letters, digits, '_', '.' or '-'")
    _text(raw.get("name"), "name", 100)
    _text(raw.get("prompt_template", ""), "prompt_template", 300)
    _text(raw.get("clip_model"), "clip_model", 200, optional=True)
    _text(raw.get("clip_pretrained"), "clip_pretrained", 200, optional=True)
    if not isinstance(raw.get("quick_gelu", False), bool):
        raise ConfigError("quick_gelu must be true or false")
    _shapes(raw, vision, text_section)
    return raw
