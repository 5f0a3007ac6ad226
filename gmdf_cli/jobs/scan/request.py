"""What a scan is asked to do (``ScanRequest``), what every scanner tells before the first file (``RunInfo``), and
the detector opened with the request's settings (in this process, in each worker, on Ray's driver)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from ...data.detectors import DetectorOptions
from ...data.media import Sampling
from ...engine.keyframes import DETECT_EVERY
from ...report.results import DetectorInfo, ModelInfo
from ...version import __version__
from ...weights import DEFAULT_WEIGHTS
from ..common import noter, warner

if TYPE_CHECKING:  # the model and its torch load when a scan starts, after every usage check
    from ...api import Detector


@dataclass
class ScanRequest:
    paths: list[str]
    weights: str | None = None
    sampling: Sampling = field(default_factory=Sampling)
    batch_size: int = 16
    threshold: float | None = None
    detector: DetectorOptions = field(default_factory=DetectorOptions)
    max_faces: int = 8
    detect_every: int = DETECT_EVERY
    """Faces are detected on every K-th sampled video frame (and on scene cuts and lost faces), carried between."""
    out: Path | None = None
    csv: Path | None = None
    heatmaps: bool = False
    report_faces: int = 8
    """With ``out``: the most suspicious faces per file shown in the report (with heatmaps if asked)."""
    precision: str = "fp32"
    device: str = "auto"
    files_from: str | None = None
    """Where ``listed`` came from (a file name, ``-`` for stdin), for the record."""
    listed: list[str] = field(default_factory=list, repr=False)
    """Paths read from ``--files-from``, one per line; missing ones become error rows, never stop the scan."""
    workers: int = 1
    """Processes sharing the work on this machine (each with its own model), or scoring actors on Ray."""
    threads: int | None = None
    """CPU threads for the model in each process (None: the cores shared out between the workers)."""
    engine: str = "local"
    address: str | None = None
    """With ``engine="ray"``: the cluster (``auto``, ``ray://host:10001``); None starts a local Ray instance."""
    parquet: bool = False
    as_json: bool = False
    """The whole report is printed at the end (so kept in memory: up to ``REPORT_MAX_FILES`` files)."""

    def settings(self, info: RunInfo) -> dict[str, Any]:
        """Everything that changes a file's result: a rerun into the same ``out`` takes finished files over only
        when these are the same, and is refused otherwise. How the work is shared (workers, engine) is not here:
        it does not change a row."""
        det = info.detector
        return {
            "gmdf": __version__,
            "model_sha256": info.model.sha256,
            "detector": [det.name, det.sha256, det.max_side],
            "sampling": asdict(self.sampling),
            "max_faces": self.max_faces,
            "detect_every": self.detect_every,
            "threshold": info.threshold,
            "band": info.band,
            "precision": self.precision,
        }

    def parameters(self, threshold: float, detector_ran: str) -> dict[str, Any]:
        """The settings as they took effect: the threshold used, and the face detector that really ran (with the
        one asked for beside it when a fallback replaced it)."""
        params = asdict(self)
        del params["listed"], params["as_json"]
        params.update(sampling=self.sampling.describe(), threshold=threshold)
        asked = params.pop("detector")
        params.update(detector=detector_ran, detector_weights=asked["weights"], det_size=asked["det_size"])
        if detector_ran != asked["name"]:
            params["detector_requested"] = asked["name"]
        return {k: str(v) if isinstance(v, Path) else v for k, v in params.items()}

    def keep_crops(self) -> int:
        return self.report_faces if self.out is not None else 0


@dataclass
class RunInfo:
    """What every scanner tells before the first file: the model and face detector that run, and the decision rule."""

    model: ModelInfo
    detector: DetectorInfo
    threshold: float
    band: list[float] | None
    image_size: int
    """The model's input side (face crops are cut to it)."""

    @classmethod
    def of(cls, detector: Detector) -> RunInfo:
        band = list(detector.options.band) if detector.options.band else None
        size = detector.model.config.vision.image_size
        return cls(detector.model_info(), detector.detector_info(), detector.threshold, band, size)


def use_threads(threads: int | None) -> None:
    """This process's CPU threads (None: the libraries' own choice): OpenCV's (decoding, and a compiled scan's model
    and face detector) and, where a torch model was loaded, torch's. Called once the detector is open, so that a
    compiled scan never imports torch for it."""
    if not threads:
        return
    import cv2

    cv2.setNumThreads(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def open_detector(request: ScanRequest, console: Console, warn: Callable[[str], None] | None = None) -> Detector:
    from ...api import Detector

    return Detector.from_pretrained(
        request.weights or DEFAULT_WEIGHTS,
        device=request.device,
        precision=request.precision,
        threshold=request.threshold,
        sampling=request.sampling,
        batch_size=request.batch_size,
        max_faces=request.max_faces,
        detect_every=request.detect_every,
        keep_crops=request.keep_crops(),
        face_detector=request.detector,
        warn=warn or warner(console),
        compiled=not request.heatmaps and request.engine == "local",  # Grad-CAM needs gradients; Ray's actors torch
        note=noter(console),
    )
