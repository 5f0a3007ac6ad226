"""The engine: files -> frames -> faces -> crops -> scores -> typed results, with faces batched across frames and
files so the model always sees full batches. See ``rules`` for how faces, frames and files are scored."""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..data.faces import Face, FaceDetector, Tracker, crop_face
from ..data.media import Frame, MediaError, MediaItem, OpenedMedia, Sampling, open_media, read_frames
from ..errors import one_line
from ..fileio import sha256_file
from ..report.results import FaceResult, FileResult, FrameResult, MediaInfo, SuspiciousFace, TrackResult
from ..runtime.compiled import CompiledModel
from . import rules
from .batching import Scorer, score_crops
from .keyframes import KeyFrames
from .provenance import read_provenance
from .threads import in_order_threads

DEFAULT_THRESHOLD = 0.5
DECODE_THREADS_GPU = 4
DISPLAY_SIZE = 224
IMAGE_DETECTION_SIDE = 1024
"""A still image is one frame: detection looks closer (up to this side) for small faces, it costs little."""


@dataclass
class EngineOptions:
    sampling: Sampling = field(default_factory=Sampling)
    batch_size: int = 16
    threshold: float = DEFAULT_THRESHOLD
    band: rules.Band | None = None
    """The weights' uncertainty band: scores in [low, high) get the verdict ``uncertain``."""
    max_faces: int = 8
    """Faces scored per frame at most (the most confident detections)."""
    detect_every: int = 1
    """Detect faces on every K-th sampled frame of a video (and on scene cuts and lost faces), carrying the key
    frame's faces to the frames between (``keyframes``). 1: detect on every frame; ``gmdf scan`` and ``Detector``
    default to ``keyframes.DETECT_EVERY``."""
    keep_crops: int = 8
    """Most suspicious face crops kept per file (for heatmaps and the report)."""
    decode_threads: int | None = None
    """Threads that decode and detect files while the model scores (None: 4 on GPUs, 0 on CPUs, where the
    threads would only share the same cores)."""
    prefetch_frames: int = 16
    """Frames each decoding thread may run ahead of the model."""
    crop_size: int | None = None
    """Side of the face crops the model sees (None: the model's input size; set it where detection runs without
    the model, as in Ray's decoding tasks)."""
    provenance: bool = True
    """Read each file's content credentials and metadata traces (``FileResult.provenance``), beside the score."""


CropHook = Callable[[Frame, int, np.ndarray], np.ndarray]


@dataclass
class Job:
    """One file through the engine, with optional hooks (robustness uses all three):

    - ``media``: the file already probed (else the engine opens it with its sampling);
    - ``frames``: the frames to use instead of decoding the file (e.g. corrupted copies of the decoded ones);
    - ``faces``: the faces of a frame instead of detecting them (e.g. those found on the clean frame);
    - ``crop``: ``crop(frame, face_number, crop) -> crop``, applied to each face crop before it is scored.
    """

    item: MediaItem
    media: OpenedMedia | None = None
    frames: Callable[[], Iterable[Frame]] | None = None
    faces: Callable[[Frame], list[Face]] | None = None
    crop: CropHook | None = None


@dataclass
class DetectedFrame:
    """A frame with its faces (most confident first, at most ``max_faces``) and their track ids."""

    frame: Frame
    faces: list[Face]
    tracks: list[int]


@dataclass
class DetectedFile:
    """A file through stage one (``Engine.detect_file``): its unscored result and one crop per face, in order."""

    result: FileResult
    crops: list[np.ndarray]


@dataclass
class _Event:
    """One event of the detection stream: a file starts (``start``), a frame with its faces and crops, or the
    file ends (``frame`` None)."""

    file: FileResult
    frame: FrameResult | None
    crops: list[tuple[FaceResult, np.ndarray, np.ndarray | None]]
    start: bool = False


@dataclass
class _Pending:
    file: FileResult
    frame: FrameResult
    face: FaceResult
    crop: np.ndarray
    display: np.ndarray | None


class Engine:
    """Runs the pipeline. ``model`` may be None for the detection-only stage (``detect_frames``), ``detector`` None
    when every job brings its own faces."""

    def __init__(
        self, model: Scorer | None, detector: FaceDetector | None, options: EngineOptions | None = None
    ) -> None:
        self.model = model
        self.detector = detector
        self.options = options or EngineOptions()
        self.queue: list[_Pending] = []

    # -- decode -> detect -> track (no model) ----------------------------------------------------------------------
    def detect(self, image: np.ndarray, still: bool = False, detector: FaceDetector | None = None) -> list[Face]:
        """The faces of one image, most confident first, at most ``max_faces``."""
        detector = detector or self.detector
        if detector is None:
            raise RuntimeError("this engine has no face detector")
        max_side = max(IMAGE_DETECTION_SIDE, detector.info["max_side"]) if still else None
        return sorted(detector.detect(image, max_side), key=lambda f: -f.score)[: self.options.max_faces]

    def detect_frames(
        self,
        frames: Iterable[Frame],
        still: bool = False,
        faces: Callable[[Frame], list[Face]] | None = None,
        detector: FaceDetector | None = None,
    ) -> Iterator[DetectedFrame]:
        """Detect (or take from ``faces``) and track the faces of each frame: the stage prepare and synth use to
        save crops instead of scoring them. A video's faces are detected on its key frames only, with
        ``detect_every`` > 1 (``keyframes``)."""
        tracker = Tracker()
        keys = KeyFrames(1 if still else self.options.detect_every)
        for frame in frames:
            if faces is not None:
                found = faces(frame)
            else:
                found = keys.faces(frame.image, lambda image: self.detect(image, still, detector))
            yield DetectedFrame(frame, found, tracker.assign([f.box for f in found]))

    def probe(self, item: MediaItem) -> tuple[FileResult, OpenedMedia | None]:
        """Open a file cheaply (no decoding): its result shell, and the media to read (None if unreadable)."""
        result = FileResult(item.path, kind=item.kind)
        try:
            media = open_media(item, self.options.sampling)
        except MediaError as exc:
            result.error = str(exc)
            return result, None
        except (OSError, cv2.error) as exc:
            result.error = f"cannot read file ({one_line(exc)})"
            return result, None
        return describe(result, media), media

    # -- the file stream -------------------------------------------------------------------------------------------
    def _file_events(
        self, job: Job, result: FileResult, media: OpenedMedia | None, detector: FaceDetector | None
    ) -> Iterator[_Event]:
        """One file's events: its start, its frames with their crops, its end (``error`` set if reading failed)."""
        yield _Event(result, None, [], start=True)
        if media is not None:
            try:
                stat = result.path.stat()
                result.size, result.mtime_ns = stat.st_size, stat.st_mtime_ns
                result.sha256 = sha256_file(result.path)
                if self.options.provenance:
                    result.provenance = read_provenance(result.path)
                frames = job.frames() if job.frames is not None else read_frames(media)
                detected = self.detect_frames(frames, media.kind == "image", job.faces, detector)
                for found in detected:
                    yield self._frame_event(job, result, found)
            except MediaError as exc:
                result.error = str(exc)
            except (OSError, cv2.error, ValueError, RuntimeError) as exc:
                result.error = f"failed while reading ({one_line(exc)})"
        yield _Event(result, None, [])

    def _frame_event(self, job: Job, result: FileResult, found: DetectedFrame) -> _Event:
        frame = found.frame
        if not result.media.width:
            result.media.height, result.media.width = frame.image.shape[:2]
        frame_result = FrameResult(frame.index, round(frame.time, 4))
        crops: list[tuple[FaceResult, np.ndarray, np.ndarray | None]] = []
        size = self.options.crop_size or (self.model.config.vision.image_size if self.model else DISPLAY_SIZE)
        for number, (face, track) in enumerate(zip(found.faces, found.tracks, strict=True)):
            face_result = FaceResult([round(float(v), 1) for v in face.box], track, None, round(face.score, 4))
            frame_result.faces.append(face_result)
            crop = crop_face(frame.image, face.box, size)
            if job.crop is not None:
                crop = job.crop(frame, number, crop)
            display = crop_face(frame.image, face.box, DISPLAY_SIZE) if self.options.keep_crops else None
            crops.append((face_result, crop, display))
        return _Event(result, frame_result, crops)

    def _events(self, probed: list[tuple[Job, FileResult, OpenedMedia | None]], threads: int) -> Generator[_Event]:
        """Every file's events in input order. With ``threads`` > 0, files are decoded and detected by that many
        background threads (each with its own copy of the detector, which keeps per-call state), each at most
        ``prefetch_frames`` frames ahead of the model: decoding and detection release the GIL, so they overlap
        each other and the model, and memory stays bounded whatever the number of files."""
        if threads <= 0:
            for job, result, media in probed:
                yield from self._file_events(job, result, media, self.detector)
            return
        local = threading.local()

        def events(job: Job, result: FileResult, media: OpenedMedia | None) -> Iterator[_Event]:
            if not hasattr(local, "detector"):
                local.detector = copy.deepcopy(self.detector)
            return self._file_events(job, result, media, local.detector)

        sources = [functools.partial(events, j, r, m) for j, r, m in probed]
        yield from in_order_threads(sources, threads, self.options.prefetch_frames)

    # -- batch-score -> aggregate ----------------------------------------------------------------------------------
    def _flush(self) -> None:
        if not self.queue:
            return
        assert self.model is not None, "scoring needs a model"
        scores = score_crops(self.model, [p.crop for p in self.queue], batch_size=len(self.queue))
        keep = self.options.keep_crops
        for pending, score in zip(self.queue, scores, strict=True):
            if not math.isfinite(score):  # a broken model: the face stays unscored and the file says so
                continue
            pending.face.score = float(score)
            kept = pending.file.suspicious
            if keep and (len(kept) < keep or score > kept[-1].score):
                display = pending.display if pending.display is not None else pending.crop
                frame = pending.frame
                face = pending.face
                kept.append(SuspiciousFace(score, frame.index, frame.time, face.track, face.box, pending.crop, display))
                kept.sort(key=lambda s: -s.score)
                del kept[keep:]
        self.queue.clear()

    def run(
        self,
        jobs: Sequence[Job | MediaItem],
        on_start: Callable[[int], None] = lambda total: None,
        on_file: Callable[[FileResult], None] = lambda result: None,
        on_frame: Callable[[], None] = lambda: None,
    ) -> Iterator[FileResult]:
        """Yield each file's result in input order, as soon as all of its faces are scored. ``on_start`` gets the
        total number of frames to read, ``on_file`` each file as it starts, ``on_frame`` each frame read."""
        probed = [self._probe_job(j if isinstance(j, Job) else Job(j)) for j in jobs]
        on_start(sum(r.frames_requested for _, r, _ in probed))
        threads = self.options.decode_threads
        if threads is None:  # a GPU should wait for nobody; on a CPU threads would only share the same cores
            threads = DECODE_THREADS_GPU if _on_gpu(self.model) else 0
        waiting: list[FileResult] = []
        started = 0.0
        try:
            with contextlib.closing(self._events(probed, threads)) as stream:
                for event in stream:
                    result = event.file
                    if event.start:
                        started = time.perf_counter()
                        on_file(result)
                    elif event.frame is not None:
                        self._enqueue(event)
                        on_frame()
                    else:
                        if result.error:  # drop its queued faces; keep the rest of the batch
                            self.queue = [p for p in self.queue if p.file is not result]
                        result.seconds = round(time.perf_counter() - started, 3)
                        waiting.append(result)
                        while waiting and not any(p.file is waiting[0] for p in self.queue):
                            yield aggregate(waiting.pop(0), self.options.threshold, self.options.band)
        except KeyboardInterrupt:  # files read to the end may still wait for their faces' batch: finish them first
            self.queue = [p for p in self.queue if any(p.file is w for w in waiting)]
            self._flush()
            for done in waiting:
                yield aggregate(done, self.options.threshold, self.options.band)
            raise
        self._flush()
        for done in waiting:
            yield aggregate(done, self.options.threshold, self.options.band)

    # -- the two stages apart (Ray: decoding tasks on CPUs, the model in an actor pool) ----------------------------
    def detect_file(self, job: Job | MediaItem) -> DetectedFile:
        """Stage one without a model: open, decode, detect, track and crop one file. Its result has every frame and
        face (unscored); ``crops`` holds one model-sized crop per face, in frame order."""
        job, result, media = self._probe_job(job if isinstance(job, Job) else Job(job))
        started = time.perf_counter()
        crops: list[np.ndarray] = []
        for event in self._file_events(job, result, media, self.detector):
            if event.frame is not None:
                result.frames.append(event.frame)
                crops.extend(crop for _, crop, _ in event.crops)
        result.seconds = round(time.perf_counter() - started, 3)
        return DetectedFile(result, crops)

    def score_files(self, files: Sequence[DetectedFile]) -> list[FileResult]:
        """Stage two: score the faces of files detected by ``detect_file`` (batched across files, the same batch loop
        and rule as ``run``) and aggregate each."""
        for done in files:
            if done.result.error:
                continue
            faces = [(frame, face) for frame in done.result.frames for face in frame.faces]
            for (frame, face), crop in zip(faces, done.crops, strict=True):
                self.queue.append(_Pending(done.result, frame, face, crop, None))
                if len(self.queue) >= self.options.batch_size:
                    self._flush()
        self._flush()
        return [aggregate(done.result, self.options.threshold, self.options.band) for done in files]

    def _probe_job(self, job: Job) -> tuple[Job, FileResult, OpenedMedia | None]:
        if job.media is not None:
            return job, describe(FileResult(job.item.path, kind=job.item.kind), job.media), job.media
        result, media = self.probe(job.item)
        return job, result, media

    def _enqueue(self, event: _Event) -> None:
        assert event.frame is not None
        for face_result, crop, display in event.crops:
            self.queue.append(_Pending(event.file, event.frame, face_result, crop, display))
            if len(self.queue) >= self.options.batch_size:
                self._flush()
        event.file.frames.append(event.frame)


def describe(result: FileResult, media: OpenedMedia) -> FileResult:
    """Fill a result's kind, frame count and media size from the probed file."""
    result.kind, result.frames_requested = media.kind, len(media.indices)
    result.media = MediaInfo(media.width, media.height, round(media.fps, 3))
    return result


def aggregate(result: FileResult, threshold: float, band: rules.Band | None = None) -> FileResult:
    """Apply the scoring rule (``rules``) to a file whose faces are all scored: frame, file and track scores and
    verdicts, counts, and warnings about frames that could not be decoded or held no face."""
    result.threshold = threshold
    result.band = list(band) if band is not None else None
    result.frames_scanned = len(result.frames)
    result.frames_with_faces = sum(1 for f in result.frames if f.faces)
    result.faces_found = sum(len(f.faces) for f in result.frames)
    if result.error:
        result.verdict = "error"
        return result
    for frame in result.frames:
        frame.score = rules.frame_score([f.score for f in frame.faces if f.score is not None])
    scores = [s for f in result.frames if (s := f.score) is not None]
    unscored = sum(f.score is None for frame in result.frames for f in frame.faces)
    if unscored and not scores:
        result.verdict, result.error = "error", f"the model gave no valid score (NaN) for any of {unscored} faces"
        return result
    if unscored:
        result.warnings.append(f"the model gave no valid score (NaN) for {unscored} faces, left out")
    if len(result.frames) < result.frames_requested:
        result.warnings.append(
            f"decoded {len(result.frames)} of {result.frames_requested} sampled frames (truncated or damaged file?)"
        )
    missing = len(result.frames) - len(scores)
    if missing and scores:
        result.warnings.append(f"no face in {missing} of {len(result.frames)} frames")
    if not scores:
        result.verdict = "no-face"
        return result
    result.score = rules.file_score(scores)
    result.score_median, result.score_max = rules.file_spread(scores)
    result.verdict = rules.verdict(result.score, threshold, band)
    per_track: dict[int, list[float]] = {}
    for frame in result.frames:
        for face in frame.faces:
            if face.score is not None:
                per_track.setdefault(face.track, []).append(face.score)
    track_scores = {t: rules.file_score(s) for t, s in sorted(per_track.items())}
    result.tracks = [
        TrackResult(t, score, len(per_track[t]), rules.verdict(score, threshold, band))
        for t, score in track_scores.items()
    ]
    return result


def _on_gpu(model: Scorer | None) -> bool:
    if model is None or isinstance(model, CompiledModel):
        return False
    return next(model.parameters()).device.type != "cpu"
