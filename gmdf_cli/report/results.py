"""Typed results: the only schema. ``report.json``, ``--json``, CSV, the terminal tables and the HTML report are all
renderings of these objects; ``schema.json`` beside this file is generated from them (``python -m
gmdf_cli.report.schema``) and a test keeps the two equal.

Plain data only (no torch): a field marked ``internal`` is kept in memory for the renderers (crops for heatmaps) and
is never written out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

Verdict = Literal["real", "fake", "uncertain", "no-face", "error"]
"""fake: score >= threshold; real: below it; uncertain: inside the weights' uncertainty band ``[low, high)`` around
the threshold (set from validation scores when the weights were exported), where the detector's validation errors
are too frequent to call either way; no-face: no face in any frame; error: the file could not be read."""
INTERNAL = {"internal": True}
"""Field metadata: kept in memory for the renderers, never serialised nor in the schema."""


# -- scan ----------------------------------------------------------------------------------------------------------
@dataclass
class FaceResult:
    """One detected face: its box (x1, y1, x2, y2 in frame pixels), track, P(fake) and the detector's confidence."""

    box: list[float]
    track: int
    score: float | None = None
    detector_score: float = 0.0


@dataclass
class FrameResult:
    """One sampled frame; ``score`` is its most suspicious face's (None without a face)."""

    index: int
    time: float
    faces: list[FaceResult] = field(default_factory=list)
    score: float | None = None


@dataclass
class TrackResult:
    """One face followed across frames: the mean score of its faces."""

    track: int
    score: float
    faces: int
    verdict: Verdict


@dataclass
class MediaInfo:
    width: int = 0
    height: int = 0
    fps: float = 0.0


@dataclass
class SuspiciousFace:
    """A kept face crop (the most suspicious of a file), for heatmaps and the report; in memory only."""

    score: float
    frame: int
    time: float
    track: int
    box: list[float]
    crop: np.ndarray  # (S, S, 3) BGR uint8, the model's input size
    display: np.ndarray  # (224, 224, 3) BGR uint8, for people


C2paState = Literal["none", "present", "remote", "unreadable", "not-read"]
"""none: no content credentials in the file; present: an embedded manifest, read and validated; remote: the file
points to a manifest on the web, not fetched (gmdf makes no network request for a file it scans); unreadable: a
manifest is there but could not be read (``notes`` says why); not-read: not looked for (a format that cannot carry
them, or c2pa-python unavailable)."""


@dataclass
class Provenance:
    """What the file says of its own origin: C2PA content credentials and traces that generators and editors leave
    in metadata. Evidence beside the detector's, never part of its score or verdict; every text comes from the file
    (anyone can write it) and is bounded to one line of at most 200 characters."""

    c2pa: C2paState = "none"
    claim_generator: str | None = None
    """The software that made the active manifest, as the manifest names it."""
    digital_source_type: str | None = None
    """The IPTC digital source type the manifest's actions declare (the code's last part: ``trainedAlgorithmicMedia``,
    ``compositeWithTrainedAlgorithmicMedia``, ``algorithmicMedia``, ``digitalCapture``, ...)."""
    generated: bool | None = None
    """True when that source type says an algorithm made the media (generative AI, or other algorithmic or synthetic
    media); False for another declared type; None when none is declared."""
    actions: list[str] = field(default_factory=list)
    """The active manifest's actions (``c2pa.created``, ``c2pa.opened``, ``c2pa.color_adjustments``, ...)."""
    validation: list[str] = field(default_factory=list)
    """C2PA validation status codes: ``assertion.dataHash.mismatch`` when the file changed after signing,
    ``signingCredential.untrusted`` when the signer is on no trust list gmdf holds (it loads none)."""
    traces: list[str] = field(default_factory=list)
    """Metadata naming software or generation settings: EXIF Software, XMP CreatorTool and DigitalSourceType, PNG
    text such as Stable Diffusion's ``parameters``, a video's encoder tag; each ``where key: value``."""
    notes: list[str] = field(default_factory=list)
    """What could not be read, in a few words (a remote manifest not fetched, an unreadable manifest)."""
    summary: str = "none"
    """A few words for tables: ``C2PA: AI-generated``, ``C2PA: tampered``, ``C2PA: remote``, ``none``, ..."""

    def tampered(self) -> bool:
        """The credentials say the file (or its manifest) changed after it was signed: a ``*.mismatch`` code."""
        return self.c2pa == "present" and any(code.endswith(".mismatch") for code in self.validation)


@dataclass
class FileResult:
    """One input file: its verdict (``fake`` when the score reaches the threshold, ``real`` below it, ``uncertain``
    inside the weights' uncertainty band [low, high), ``no-face`` without any face, ``error`` when unreadable), the
    file score (the mean of its frame scores, median and max beside it), every frame and face, and its tracks."""

    path: Path
    sha256: str | None = None
    size: int | None = None
    """Bytes, and ``mtime_ns`` the modification time (ns since the epoch) when the file was read: a rerun takes a
    finished file over without reading it again when both are unchanged (else when its sha256 is)."""
    mtime_ns: int | None = None
    kind: str = "unknown"
    verdict: Verdict = "error"
    score: float | None = None
    score_median: float | None = None
    score_max: float | None = None
    threshold: float = 0.5
    band: list[float] | None = None
    """The uncertainty band [low, high) of the weights, None when they carry none or --threshold overrides it."""
    frames_scanned: int = 0
    frames_with_faces: int = 0
    faces_found: int = 0
    seconds: float = 0.0
    media: MediaInfo = field(default_factory=MediaInfo)
    frames: list[FrameResult] = field(default_factory=list)
    tracks: list[TrackResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    provenance: Provenance | None = None
    """Content credentials and metadata traces, beside the score (never in it); None where they were not read (an
    unreadable file, or a row written before gmdf read them)."""
    frames_requested: int = field(default=0, metadata=INTERNAL, repr=False)
    suspicious: list[SuspiciousFace] = field(default_factory=list, metadata=INTERNAL, repr=False, compare=False)


@dataclass
class ModelCard:
    """The model card in brief, carried in the weights' metadata (``card``), so any model brings its own."""

    caveat: str
    """One line, shown under the scan table and in the report's banner."""
    trained_on: str
    validation: str
    weaknesses: list[str]
    intended_use: str


@dataclass
class ModelInfo:
    name: str
    sha256: str
    source: str
    path: str
    config: str
    domains: list[str]
    trained: dict[str, Any] | None = None
    """The training record stored in the weights (request, step, epoch, best validation AUC), without the folders
    of the machine that trained it."""
    card: ModelCard | None = None
    runtime: str = "torch"
    """What ran the model: ``torch``, or ``opencv-dnn`` (its compiled graph, ``gmdf_cli.runtime``)."""


@dataclass
class DetectorInfo:
    """The face detector that really ran (after any fallback), with the sha256 of its weights."""

    name: str
    weights: str
    sha256: str
    max_side: int
    device: str
    fallback_reason: str | None = None


@dataclass
class ScanReport:
    """A whole scan: provenance, parameters and every file's result (``report.json``, ``gmdf scan --json``)."""

    version: str
    started: str
    model: ModelInfo
    detector: DetectorInfo
    parameters: dict[str, Any]
    environment: dict[str, Any]
    finished: str | None = None
    interrupted: bool = False
    files: list[FileResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)
    """The inputs left without a result when the scan was interrupted (a rerun into the same ``--out`` scans them);
    empty for a scan that ran to its end, and for scans too large to keep a report (over ``REPORT_MAX_FILES``)."""


# -- eval ----------------------------------------------------------------------------------------------------------
@dataclass
class DomainMetrics:
    n_real: int
    n_fake: int
    acc: float | None
    auc: float | None
    ap: float | None
    eer: float | None


@dataclass
class LevelMetrics:
    """Metrics of one level (frame or video) per target domain, and M_EER over them (journal eq. 13)."""

    level: Literal["frame", "video"]
    domains: dict[str, DomainMetrics]
    m_eer: float | None
    p_real: float | None


@dataclass
class BothLevels:
    """``gmdf eval --level both``: frame- and video-level metrics."""

    frame: LevelMetrics
    video: LevelMetrics
    level: Literal["both"] = "both"


EvalReport = LevelMetrics | BothLevels


@dataclass
class ProtocolPart:
    """One part of a paper protocol: trained on ``sources``, tested on ``targets``."""

    sources: list[str]
    targets: list[str]
    weights: str
    frame: LevelMetrics
    video: LevelMetrics


# -- robustness ----------------------------------------------------------------------------------------------------
@dataclass
class SweepMetrics:
    auc: float | None
    acc: float | None
    n: int


@dataclass
class RobustnessReport:
    """AUC/ACC clean and per corruption and severity level; ``average`` per corruption and over all (``all``)."""

    clean: SweepMetrics
    results: dict[str, dict[str, SweepMetrics]]
    average: dict[str, float | None]
    files: int
    errors: dict[str, str]
    parameters: dict[str, Any]


# -- weights and system --------------------------------------------------------------------------------------------
@dataclass
class WeightsRow:
    """One entry of ``gmdf weights list``."""

    name: str
    config: str
    hub: str
    sha256: str
    description: str
    path: str | None


OUTPUTS: dict[str, Any] = {
    "ScanReport": ScanReport,
    "EvalReport": EvalReport,
    "ProtocolResults": dict[str, ProtocolPart],
    "RobustnessReport": RobustnessReport,
    "WeightsList": list[WeightsRow],
}
"""Every ``--json`` output by name: the schema file has one definition for each."""
