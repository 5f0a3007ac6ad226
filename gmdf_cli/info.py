"""`gmdf info`: versions, device, weights cache, and a model config's parameter budget."""

from __future__ import annotations

import os
import platform
import re
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from .data.detectors import planned_detector
from .report.results import WeightsRow
from .runtime.graphs import cached_graphs, compiled_dir, enabled
from .version import __version__
from .weights import SHIPPED_DIR, cached_path, zoo

NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")

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
    "onnx",
)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def model_report(name: str) -> dict[str, Any]:
    """Parameter counts of a freshly built model of config ``name`` (random weights; nothing is downloaded)."""
    from .model import build_model, get_config

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


def _torch_device() -> dict[str, Any]:
    """The device as torch sees it (torch already loaded: `gmdf info --model` built a model)."""
    import torch

    cuda = torch.cuda.is_available()
    return {
        "type": "cuda" if cuda else "cpu",
        "name": torch.cuda.get_device_name(0) if cuda else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
    }


def _torch_cuda_build() -> bool:
    """Whether the installed torch is built with CUDA, read from its version.py without importing it."""
    import importlib.util

    spec = importlib.util.find_spec("torch")
    try:
        text = (Path(spec.origin).parent / "version.py").read_text() if spec and spec.origin else ""
    except OSError:
        return False
    return re.search(r"^cuda\b.*=\s*['\"]", text, re.M) is not None


def _probed_device() -> dict[str, Any]:
    """The device `--device auto` would pick, found without loading torch (seconds on a small machine): CUDA when
    torch is a CUDA build and the NVIDIA driver lists a GPU (Linux), else the CPU; threads as torch would use."""
    gpus = sorted(NVIDIA_GPUS.glob("*/information")) if NVIDIA_GPUS.is_dir() else []
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if gpus and _torch_cuda_build():
        found = re.search(r"^Model:\s*(.+)$", gpus[0].read_text(errors="replace"), re.M)
        return {"type": "cuda", "name": found[1].strip() if found else "NVIDIA GPU", "threads": threads}
    return {"type": "cpu", "name": platform.processor() or platform.machine(), "threads": threads}


def detector_report() -> dict[str, str]:
    """The face detector a command run without --detector options will use, and why."""
    name, why = planned_detector()
    return {"name": name, "why": why}


def system_report(model: str | None = None) -> dict[str, Any]:
    from huggingface_hub import constants

    model_part = model_report(model) if model else None
    report: dict[str, Any] = {
        "version": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "dependencies": {dist: _version(dist) for dist in DEPENDENCIES},
        "device": _torch_device() if "torch" in sys.modules else _probed_device(),
        "face_detector": detector_report(),
        "compiled": {"enabled": enabled(), "dir": str(compiled_dir()), "graphs": len(cached_graphs())},
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
    if model_part:
        report["model"] = model_part
    return report


def info_rows(report: dict[str, Any]) -> dict[str, str]:
    """The report as the rows of `gmdf info`'s table."""
    dev, w, c = report["device"], report["weights"], report["compiled"]
    rows = {
        "python": report["python"],
        "platform": report["platform"],
        "device": f"{dev['type']} ({dev['name']}), {dev['threads']} threads",
        "face detector": f"{report['face_detector']['name']} ({report['face_detector']['why']})",
        "compiled inference": (
            f"on for CPU scans, {c['graphs']} graphs in {c['dir']}" if c["enabled"] else "off (GMDF_COMPILED=0)"
        ),
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
