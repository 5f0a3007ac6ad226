"""`gmdf info`: versions, device, weights cache, and a model config's parameter budget."""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from typing import Any

import torch

from . import __version__
from .model import build_model, get_config
from .weights import SHIPPED_DIR, cached_path, zoo

DEPENDENCIES = (
    "torch",
    "torchvision",
    "open_clip_torch",
    "click",
    "rich",
    "opencv-python",
    "facexlib",
    "grad-cam",
    "safetensors",
    "huggingface-hub",
    "scikit-learn",
    "matplotlib",
    "numpy",
)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def model_report(name: str) -> dict[str, Any]:
    """Parameter counts of a freshly built model of config ``name`` (random weights; nothing is downloaded)."""
    cfg = get_config(name)
    counts = build_model(cfg).parameter_counts()
    return {
        "name": name,
        "domains": list(cfg.domains),
        "image_size": cfg.vision.image_size,
        "parameters": counts,
        "added_fraction_of_backbone": counts["added"] / counts["backbone"],
        "added_fraction_of_image_backbone": counts["added"] / counts["image_backbone"],
    }


def system_report(model: str | None = None) -> dict[str, Any]:
    from huggingface_hub import constants

    cuda = torch.cuda.is_available()
    report: dict[str, Any] = {
        "version": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "dependencies": {dist: _version(dist) for dist in DEPENDENCIES},
        "device": {
            "type": "cuda" if cuda else "cpu",
            "name": torch.cuda.get_device_name(0) if cuda else platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
        },
        "weights": {
            "hub_cache": constants.HF_HUB_CACHE,
            "offline": bool(constants.HF_HUB_OFFLINE),
            "shipped_dir": str(SHIPPED_DIR),
            "zoo": {
                name: {
                    "config": entry.config,
                    "hub": entry.hub_location,
                    "present": (path := cached_path(entry)) is not None,
                    "path": str(path) if path else None,
                }
                for name, entry in zoo().items()
            },
        },
    }
    if model:
        report["model"] = model_report(model)
    return report
