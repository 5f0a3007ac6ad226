"""gmdf: tell whether the faces in a video or image are deepfakes (GM-DF, ACM MM 2025).

``from gmdf_cli import Detector`` is the Python API (loaded on first use, so the CLI starts without torch)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .version import __version__

if TYPE_CHECKING:
    from .api import Detector

__all__ = ["Detector", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Detector":
        from .api import Detector

        return Detector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
