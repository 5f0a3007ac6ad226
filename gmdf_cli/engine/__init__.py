"""The one inference path: decode -> detect -> track -> crop -> batch-score -> aggregate.

``Engine`` runs it over many files at once (faces batched across frames and files), with hooks where robustness
corrupts frames or crops (``Job``) and a detection-only stage for the commands that save crops instead of scoring
them (``Engine.detect_frames``: prepare, synth). ``score_crops`` is the one batch-predict loop, ``rules`` the one
scoring rule. The engine knows no command line and no report format.

Names load on first use (PEP 562), so ``engine.rules`` costs no torch import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_getattr

if TYPE_CHECKING:
    from .batching import score_cached, score_crops
    from .pipeline import DetectedFrame, Engine, EngineOptions, Job
    from .threads import in_order_threads

_HOME = {
    "score_cached": ".batching",
    "score_crops": ".batching",
    "DetectedFrame": ".pipeline",
    "Engine": ".pipeline",
    "EngineOptions": ".pipeline",
    "Job": ".pipeline",
    "in_order_threads": ".threads",
}
__all__ = [
    "DetectedFrame",
    "Engine",
    "EngineOptions",
    "Job",
    "in_order_threads",
    "score_cached",
    "score_crops",
]


__getattr__ = lazy_getattr(__name__, _HOME)
