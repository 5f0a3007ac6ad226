"""The one batch-predict loop: face crops (in memory, or read from a prepared cache) -> P(fake), in batches, by
GM-DF itself (torch) or its compiled graph (``gmdf_cli.runtime``, no torch)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Union

import cv2
import numpy as np

from ..data.faces import InputFormat, model_input
from ..errors import UsageError
from ..runtime.compiled import CompiledModel

if TYPE_CHECKING:
    from ..data.cache import Crop
    from ..model import GMDF

Scorer = Union["GMDF", CompiledModel]
"""What the engine scores faces with."""


def score_crops(model: Scorer, crops: Sequence[np.ndarray], domain: int = 0, batch_size: int = 64) -> list[float]:
    """P(fake) of BGR uint8 face crops (N, S, S, 3) under one domain index (0: the wildcard, as deployed), in
    batches of ``batch_size`` on the model's device and dtype. Each crop is first brought to the model's input as
    in training (:class:`InputFormat`, :func:`canonical_face`, with the config's ``face_px`` and ``face_jpeg``)."""
    fmt = InputFormat.of(model.config.vision)
    scores: list[float] = []
    for start in range(0, len(crops), batch_size):
        batch = model_input([fmt(c) for c in crops[start : start + batch_size]])
        scores.extend(_score(model, batch, domain))
    return scores


def _score(model: Scorer, batch: np.ndarray, domain: int) -> list[float]:
    if isinstance(model, CompiledModel):
        return model.score(batch, domain)
    import torch

    with torch.inference_mode():
        return model.score(torch.from_numpy(batch), domain)


def score_cached(
    model: Scorer, rows: Sequence[Crop], domain: int = 0, batch_size: int = 64
) -> tuple[list[Crop], list[float]]:
    """P(fake) of a prepared cache's crops. A crop that cannot be read is left out: returns the rows actually
    scored and their scores, in order."""
    kept: list[Crop] = []
    scores: list[float] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        images = [(r, cv2.imread(str(r.path), cv2.IMREAD_COLOR)) for r in chunk]
        readable = [(r, img) for r, img in images if img is not None]
        if not readable:
            raise UsageError(f"no readable crops in a batch (e.g. {chunk[0].path}): the cache is damaged")
        kept.extend(r for r, _ in readable)
        scores.extend(score_crops(model, [img for _, img in readable], domain, batch_size))
    return kept, scores
