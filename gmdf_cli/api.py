"""The Python API: a detector in one line, a file's typed result in another.

    from gmdf_cli import Detector

    detector = Detector.from_pretrained("gmdf-mnv2-dev", device="cpu")
    result = detector.scan("examples/astronaut.png")
    print(result.verdict, result.score)

``gmdf scan`` is a thin layer over this class; results are the typed objects of ``gmdf_cli.report.results``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from .data.faces import DetectorOptions, FaceDetector, open_face_detector
from .data.media import MediaItem, Sampling, discover, kind_of
from .device import resolve_device
from .engine.keyframes import DETECT_EVERY
from .engine.pipeline import DEFAULT_THRESHOLD, Engine, EngineOptions
from .errors import UsageError
from .model import GMDF
from .report.results import DetectorInfo, FileResult, ModelCard, ModelInfo
from .weights import DEFAULT_WEIGHTS, ResolvedWeights, load_weights
from .weights.card import read_card, read_decision, read_training


def _warn(text: str) -> None:
    warnings.warn(text, stacklevel=3)


class Detector:
    """A deepfake detector ready to scan: GM-DF weights, a face detector and the engine that joins them."""

    def __init__(
        self,
        model: GMDF,
        weights: ResolvedWeights,
        metadata: dict[str, str],
        face_detector: FaceDetector,
        options: EngineOptions,
    ) -> None:
        self.model = model
        self.weights = weights
        self.metadata = metadata
        self.face_detector = face_detector
        self.options = options

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str = DEFAULT_WEIGHTS,
        *,
        device: str = "auto",
        precision: str = "fp32",
        threshold: float | None = None,
        sampling: Sampling | None = None,
        batch_size: int = 16,
        max_faces: int = 8,
        keep_crops: int = 0,
        detect_every: int = DETECT_EVERY,
        face_detector: DetectorOptions | str = "retinaface",
        detector_weights: str | Path | None = None,
        warn: Callable[[str], None] = _warn,
    ) -> Detector:
        """Weights by zoo name, ``hf-hub:org/repo[/file]`` or a ``.safetensors`` path (default: the shipped model),
        on ``device`` (``auto``, ``cpu``, ``cuda:1``, ``mps``) in ``precision`` (fp32, bf16, fp16). ``threshold``:
        fake when score >= threshold (default: the weights' own, else 0.5). ``sampling``: which video frames
        (default 32 spread evenly). ``keep_crops``: most suspicious face crops kept per file (for heatmaps).
        ``detect_every``: detect faces on every K-th sampled video frame (and on scene cuts and lost faces), carrying
        them between (1: on every frame)."""
        if isinstance(face_detector, str):
            weights_dir = str(detector_weights) if detector_weights is not None else None
            face_detector = DetectorOptions(face_detector, weights_dir)
        target = resolve_device(device)
        model, resolved, meta = load_weights(name_or_path, device=target, precision=precision)
        stored, band = read_decision(meta)
        if threshold is not None:  # the band was calibrated around the stored threshold, not around this one
            band = None
        else:
            threshold = DEFAULT_THRESHOLD if stored is None else stored
        faces = open_face_detector(face_detector, target, warn)
        sampling = sampling or Sampling()
        options = EngineOptions(sampling, batch_size, threshold, band, max_faces, detect_every, keep_crops)
        return cls(model, resolved, meta, faces, options)

    @property
    def threshold(self) -> float:
        return self.options.threshold

    def engine(self) -> Engine:
        return Engine(self.model, self.face_detector, self.options)

    def scan(self, path: str | Path) -> FileResult:
        """One image or video -> its typed result (verdict, score, frames, faces, tracks)."""
        file = Path(path).expanduser()
        if not file.is_file():
            raise UsageError(f"no such file: {file}")
        return next(self.engine().run([MediaItem(file, kind_of(file))]))

    def scan_many(
        self,
        paths: Iterable[str | Path],
        on_start: Callable[[int], None] = lambda total: None,
        on_file: Callable[[FileResult], None] = lambda result: None,
        on_frame: Callable[[], None] = lambda: None,
    ) -> Iterator[FileResult]:
        """Files and folders (recursive) -> one result per image or video, in order, each as soon as it is done.
        Paths that do not exist give an ``error`` result; files that are not media in folders are left out."""
        found = discover(list(paths))
        for missing in found.missing:
            result = FileResult(missing, error="no such file or directory")
            result.threshold = self.threshold
            yield result
        yield from self.engine().run(found.items, on_start, on_file, on_frame)

    def model_info(self) -> ModelInfo:
        cfg = self.model.config
        w = self.weights
        trained = read_training(self.metadata)
        card = read_card(self.metadata)
        info = ModelInfo(w.name, w.sha256, w.source, str(w.path), cfg.name, list(cfg.domains), trained)
        info.card = ModelCard(**card) if card is not None else None
        return info

    def detector_info(self) -> DetectorInfo:
        info = self.face_detector.info
        return DetectorInfo(
            str(info["name"]),
            str(info["weights"]),
            str(info["sha256"]),
            int(info["max_side"]),
            str(info["device"]),
            info.get("fallback_reason"),
        )
