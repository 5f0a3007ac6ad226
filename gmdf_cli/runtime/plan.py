"""Which way a scan runs, decided before anything heavy loads: compiled graphs run by OpenCV (no torch), or torch.

The compiled way is taken for fp32 scans on the CPU (``--device cpu``, or ``auto`` on a machine with no GPU driver)
of a model kind OpenCV is trusted with, with RetinaFace MobileNet-0.25 as the face detector, its weights found
locally. The first such scan loads torch, compiles (``export``) and goes on with the graphs; each later one loads
only the graphs."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2

from ..data.detectors import DetectorOptions, find_retinaface, verified_retinaface
from ..errors import one_line
from ..model.config import GMDFConfig
from ..weights.header import read_config, read_metadata
from ..weights.registry import ResolvedWeights
from .compiled import CompiledModel, CompiledRetinaFace
from .graphs import enabled, graph_path

if TYPE_CHECKING:
    from ..model import GMDF

KINDS = ("mobilenet",)
"""Image towers compiled: the default MobileNetV2 (OpenCV runs it 3x faster than torch's CPU kernels; a ViT's scan
time is its model's, not torch's start-up)."""


def accelerator_present() -> bool:
    """Whether ``--device auto`` could find a GPU here, judged without importing torch: NVIDIA's or AMD's kernel
    driver, or NVIDIA's ``nvidia-smi`` on the PATH (Windows has no /proc), unless ``CUDA_VISIBLE_DEVICES`` hides
    every GPU; or Apple silicon (MPS). Where in doubt it says yes: torch then decides."""
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1")
    drivers = (Path("/proc/driver/nvidia/version"), Path("/dev/kfd"))
    gpu = any(p.exists() for p in drivers) or shutil.which("nvidia-smi") is not None
    return (gpu and not hidden) or (sys.platform == "darwin" and platform.machine() == "arm64")


def on_cpu(device: Any) -> bool:
    spec = str(device).strip().lower()
    return spec == "cpu" or (spec == "auto" and not accelerator_present())


@dataclass
class Plan:
    """A compiled scan's weights (resolved, header read) and the graphs it runs, present or still to compile."""

    weights: ResolvedWeights
    metadata: dict[str, str]
    config: GMDFConfig
    model_graph: Path
    detector_graph: Path
    detector_info: dict[str, Any]

    def ready(self) -> bool:
        return self.model_graph.is_file() and self.detector_graph.is_file()

    def refused(self) -> bool:
        """A graph failed its check against torch once: this model or detector stays on torch (no second try)."""
        return _refusal(self.model_graph).exists() or _refusal(self.detector_graph).exists()

    def open(self, max_side: int) -> tuple[CompiledModel, CompiledRetinaFace] | None:
        """The compiled model and face detector, or None where OpenCV cannot read a graph: a damaged cache, whose
        graphs are then removed (the torch way compiles them anew)."""
        try:
            model = CompiledModel(self.config, self.model_graph)
            faces = CompiledRetinaFace(self.detector_graph, dict(self.detector_info), max_side)
        except cv2.error:
            self.model_graph.unlink(missing_ok=True)
            self.detector_graph.unlink(missing_ok=True)
            return None
        return model, faces

    def compile(self, model: GMDF, detector_net: Any, note: Callable[[str], None]) -> bool:
        """Export the loaded torch model and RetinaFace network where their graphs are missing (torch, once). False,
        said in a ``note``, where a graph is not made: OpenCV's run of it differs from torch's or torch's exporter
        fails (both remembered: this model is not compiled again), or the folder cannot be written; the scan then
        runs torch, as it would without compiling."""
        from .export import compile_model, compile_retinaface

        steps = (
            (self.model_graph, lambda: compile_model(model, self.model_graph)),
            (self.detector_graph, lambda: compile_retinaface(detector_net, self.detector_graph)),
        )
        missing = [(graph, make) for graph, make in steps if not graph.is_file()]
        if missing:
            note(f"compiling {self.weights.name} and RetinaFace for OpenCV, once: later CPU scans start without torch")
        for graph, make in missing:
            why = "OpenCV's outputs differ from torch's"
            try:
                kept = make()
            except OSError as exc:
                note(f"cannot write compiled graphs to {graph.parent} ({exc.strerror or exc}): this scan runs torch")
                return False
            except ImportError as exc:  # the onnx package missing: compiling may work once it is installed
                note(f"cannot compile ({one_line(exc)}): this scan runs torch")
                return False
            except Exception as exc:  # an operation torch's exporter or OpenCV cannot take: torch runs this model
                kept, why = False, f"torch's ONNX exporter failed ({one_line(exc)})"
            if not kept:
                with contextlib.suppress(OSError):
                    _refusal(graph).touch()
                note(f"{graph.name}: {why}; this model runs torch")
                return False
        return True


def _refusal(graph: Path) -> Path:
    return graph.with_suffix(".refused")


def plan(weights: ResolvedWeights, device: Any, precision: str, options: DetectorOptions) -> Plan | None:
    """The compiled plan of a scan of these weights, or None where it runs torch (see the module's conditions)."""
    if not enabled() or precision != "fp32" or options.name != "retinaface" or not on_cpu(device):
        return None
    meta = read_metadata(weights.path)
    config = read_config(weights.path, meta)
    if config.vision.kind not in KINDS:
        return None
    folder = find_retinaface(options.name, options.weights)
    if folder is None:
        return None
    path, digest = verified_retinaface(options.name, folder)
    info = {"name": options.name, "weights": str(path), "sha256": digest, "max_side": options.det_size, "device": "cpu"}
    return Plan(weights, meta, config, graph_path("gmdf", weights.sha256), graph_path("retinaface", digest), info)
