"""What every job needs once: the face detector (with its fallback warning), the environment record, the time."""

from __future__ import annotations

import json
import platform
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from ..data.detectors import DetectorOptions
from ..errors import UsageError
from ..fileio import write_text_atomic
from ..terminal import plain
from ..version import __version__

if TYPE_CHECKING:  # torch loads with the first detector or model, not with this module
    import torch

    from ..data.faces import FaceDetector


def warner(console: Console) -> Callable[[str], None]:
    """Warnings of the library parts (a face-detector fallback), one line each on ``console``."""
    return lambda text: console.print(f"[yellow]warning:[/] {plain(text)}", soft_wrap=True, highlight=False)


def noter(console: Console) -> Callable[[str], None]:
    """What the library parts say of their own work (compiling a model once), one dim line each on ``console``."""
    return lambda text: console.print(f"[dim]{plain(text)}[/]", soft_wrap=True, highlight=False)


def face_detector(options: DetectorOptions, device: torch.device | str, console: Console) -> FaceDetector:
    """The face detector of a job that scores nothing (prepare, synth) or scores its own way (robustness)."""
    from ..data.faces import open_face_detector

    return open_face_detector(options, device, warner(console))


def environment() -> dict[str, Any]:
    """The versions and machine a result was made with (open_clip's, and torch's where a compiled scan did not
    import it, read from package metadata: importing them takes seconds a scan may never need). ``threads``:
    torch's CPU threads, or OpenCV's where torch is not loaded."""
    from importlib.metadata import version

    import cv2

    torch = sys.modules.get("torch")
    return {
        "gmdf": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__ if torch is not None else version("torch"),
        "open_clip": version("open_clip_torch"),
        "opencv": cv2.__version__,
        "platform": platform.platform(),
        "threads": torch.get_num_threads() if torch is not None else cv2.getNumThreads(),
    }


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def record_settings(path: Path, settings: dict[str, Any], refusal: str) -> None:
    """A job's output folder keeps what one set of settings made: record ``settings`` at ``path`` the first time; a
    later run with other settings is refused (``refusal`` is the message, followed by the keys that differ), so
    results of two recipes are never mixed."""
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if old != settings:
            changed = sorted(k for k in settings if not isinstance(old, dict) or old.get(k) != settings[k])
            raise UsageError(f"{refusal} (differing: {', '.join(changed) or 'unreadable record'})")
        return
    write_text_atomic(path, json.dumps(settings, indent=2))
