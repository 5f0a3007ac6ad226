"""What every job needs once: the face detector (with its fallback warning), the environment record, the time."""

from __future__ import annotations

import platform
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape

from .. import __version__
from ..data.faces import DetectorOptions, FaceDetector, open_face_detector


def warner(console: Console) -> Callable[[str], None]:
    """Warnings of the library parts (a face-detector fallback), one line each on ``console``."""
    return lambda text: console.print(f"[yellow]warning:[/] {escape(text)}", soft_wrap=True, highlight=False)


def face_detector(options: DetectorOptions, device: torch.device | str, console: Console) -> FaceDetector:
    """The face detector of a job that scores nothing (prepare, synth) or scores its own way (robustness)."""
    return open_face_detector(options, device, warner(console))


def environment() -> dict[str, Any]:
    import cv2
    import open_clip

    return {
        "gmdf": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "opencv": cv2.__version__,
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
    }


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
