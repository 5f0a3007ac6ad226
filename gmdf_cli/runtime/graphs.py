"""Where compiled graphs live and how they are named: one ONNX file per weights file (by its sha256), per gmdf
version, export format and OpenCV version, in ``$GMDF_COMPILED_DIR`` or ``$XDG_CACHE_HOME/gmdf/compiled``
(``~/.cache`` where that is unset)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..version import __version__

DIR_ENV = "GMDF_COMPILED_DIR"
"""The folder of compiled graphs, where not the user's cache."""
SWITCH_ENV = "GMDF_COMPILED"
"""``0`` turns compiled inference off: every scan runs torch, and nothing is compiled."""
OPSET = 17
FORMAT = 1
"""Bumped when what is exported changes: graphs of an older format are not used."""


def enabled() -> bool:
    return os.environ.get(SWITCH_ENV, "1").strip() != "0"


def cached_graphs() -> list[Path]:
    """The compiled graphs in the folder, of any weights and version."""
    folder = compiled_dir()
    return sorted(folder.glob("*.onnx")) if folder.is_dir() else []


def compiled_dir() -> Path:
    own = os.environ.get(DIR_ENV)
    if own:
        return Path(own).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "gmdf" / "compiled"


def graph_path(kind: str, sha256: str) -> Path:
    """The graph of ``kind`` (``gmdf``, ``retinaface``) compiled from the weights file with this sha256 and checked
    with this OpenCV (another OpenCV checks it anew)."""
    import cv2

    return compiled_dir() / f"{kind}-{sha256[:32]}-gmdf{__version__}-f{FORMAT}-opset{OPSET}-cv{cv2.__version__}.onnx"


def load_graph(path: Path) -> Any:
    """An ONNX graph as OpenCV's network, on the CPU, its default (raises ``cv2.error`` for a file OpenCV cannot
    read)."""
    import cv2

    return cv2.dnn.readNetFromONNX(str(path))
