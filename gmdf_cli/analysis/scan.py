"""`gmdf scan`: files -> frames -> faces -> scores -> verdicts, with faces batched across frames and files.

Scores: each face gets P(fake). A frame's score is its most suspicious face's; a file's score is the mean of its
frame scores (median and max reported too); a track's score is the mean over its faces. Verdicts compare a score with
the threshold (fake when score >= threshold); a file with no face anywhere is ``no-face``; one that cannot be read is
``error`` and the others are still scanned.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from .. import __version__
from ..data.faces import Detector, Tracker, crop_face, to_model_input
from ..data.media import MediaError, MediaItem, OpenedMedia, Sampling, open_media, read_frames
from ..fileio import sha256_file
from ..model import GMDF

DEFAULT_THRESHOLD = 0.5
DISPLAY_SIZE = 224
IMAGE_DETECTION_SIDE = 1024


@dataclass
class ScanOptions:
    sampling: Sampling = field(default_factory=Sampling)
    batch_size: int = 16
    threshold: float = DEFAULT_THRESHOLD
    max_faces: int = 8
    """Faces scored per frame at most (the most confident detections)."""
    keep_crops: int = 8
    """Most suspicious face crops kept per file (for heatmaps and the report)."""


@dataclass
class FaceResult:
    box: list[float]
    track: int
    score: float = float("nan")
    detector_score: float = 0.0


@dataclass
class FrameResult:
    index: int
    time: float
    faces: list[FaceResult] = field(default_factory=list)

    @property
    def score(self) -> float | None:
        return max(f.score for f in self.faces) if self.faces else None


@dataclass
class SuspiciousFace:
    score: float
    frame: int
    time: float
    track: int
    crop: np.ndarray  # (S, S, 3) BGR uint8, the model's input size
    display: np.ndarray  # (224, 224, 3) BGR uint8, for people


@dataclass
class FileResult:
    path: Path
    kind: str = "unknown"
    sha256: str | None = None
    verdict: str = "error"
    score: float | None = None
    score_median: float | None = None
    score_max: float | None = None
    threshold: float = DEFAULT_THRESHOLD
    frames: list[FrameResult] = field(default_factory=list)
    tracks: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    frames_requested: int = 0
    seconds: float = 0.0
    width: int = 0
    height: int = 0
    fps: float = 0.0
    suspicious: list[SuspiciousFace] = field(default_factory=list)

    @property
    def faces_found(self) -> int:
        return sum(len(f.faces) for f in self.frames)

    @property
    def frames_with_faces(self) -> int:
        return sum(1 for f in self.frames if f.faces)

    def finalise(self, threshold: float) -> None:
        self.threshold = threshold
        if self.error:
            self.verdict = "error"
            return
        scores = [s for f in self.frames if (s := f.score) is not None]
        if len(self.frames) < self.frames_requested:
            self.warnings.append(
                f"decoded {len(self.frames)} of {self.frames_requested} sampled frames (truncated or damaged file?)"
            )
        missing = len(self.frames) - len(scores)
        if missing and scores:
            self.warnings.append(f"no face in {missing} of {len(self.frames)} frames")
        if not scores:
            self.verdict = "no-face"
            return
        self.score = float(np.mean(scores))
        self.score_median = float(statistics.median(scores))
        self.score_max = float(max(scores))
        self.verdict = "fake" if self.score >= threshold else "real"
        per_track: dict[int, list[float]] = {}
        for frame in self.frames:
            for face in frame.faces:
                per_track.setdefault(face.track, []).append(face.score)
        self.tracks = [
            {
                "track": t,
                "score": float(np.mean(s)),
                "faces": len(s),
                "verdict": "fake" if float(np.mean(s)) >= threshold else "real",
            }
            for t, s in sorted(per_track.items())
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "kind": self.kind,
            "verdict": self.verdict,
            "score": self.score,
            "score_median": self.score_median,
            "score_max": self.score_max,
            "threshold": self.threshold,
            "frames_scanned": len(self.frames),
            "frames_with_faces": self.frames_with_faces,
            "faces_found": self.faces_found,
            "seconds": round(self.seconds, 3),
            "media": {"width": self.width, "height": self.height, "fps": self.fps},
            "frames": [
                {
                    "index": f.index,
                    "time": round(f.time, 4),
                    "faces": [
                        {
                            "box": [round(v, 1) for v in face.box],
                            "track": face.track,
                            "score": face.score,
                            "detector_score": round(face.detector_score, 4),
                        }
                        for face in f.faces
                    ],
                }
                for f in self.frames
            ],
            "tracks": self.tracks,
            "warnings": self.warnings,
            "error": self.error,
        }


@dataclass
class _Pending:
    file: FileResult
    frame: FrameResult
    face: FaceResult
    crop: np.ndarray
    display: np.ndarray | None


class Scanner:
    """Runs the pipeline over many files. Faces wait in a queue until a batch is full, so the model always sees
    full batches; a file is reported once all of its faces are scored."""

    def __init__(self, model: GMDF, detector: Detector, options: ScanOptions) -> None:
        self.model = model
        self.detector = detector
        self.options = options
        self.size = model.config.vision.image_size
        self.dtype = next(model.parameters()).dtype
        self.queue: list[_Pending] = []

    def _flush(self) -> None:
        if not self.queue:
            return
        batch = to_model_input([p.crop for p in self.queue]).to(self.dtype)
        with torch.inference_mode():
            scores = self.model.predict(batch).float().tolist()
        for pending, score in zip(self.queue, scores, strict=True):
            pending.face.score = float(score)
            keep = self.options.keep_crops
            kept = pending.file.suspicious
            if keep and (len(kept) < keep or score > kept[-1].score):
                display = pending.display if pending.display is not None else pending.crop
                kept.append(
                    SuspiciousFace(
                        score, pending.frame.index, pending.frame.time, pending.face.track, pending.crop, display
                    )
                )
                kept.sort(key=lambda s: -s.score)
                del kept[keep:]
        self.queue.clear()

    def _scan_frames(self, result: FileResult, media: OpenedMedia, on_frame: Callable[[], None]) -> None:
        tracker = Tracker()
        # a still image is one frame: look closer for small faces, it costs little
        max_side = max(IMAGE_DETECTION_SIDE, self.detector.info["max_side"]) if media.kind == "image" else None
        for frame in read_frames(media):
            if not result.width:
                result.height, result.width = frame.image.shape[:2]
            found = self.detector.detect(frame.image, max_side)
            faces = sorted(found, key=lambda f: -f.score)[: self.options.max_faces]
            tracks = tracker.assign([f.box for f in faces])
            frame_result = FrameResult(frame.index, frame.time)
            for face, track in zip(faces, tracks, strict=True):
                face_result = FaceResult([float(v) for v in face.box], track, detector_score=face.score)
                frame_result.faces.append(face_result)
                crop = crop_face(frame.image, face.box, self.size)
                display = crop_face(frame.image, face.box, DISPLAY_SIZE) if self.options.keep_crops else None
                self.queue.append(_Pending(result, frame_result, face_result, crop, display))
                if len(self.queue) >= self.options.batch_size:
                    self._flush()
            result.frames.append(frame_result)
            on_frame()

    def scan(
        self,
        items: list[MediaItem],
        on_start: Callable[[int], None] = lambda total: None,
        on_file: Callable[[Path], None] = lambda path: None,
        on_frame: Callable[[], None] = lambda: None,
    ) -> Iterator[FileResult]:
        """Yield each file's result in input order. ``on_start`` gets the total number of frames to read."""
        probed: list[tuple[FileResult, OpenedMedia | None]] = []
        for item in items:
            result = FileResult(item.path, kind=item.kind)
            media = None
            try:
                media = open_media(item, self.options.sampling)
                result.kind, result.frames_requested = media.kind, len(media.indices)
                result.width, result.height, result.fps = media.width, media.height, round(media.fps, 3)
            except MediaError as exc:
                result.error = str(exc)
            except (OSError, cv2.error) as exc:
                result.error = f"cannot read file ({_one_line(exc)})"
            probed.append((result, media))
        on_start(sum(r.frames_requested for r, _ in probed))

        waiting: list[FileResult] = []
        for result, media in probed:
            start = time.perf_counter()
            on_file(result.path)
            if media is not None:
                try:
                    result.sha256 = sha256_file(result.path)
                    self._scan_frames(result, media, on_frame)
                except MediaError as exc:
                    result.error = str(exc)
                except (OSError, cv2.error, ValueError, RuntimeError) as exc:
                    result.error = f"failed while reading ({_one_line(exc)})"
                if result.error:  # drop its queued faces; keep the rest of the batch
                    self.queue = [p for p in self.queue if p.file is not result]
            result.seconds = time.perf_counter() - start
            waiting.append(result)
            while waiting and not any(p.file is waiting[0] for p in self.queue):
                done = waiting.pop(0)
                done.finalise(self.options.threshold)
                yield done
        self._flush()
        for done in waiting:
            done.finalise(self.options.threshold)
            yield done


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}".strip(": ")


def environment() -> dict[str, Any]:
    import cv2 as _cv2
    import open_clip

    return {
        "gmdf": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "opencv": _cv2.__version__,
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
    }


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
