"""The face detector registry and the options every command shares: plain data, cheap to import (the CLI builds
its choices and help from it); the detectors themselves are in ``retinaface`` and ``mtcnn``, chosen in ``faces``."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import WeightsError
from ..fileio import sha256_file
from . import DETECTION_SIDE

DETECTOR_ENV = "GMDF_DETECTOR_WEIGHTS"
"""The folder of RetinaFace's weights when ``--detector-weights`` is not given."""
RETINAFACE_MOBILENET_SHA256 = "2979b33ffafda5d74b6948cd7a5b9a7a62f62b949cef24e95fd15d2883a65220"
"""sha256 of facexlib's public release file detection_mobilenet0.25_Final.pth (v0.1.0), computed from that file."""


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
            RETINAFACE_MOBILENET_SHA256,
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


def facexlib_weights_dir() -> Path:
    """facexlib's own weights cache (``weights/`` in its package folder, where its download puts files), found
    without importing facexlib (which imports torch)."""
    spec = importlib.util.find_spec("facexlib")
    package = Path(spec.origin).parent if spec and spec.origin else Path("facexlib")
    return package / "weights"


def user_folders(weights_dir: str | Path | None) -> list[Path]:
    """The folders a user named for RetinaFace's weights: ``--detector-weights``, then ``$GMDF_DETECTOR_WEIGHTS``."""
    return [Path(p).expanduser() for p in (weights_dir, os.environ.get(DETECTOR_ENV)) if p]


def find_retinaface(name: str, weights_dir: str | Path | None = None) -> Path | None:
    """The folder holding detector ``name``'s RetinaFace file: the user's folders, then facexlib's cache; None when
    none holds it (facexlib's download is then tried) or ``name`` is no RetinaFace."""
    files = DETECTORS[name].retinaface
    if files is None:
        return None
    for folder in [*user_folders(weights_dir), facexlib_weights_dir()]:
        if (folder / files[1]).is_file():
            return folder
    return None


def retinaface_fix(name: str) -> str:
    """How to give gmdf RetinaFace's weights offline: the options and the file (with its sha256, where known)."""
    entry = DETECTORS[name]
    filename = entry.retinaface[1] if entry.retinaface else ""
    digest = f" (sha256 {entry.sha256})" if entry.sha256 else ""
    return f"--detector-weights DIR or ${DETECTOR_ENV}=DIR, DIR holding {filename}{digest}"


def fallback_reason(name: str, weights_dir: str | Path | None) -> str:
    """The one line said when RetinaFace's weights are neither found nor downloadable and MTCNN runs instead: the
    folders the user named, never a path inside the installed packages, and the fix."""
    named = user_folders(weights_dir)
    where = f" in {', '.join(str(f) for f in named)}" if named else ""
    return f"using MTCNN: RetinaFace weights not found{where} or downloaded; fix: {retinaface_fix(name)}"


def planned_detector(name: str = "retinaface", weights_dir: str | Path | None = None) -> tuple[str, str]:
    """Which face detector a command will run, and why, found without loading anything (for `gmdf info`)."""
    folder = find_retinaface(name, weights_dir)
    if DETECTORS[name].retinaface is None:
        return name, "asked for"
    if folder is not None:
        return name, f"weights in {folder}"
    return "mtcnn", f"RetinaFace weights not found: a download is tried first; fix: {retinaface_fix(name)}"


def verified_retinaface(name: str, weights_dir: Path) -> tuple[Path, str]:
    """The RetinaFace weights file of ``name`` in ``weights_dir`` and its sha256, refused (``WeightsError``) when it
    is not the published file: the check every way of running RetinaFace makes before it loads anything."""
    filename = RETINAFACE_FILES[name][1]
    path = weights_dir / filename
    digest = sha256_file(path)
    known = DETECTORS[name].sha256
    if known is not None and digest != known:
        raise WeightsError(
            f"{path} is not the published {filename} (sha256 {digest[:16]}..., expected {known[:16]}...): "
            "refusing to load it"
        )
    return path, digest
