"""Weights: the zoo (shipped and Hub files, verified by sha256), safetensors I/O, and what a file says of its own
use (``card``). The shipped default detector and its card are package data in ``shipped/``.

Names load on first use (PEP 562): the zoo and the card are read without importing torch."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .io import FORMAT, export_weights, load_checkpoint, load_weights, read_metadata, save_checkpoint
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

_IO = ("FORMAT", "export_weights", "load_checkpoint", "load_weights", "read_metadata", "save_checkpoint")
_ZOO = (
    "DEFAULT_HUB_FILENAME",
    "DEFAULT_WEIGHTS",
    "SHIPPED_DIR",
    "ZOO",
    "ResolvedWeights",
    "ZooEntry",
    "cached_path",
    "resolve_weights",
    "zoo",
)
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
    "read_metadata",
    "resolve_weights",
    "save_checkpoint",
    "zoo",
]


def __getattr__(name: str) -> Any:
    if name in _IO:
        return getattr(importlib.import_module(".io", __name__), name)
    if name in _ZOO:
        return getattr(importlib.import_module(".registry", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
