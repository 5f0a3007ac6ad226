"""Weights: the zoo (shipped and Hub files, verified by sha256), safetensors I/O, and what a file says of its own
use (``card``). The shipped default detector and its card are package data in ``shipped/``.

Names load on first use (PEP 562): the zoo and the card are read without importing torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_getattr

if TYPE_CHECKING:
    from .header import FORMAT, read_config, read_metadata
    from .io import export_weights, load_checkpoint, load_weights, save_checkpoint
    from .registry import (
        DEFAULT_HUB_FILENAME,
        DEFAULT_WEIGHTS,
        SHIPPED_DIR,
        ZOO,
        ResolvedWeights,
        ZooEntry,
        cached_path,
        resolve_weights,
        zoo,
    )

_HOME = {
    **dict.fromkeys(["export_weights", "load_checkpoint", "load_weights", "save_checkpoint"], ".io"),
    **dict.fromkeys(["FORMAT", "read_config", "read_metadata"], ".header"),
    **dict.fromkeys(
        [
            "DEFAULT_HUB_FILENAME",
            "DEFAULT_WEIGHTS",
            "SHIPPED_DIR",
            "ZOO",
            "ResolvedWeights",
            "ZooEntry",
            "cached_path",
            "resolve_weights",
            "zoo",
        ],
        ".registry",
    ),
}
__all__ = [
    "DEFAULT_HUB_FILENAME",
    "DEFAULT_WEIGHTS",
    "FORMAT",
    "SHIPPED_DIR",
    "ZOO",
    "ResolvedWeights",
    "ZooEntry",
    "cached_path",
    "export_weights",
    "load_checkpoint",
    "load_weights",
    "read_config",
    "read_metadata",
    "resolve_weights",
    "save_checkpoint",
    "zoo",
]


__getattr__ = lazy_getattr(__name__, _HOME)
