"""RetinaFace's anchors and box decoding in numpy (facexlib's formulas, vectorised): shared by the torch network
of ``retinaface`` and the compiled graph of ``gmdf_cli.runtime``, which runs without torch."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

MOBILENET_CFG: dict[str, Any] = {
    "name": "mobilenet0.25",
    "min_sizes": [[16, 32], [64, 128], [256, 512]],
    "steps": [8, 16, 32],
    "variance": [0.1, 0.2],
    "in_channel": 32,
    "out_channel": 64,
}
"""facexlib's ``cfg_mnet``: the parts of it that inference reads."""
BGR_MEAN = (104.0, 117.0, 123.0)
"""The BGR mean RetinaFace subtracts from 0-255 pixels (facexlib's ``mean_tensor``)."""


def priors(cfg: dict[str, Any], height: int, width: int) -> np.ndarray:
    """facexlib's ``PriorBox`` anchors for an input (height, width): (P, 4) float32 as (cx, cy, w, h) in 0-1,
    ordered by level, then row, column and anchor size (computed in float64, as facexlib does)."""
    levels = []
    for step, sizes in zip(cfg["steps"], cfg["min_sizes"], strict=True):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        cy = (np.arange(rows, dtype=np.float64) + 0.5) * step / height
        cx = (np.arange(cols, dtype=np.float64) + 0.5) * step / width
        grid_y, grid_x = np.meshgrid(cy, cx, indexing="ij")
        per_size = [
            np.stack([grid_x, grid_y, np.full_like(grid_x, s / width), np.full_like(grid_y, s / height)], axis=-1)
            for s in sizes
        ]
        levels.append(np.stack(per_size, axis=2).reshape(-1, 4))
    return np.concatenate(levels).astype(np.float32)


def decode(loc: np.ndarray, anchors: np.ndarray, variances: list[float]) -> np.ndarray:
    """facexlib's ``decode`` in numpy: box offsets (P, 4) against anchors (P, 4) -> boxes (P, 4) as x1, y1, x2, y2
    in 0-1, float32."""
    centres = anchors[:, :2] + loc[:, :2] * np.float32(variances[0]) * anchors[:, 2:]
    sizes = anchors[:, 2:] * np.exp(loc[:, 2:] * np.float32(variances[1]))
    corners = centres - sizes / 2
    return np.concatenate([corners, corners + sizes], axis=1)
