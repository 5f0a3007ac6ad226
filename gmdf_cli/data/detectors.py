"""The face detector registry and the options every command shares: plain data, cheap to import (the CLI builds
its choices and help from it); the detectors themselves are in ``faces``."""

from __future__ import annotations

from dataclasses import dataclass

from . import DETECTION_SIDE


@dataclass(frozen=True)
class DetectorEntry:
    """One registry entry: the name users type, what it is, and (RetinaFace) facexlib's model name and file."""

    name: str
    description: str
    retinaface: tuple[str, str] | None = None
    sha256: str | None = None
    """The published file's sha256, where known: a file that differs is refused."""


DETECTORS: dict[str, DetectorEntry] = {
    e.name: e
    for e in (
        DetectorEntry(
            "retinaface",
            "RetinaFace MobileNet-0.25 via facexlib (the default)",
            ("retinaface_mobile0.25", "detection_mobilenet0.25_Final.pth"),
            "2979b33ffafda5d74b6948cd7a5b9a7a62f62b949cef24e95fd15d2883a65220",
        ),
        DetectorEntry(
            "retinaface-resnet50",
            "RetinaFace ResNet-50 via facexlib (slower, finds smaller faces)",
            ("retinaface_resnet50", "detection_Resnet50_Final.pth"),
        ),
        DetectorEntry("mtcnn", "MTCNN from facenet-pytorch (weights inside the package; the offline fallback)"),
    )
}
"""The face detector registry: CLI choices and help come from here."""
RETINAFACE_FILES = {name: e.retinaface for name, e in DETECTORS.items() if e.retinaface}


@dataclass(frozen=True)
class DetectorOptions:
    """The face-detector options every command shares (``--detector``, ``--detector-weights``, ``--det-size``)."""

    name: str = "retinaface"
    weights: str | None = None
    det_size: int = DETECTION_SIDE
