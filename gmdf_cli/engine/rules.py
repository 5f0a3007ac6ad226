"""The scoring rule, in one place: a face gets P(fake) from the model; a frame scores as its most suspicious face; a
file (a video, a still) as the mean of its frame scores (DeepfakeBench's video convention), with the median and the
maximum reported beside it; a track as the mean of its faces. Fake when score >= threshold, except inside the
weights' uncertainty band (``low <= score < high``, set from validation scores when the weights were exported):
there the verdict is ``uncertain``."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Literal


def frame_score(face_scores: Sequence[float]) -> float | None:
    """A frame's score: its most suspicious face's; None without a face."""
    return max(face_scores) if face_scores else None


def file_score(frame_scores: Sequence[float]) -> float:
    """A file's (or a video's) score: the mean of its frame scores."""
    return float(statistics.fmean(frame_scores))


def file_spread(frame_scores: Sequence[float]) -> tuple[float, float]:
    """The median and the maximum of a file's frame scores, reported beside the mean."""
    return float(statistics.median(frame_scores)), float(max(frame_scores))


Band = tuple[float, float]


def verdict(score: float, threshold: float, band: Band | None = None) -> Literal["real", "fake", "uncertain"]:
    if band is not None and band[0] <= score < band[1]:
        return "uncertain"
    return "fake" if score >= threshold else "real"
