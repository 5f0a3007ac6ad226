"""Weights: the zoo (shipped and Hub files, verified by sha256) and safetensors I/O. The shipped default detector
and its card are package data in ``shipped/``."""

from .io import FORMAT, export_weights, load_checkpoint, load_weights, read_metadata, save_checkpoint
from .zoo import (
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
