"""The `gmdf weights export` job: a lean copy of a checkpoint for shipping, with its decision threshold, uncertainty
band (given, or calibrated on a prepared cache's validation videos) and model card in the metadata."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from ..analysis.metrics import video_level
from ..data.cache import read_index
from ..engine import score_cached
from ..errors import UsageError
from ..progress import progress_bar
from ..weights import ResolvedWeights, export_weights, load_weights
from ..weights.card import DEFAULT_RATE, calibrate


@dataclass
class ExportRequest:
    source: str
    target: Path
    half: bool = True
    text_tower: bool = False
    threshold: float | None = None
    calibrate: Path | None = None
    """A prepared cache whose ``split`` videos set the threshold and the band."""
    split: str = "val"
    rate: float = DEFAULT_RATE
    max_fpr: float | None = None
    """With ``calibrate``: the threshold lets at most this share of the split's real videos through as fake
    (None: the equal-error point)."""
    max_uncertain: float | None = None
    """With ``calibrate``: the band is narrowed until at most this share of the split's videos fall inside it."""
    card: Path | None = None
    """A JSON file with the card's fields (see ``gmdf_cli.weights.card``)."""


def calibrated(
    source: str,
    cache: Path,
    split: str,
    rate: float,
    console: Console,
    max_fpr: float | None = None,
    max_uncertain: float | None = None,
) -> tuple[float, list[float]]:
    """Threshold and band from the video-level scores (wildcard domain, as deployed) of a cache's ``split``."""
    rows = [r for r in read_index(cache) if r.split == split]
    if not rows:
        raise UsageError(f"no {split} crops in {cache} to calibrate on")
    model, _, _ = load_weights(source, device="cpu")
    with progress_bar(console, "crops") as progress:
        task = progress.add_task("calibrating", total=len(rows))
        kept, scores = [], []
        for start in range(0, len(rows), 64):
            chunk_kept, chunk_scores = score_cached(model, rows[start : start + 64])
            kept.extend(chunk_kept)
            scores.extend(chunk_scores)
            progress.advance(task, len(rows[start : start + 64]))
    _, labels, video_scores = video_level([f"{r.domain}/{r.video_id}" for r in kept], [r.label for r in kept], scores)
    return calibrate(labels, video_scores, rate, max_fpr, max_uncertain)


def run_export(request: ExportRequest, console: Console) -> tuple[ResolvedWeights, dict[str, Any]]:
    card = None
    if request.card is not None:
        try:
            card = json.loads(request.card.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read the card {request.card}: {exc}") from None
    threshold, band = request.threshold, None
    if request.max_fpr is not None and request.calibrate is None:
        raise UsageError("--max-fpr sets the threshold from --calibrate's validation scores: give --calibrate too")
    if request.max_uncertain is not None and request.calibrate is None:
        raise UsageError("--max-uncertain sets the band from --calibrate's validation scores: give --calibrate too")
    if request.calibrate is not None:
        if threshold is not None:
            raise UsageError("give --threshold or --calibrate, not both")
        # Calibrate the file as shipped (fp16 rounds the weights), so its own scores meet the stated rates; the
        # copy is made aside, so a failed calibration leaves whatever TARGET held untouched.
        with tempfile.TemporaryDirectory(prefix="gmdf-export-") as aside:
            shipped = export_weights(
                request.source, Path(aside) / "calibrating.safetensors", request.half, request.text_tower
            )
            threshold, band = calibrated(
                str(shipped.path),
                request.calibrate,
                request.split,
                request.rate,
                console,
                request.max_fpr,
                request.max_uncertain,
            )
    done = export_weights(
        request.source, request.target, request.half, request.text_tower, threshold=threshold, band=band, card=card
    )
    return done, {"threshold": threshold, "band": band, "max_fpr": request.max_fpr}
