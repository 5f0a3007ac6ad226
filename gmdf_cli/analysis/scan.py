"""`gmdf scan`: files -> frames -> faces -> scores -> verdicts, with faces batched across frames and files.

Scores: each face gets P(fake). A frame's score is its most suspicious face's; a file's score is the mean of its
frame scores (median and max reported too); a track's score is the mean over its faces. Verdicts compare a score with
the threshold (fake when score >= threshold); a file with no face anywhere is ``no-face``; one that cannot be read is
``error`` and the others are still scanned.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import platform
import queue
import statistics
import threading
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np
import torch

from .. import __version__
from ..data.faces import Detector, Tracker, crop_face, to_model_input
from ..data.media import MediaError, MediaItem, OpenedMedia, Sampling, open_media, read_frames
from ..fileio import sha256_file
from ..model import GMDF

T = TypeVar("T")
DEFAULT_THRESHOLD = 0.5
DECODE_THREADS_GPU = 4
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
    decode_threads: int | None = None
    """Threads that decode and detect files while the model scores (None: 4 on GPUs, 0 on CPUs, where the
    threads would only share the same cores)."""
    prefetch_frames: int = 16
    """Frames each decoding thread may run ahead of the model."""


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
        self.queue: list[_Pending] = []

    def _flush(self) -> None:
        if not self.queue:
            return
        with torch.inference_mode():
            scores = self.model.score(to_model_input([p.crop for p in self.queue]))
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

    def _detect_file(self, result: FileResult, media: OpenedMedia, detector: Detector) -> Iterator[_Detected]:
        """Decode, detect, track and crop one file's sampled frames (no model): what background threads can do
        while the model scores earlier faces."""
        tracker = Tracker()
        # a still image is one frame: look closer for small faces, it costs little
        max_side = max(IMAGE_DETECTION_SIDE, detector.info["max_side"]) if media.kind == "image" else None
        for frame in read_frames(media):
            if not result.width:
                result.height, result.width = frame.image.shape[:2]
            found = detector.detect(frame.image, max_side)
            faces = sorted(found, key=lambda f: -f.score)[: self.options.max_faces]
            tracks = tracker.assign([f.box for f in faces])
            frame_result = FrameResult(frame.index, frame.time)
            crops: list[tuple[FaceResult, np.ndarray, np.ndarray | None]] = []
            for face, track in zip(faces, tracks, strict=True):
                face_result = FaceResult([float(v) for v in face.box], track, detector_score=face.score)
                frame_result.faces.append(face_result)
                crop = crop_face(frame.image, face.box, self.size)
                display = crop_face(frame.image, face.box, DISPLAY_SIZE) if self.options.keep_crops else None
                crops.append((face_result, crop, display))
            yield _Detected(result, frame_result, crops)

    def _file_events(self, result: FileResult, media: OpenedMedia | None, detector: Detector) -> Iterator[_Detected]:
        """One file's events: its start, its frames, its end (``frame`` None; ``error`` set if reading failed)."""
        yield _Detected(result, None, [], start=True)
        if media is not None:
            try:
                result.sha256 = sha256_file(result.path)
                yield from self._detect_file(result, media, detector)
            except MediaError as exc:
                result.error = str(exc)
            except (OSError, cv2.error, ValueError, RuntimeError) as exc:
                result.error = f"failed while reading ({_one_line(exc)})"
        yield _Detected(result, None, [])

    def _events(
        self, probed: list[tuple[FileResult, OpenedMedia | None]], threads: int
    ) -> Generator[_Detected, None, None]:
        """Every file's events in input order. With ``threads`` > 0, files are decoded and detected by that many
        background threads (each with its own copy of the detector, which keeps per-call state), each at most
        ``prefetch_frames`` frames ahead of the model: decoding and detection release the GIL, so they overlap
        each other and the model, and memory stays bounded whatever the number of files."""
        if threads <= 0:
            for result, media in probed:
                yield from self._file_events(result, media, self.detector)
            return
        local = threading.local()

        def events(result: FileResult, media: OpenedMedia | None) -> Iterator[_Detected]:
            if not hasattr(local, "detector"):
                local.detector = copy.deepcopy(self.detector)
            return self._file_events(result, media, local.detector)

        yield from in_order_threads(
            [functools.partial(events, r, m) for r, m in probed], threads, self.options.prefetch_frames
        )

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

        threads = self.options.decode_threads
        if threads is None:  # a GPU should wait for nobody; on a CPU threads would only share the same cores
            threads = DECODE_THREADS_GPU if next(self.model.parameters()).device.type != "cpu" else 0
        waiting: list[FileResult] = []
        started = 0.0
        with contextlib.closing(self._events(probed, threads)) as stream:
            for event in stream:
                result = event.file
                if event.start:
                    started = time.perf_counter()
                    on_file(result.path)
                    continue
                if event.frame is not None:
                    for face_result, crop, display in event.crops:
                        self.queue.append(_Pending(result, event.frame, face_result, crop, display))
                        if len(self.queue) >= self.options.batch_size:
                            self._flush()
                    result.frames.append(event.frame)
                    on_frame()
                    continue
                if result.error:  # drop its queued faces; keep the rest of the batch
                    self.queue = [p for p in self.queue if p.file is not result]
                result.seconds = time.perf_counter() - started
                waiting.append(result)
                while waiting and not any(p.file is waiting[0] for p in self.queue):
                    done = waiting.pop(0)
                    done.finalise(self.options.threshold)
                    yield done
        self._flush()
        for done in waiting:
            done.finalise(self.options.threshold)
            yield done


@dataclass
class _Detected:
    """One event of the detection stream: a file starts (``start``), a frame with its faces and crops, or the
    file ends (``frame`` None)."""

    file: FileResult
    frame: FrameResult | None
    crops: list[tuple[FaceResult, np.ndarray, np.ndarray | None]]
    start: bool = False


_DONE = object()


def in_order_threads(sources: list[Callable[[], Iterator[T]]], threads: int, depth: int = 16) -> Iterator[T]:
    """The items of ``sources`` (each a function returning an iterator), in order, computed by ``threads`` threads
    at once: while the consumer drains source k, sources k+1 .. k+threads-1 run ahead, each at most ``depth`` items
    ahead; source k+threads starts when source k is done, so memory stays bounded however many sources there are.
    An exception in a thread is raised here; closing this generator (an error, Ctrl-C) stops the threads."""
    stop = threading.Event()
    threads = max(1, threads)

    def produce(source: Callable[[], Iterator[T]], out: queue.Queue[Any]) -> None:
        def put(item: Any) -> bool:
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        try:
            for item in source():
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, which raises it
            put(exc)

    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="gmdf-decode-detect")
    running: dict[int, queue.Queue[Any]] = {}

    def start(index: int) -> None:
        if index < len(sources):
            running[index] = queue.Queue(maxsize=depth)
            pool.submit(produce, sources[index], running[index])

    try:
        for index in range(threads):
            start(index)
        for index in range(len(sources)):
            out = running.pop(index)
            while (item := out.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise item
                yield item
            start(index + threads)
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)


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
