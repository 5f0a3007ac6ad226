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
from typing import TYPE_CHECKING

from .data.faces import DetectorOptions, FaceDetector, open_face_detector
from .data.media import MediaItem, Sampling, discover, kind_of
from .engine.batching import Scorer
from .engine.keyframes import DETECT_EVERY
from .engine.pipeline import DEFAULT_THRESHOLD, Engine, EngineOptions
from .errors import UsageError
from .report.results import DetectorInfo, FileResult, ModelCard, ModelInfo
from .runtime import plan as runtime
from .runtime.compiled import CompiledModel
from .weights import DEFAULT_WEIGHTS, ResolvedWeights, resolve_weights
from .weights.card import read_card, read_decision, read_training

if TYPE_CHECKING:
    from .model import GMDF


def _warn(text: str) -> None:
    warnings.warn(text, stacklevel=3)


def _compiled(
    plan: runtime.Plan, model: GMDF, faces: FaceDetector, note: Callable[[str], None]
) -> tuple[Scorer, FaceDetector]:
    """The first compiled scan: compile the loaded torch model and RetinaFace, then go on with their graphs (the
    torch pair where compiling is refused or the face detector fell back to another kind)."""
    from .data.retinaface import RetinaFaceDetector

    if not isinstance(faces, RetinaFaceDetector):
        return model, faces
    if plan.compile(model, faces.net, note):
        parts = plan.open(faces.max_side)
        if parts is not None:
            return parts
    return model, faces


class Detector:
    """A deepfake detector ready to scan: GM-DF weights, a face detector and the engine that joins them."""

    def __init__(
        self,
        model: Scorer,
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
        compiled: bool = True,
        note: Callable[[str], None] = lambda text: None,
    ) -> Detector:
        """Weights by zoo name, ``hf-hub:org/repo[/file]`` or a ``.safetensors`` path (default: the shipped model),
        on ``device`` (``auto``, ``cpu``, ``cuda:1``, ``mps``) in ``precision`` (fp32, bf16, fp16). ``threshold``:
        fake when score >= threshold (default: the weights' own, else 0.5). ``sampling``: which video frames
        (default 32 spread evenly). ``keep_crops``: most suspicious face crops kept per file (for heatmaps).
        ``detect_every``: detect faces on every K-th sampled video frame (and on scene cuts and lost faces), carrying
        them between (1: on every frame). ``compiled``: on the CPU, run the model and RetinaFace as compiled graphs
        without torch where they can be (``gmdf_cli.runtime``; compiled on first use, telling ``note``); then
        ``model`` is a ``CompiledModel``, not the torch ``GMDF`` (``compiled=False`` for the torch model)."""
        if isinstance(face_detector, str):
            weights_dir = str(detector_weights) if detector_weights is not None else None
            face_detector = DetectorOptions(face_detector, weights_dir)
        resolved = resolve_weights(name_or_path)  # once: resolving hashes the whole file
        plan = runtime.plan(resolved, device, precision, face_detector) if compiled else None
        parts = plan.open(face_detector.det_size) if plan is not None and plan.ready() else None
        if plan is not None and parts is not None:
            model: Scorer = parts[0]
            faces: FaceDetector = parts[1]
            meta = plan.metadata
        else:
            from .device import resolve_device
            from .weights import load_weights

            target = resolve_device(device)
            torch_model, _, meta = load_weights(resolved, device=target, precision=precision)
            model, faces = torch_model, open_face_detector(face_detector, target, warn)
            if plan is not None and not plan.refused():
                model, faces = _compiled(plan, torch_model, faces, note)
        stored, band = read_decision(meta)
        if threshold is not None:  # the band was calibrated around the stored threshold, not around this one
            band = None
        else:
            threshold = DEFAULT_THRESHOLD if stored is None else stored
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
        info.runtime = CompiledModel.runtime if isinstance(self.model, CompiledModel) else "torch"
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
