"""`gmdf info`: versions, device, weights cache, and a model config's parameter budget."""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from typing import Any

import torch

from . import __version__
from .model import build_model, get_config
from .report.results import WeightsRow
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


def info_rows(report: dict[str, Any]) -> dict[str, str]:
    """The report as the rows of `gmdf info`'s table."""
    dev, w = report["device"], report["weights"]
    rows = {
        "python": report["python"],
        "platform": report["platform"],
        "device": f"{dev['type']} ({dev['name']}), {dev['threads']} threads",
        **{dist: ver or "missing" for dist, ver in report["dependencies"].items()},
        "hub cache": w["hub_cache"] + (" (offline)" if w["offline"] else ""),
        "shipped weights": w["shipped_dir"],
    }
    for name, entry in w["zoo"].items():
        rows[f"zoo: {name}"] = ("present " + entry["path"]) if entry["present"] else "not downloaded"
    if "model" in report:
        m = report["model"]
        p = m["parameters"]
        rows["model"] = f"{m['name']} ({m['image_size']} px, domains {', '.join(m['domains'])})"
        rows["parameters total"] = f"{p['total']:,}"
        rows["CLIP backbone"] = f"{p['backbone']:,} (image tower {p['image_backbone']:,})"
        rows["GM-DF adds"] = (
            f"{p['added']:,} = {m['added_fraction_of_backbone']:.2%} of the backbone, "
            f"{m['added_fraction_of_image_backbone']:.2%} of its image tower"
        )
    return rows


def weights_rows() -> list[WeightsRow]:
    """`gmdf weights list`: every zoo entry and where it lies on this machine."""
    return [
        WeightsRow(e.name, e.config, e.hub_location, e.sha256, e.description, str(p) if (p := cached_path(e)) else None)
        for e in zoo().values()
    ]
