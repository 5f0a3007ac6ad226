"""A checkpoint's header without torch: its metadata and its model config, read and checked (a compiled scan reads
them instead of loading any tensor; ``load_checkpoint`` before it builds the model)."""

from __future__ import annotations

import os

from safetensors import SafetensorError, safe_open

from ..errors import WeightsError
from ..model.bounds import check_config
from ..model.config import GMDFConfig

FORMAT = "gmdf"


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="numpy") as fh:
            meta = fh.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise WeightsError(f"{path} is not a readable safetensors file ({str(exc).splitlines()[0]})") from None
    if meta.get("format") != FORMAT or "config" not in meta:
        raise WeightsError(f"{path} is a safetensors file but not a gmdf checkpoint (no gmdf model config inside)")
    return meta


def read_config(path: str | os.PathLike[str], meta: dict[str, str]) -> GMDFConfig:
    """The model config of a checkpoint's metadata, its types and bounds checked first: nothing is built from an
    unchecked config."""
    try:
        check_config(meta["config"])
        return GMDFConfig.from_json(meta["config"])
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise WeightsError(f"{path}: unusable model config in metadata ({str(exc)[:200]})") from None
