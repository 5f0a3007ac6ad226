"""Frames -> faces: choosing and loading the face detector (RetinaFace in ``retinaface``, MTCNN, the offline
fallback, in ``mtcnn``), square crops around each face, linking faces across frames into tracks, and turning crops
into model input. Imports no torch: a compiled scan (``gmdf_cli.runtime``) runs without it."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import cv2
import numpy as np

from ..model.config import CLIP_MEAN, CLIP_STD
from . import DETECTION_SIDE
from .boxes import Face
from .detectors import (
    DETECTOR_ENV,
    DETECTORS,
    RETINAFACE_FILES,
    DetectorEntry,
    DetectorOptions,
    facexlib_weights_dir,
    fallback_reason,
    find_retinaface,
)
from .media import jpeg_roundtrip

if TYPE_CHECKING:
    import torch

CROP_SCALE = 1.3
__all__ = [
    "DETECTORS",
    "DETECTOR_ENV",
    "RETINAFACE_FILES",
    "DetectorEntry",
    "DetectorOptions",
    "Face",
    "facexlib_weights_dir",
]


class FaceDetector(Protocol):
    info: dict[str, Any]

    def detect(self, frame: np.ndarray, max_side: int | None = None) -> list[Face]: ...


def load_detector(
    name: str = "retinaface",
    weights_dir: str | Path | None = None,
    max_side: int = DETECTION_SIDE,
    device: torch.device | str = "cpu",
) -> tuple[FaceDetector, str | None]:
    """The face detector, resolved in order: ``weights_dir``, ``$GMDF_DETECTOR_WEIGHTS``, facexlib's own cache,
    then facexlib's download. When none works, MTCNN (shipped inside facenet-pytorch) is used instead; the second
    value then says why, once, for the user. ``name`` is ``retinaface`` (MobileNet-0.25, the CPU default),
    ``retinaface-resnet50`` or ``mtcnn``. ``device``: where the detector runs (a resolved torch device)."""
    from .mtcnn import MTCNNDetector
    from .retinaface import RetinaFaceDetector

    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; choose from {', '.join(DETECTORS)}")
    if DETECTORS[name].retinaface is None:
        return MTCNNDetector(max_side, device=device), None
    folder = find_retinaface(name, weights_dir)
    if folder is not None:
        return RetinaFaceDetector(name, folder, max_side, device=device), None
    try:  # facexlib downloads into its own cache, printing its own lines: gmdf speaks for it, once, if it fails
        noise = io.StringIO()
        with contextlib.redirect_stdout(noise), contextlib.redirect_stderr(noise):
            _download_retinaface(name)
    except Exception:  # any download failure means the same thing to the user
        return MTCNNDetector(max_side, device=device), fallback_reason(name, weights_dir)
    return RetinaFaceDetector(name, facexlib_weights_dir(), max_side, device=device), None


def _download_retinaface(name: str) -> None:
    """facexlib's own download (its release URL, into its own cache); the file is then checked and loaded by gmdf."""
    from facexlib.utils import load_file_from_url

    filename = RETINAFACE_FILES[name][1]
    url = f"https://github.com/xinntao/facexlib/releases/download/v0.1.0/{filename}"
    load_file_from_url(url=url, model_dir="facexlib/weights", progress=False, file_name=None, save_dir=None)


def open_face_detector(
    options: DetectorOptions, device: torch.device | str, warn: Callable[[str], None]
) -> FaceDetector:
    """The one way every command and the API load their face detector: ``load_detector`` with the shared options;
    a fallback to MTCNN is passed to ``warn`` once and recorded in the detector's ``info``."""
    detector, fallback = load_detector(options.name, options.weights, options.det_size, device)
    detector.info["fallback_reason"] = fallback
    if fallback:
        warn(fallback)
    return detector


def crop_face(frame: np.ndarray, box: tuple[float, float, float, float], size: int, scale: float = CROP_SCALE):
    """Square crop centred on the face, side = scale * the box's longer side, padded with edge pixels where it leaves
    the frame, resized to ``size``. frame (H, W, 3) -> (size, size, 3), same dtype and channel order."""
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1) * scale
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    side_px = max(1, int(round(side)))
    h, w = frame.shape[:2]
    pad_l, pad_t = max(0, -left), max(0, -top)
    pad_r, pad_b = max(0, left + side_px - w), max(0, top + side_px - h)
    region = frame[max(0, top) : min(h, top + side_px), max(0, left) : min(w, left + side_px)]
    if pad_l or pad_t or pad_r or pad_b:
        region = cv2.copyMakeBorder(region, pad_t, pad_b, pad_l, pad_r, cv2.BORDER_REPLICATE)
    interp = cv2.INTER_AREA if side_px > size else cv2.INTER_CUBIC
    return cv2.resize(region, (size, size), interpolation=interp)


def face_box_in_crop(
    box: tuple[float, float, float, float] | list[float], size: int, scale: float = CROP_SCALE
) -> tuple[float, float, float, float]:
    """Where a face's box (x1, y1, x2, y2 in frame pixels) lies inside the crop ``crop_face`` cuts around it (centred,
    its side ``scale`` times the box's longer side), in the pixels of that crop resized to ``size`` x ``size``."""
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1, 1e-6) * scale
    half_w, half_h = (x2 - x1) / side * size / 2, (y2 - y1) / side * size / 2
    centre = size / 2
    return (centre - half_w, centre - half_h, centre + half_w, centre + half_h)


def canonical_face(crop: np.ndarray, size: int, face_px: int = 0, jpeg: int = 0) -> np.ndarray:
    """A face crop as the model sees it, the same in training and in scanning: shrunk to at most ``face_px`` pixels
    across (0: not shrunk), re-encoded as JPEG at quality ``jpeg`` (0: not), then resized to the model's ``size``.
    So a large clean PNG face and a small compressed JPEG face differ in content only, not in resolution or codec.
    BGR uint8 (S, S, 3) -> (size, size, 3)."""
    out = crop
    if face_px and out.shape[0] > face_px:
        out = cv2.resize(out, (face_px, face_px), interpolation=cv2.INTER_AREA)
    if jpeg:
        decoded = jpeg_roundtrip(out, jpeg)
        if decoded is not None:
            out = decoded
    if out.shape[0] != size or out.shape[1] != size:
        # Enlarging a shrunk face: bilinear (INTER_AREA would repeat pixels in blocks). Uncanonicalised crops keep
        # INTER_AREA both ways, as every model made before face_px was trained and scanned that way.
        enlarge = (face_px or jpeg) and out.shape[0] < size
        out = cv2.resize(out, (size, size), interpolation=cv2.INTER_LINEAR if enlarge else cv2.INTER_AREA)
    return np.ascontiguousarray(out)


@dataclass(frozen=True)
class InputFormat:
    """How a model takes its faces: input ``size`` and :func:`canonical_face`'s ``face_px`` and ``jpeg``, read from
    the model config's vision section (``InputFormat.of(cfg.vision)``) by training and scanning alike."""

    size: int
    face_px: int = 0
    jpeg: int = 0

    @classmethod
    def of(cls, vision: Any) -> InputFormat:
        return cls(vision.image_size, vision.face_px, vision.face_jpeg)

    def __call__(self, crop: np.ndarray) -> np.ndarray:
        return canonical_face(crop, self.size, self.face_px, self.jpeg)


def model_input(crops: list[np.ndarray]) -> np.ndarray:
    """BGR uint8 crops (N, S, S, 3) -> CLIP-normalised RGB float32 array (N, 3, S, S), without torch (a compiled
    scan) and bit for bit what :func:`to_model_input` gives. Its memory stays channels-last (a view of the stacked
    crops), as torch's convolutions have always been given it."""
    batch = np.stack(crops)[..., ::-1].copy().transpose(0, 3, 1, 2).astype(np.float32)
    batch /= np.float32(255.0)
    batch -= np.asarray(CLIP_MEAN, np.float32).reshape(1, 3, 1, 1)
    batch /= np.asarray(CLIP_STD, np.float32).reshape(1, 3, 1, 1)
    return batch


def to_model_input(crops: list[np.ndarray]) -> torch.Tensor:
    """BGR uint8 crops (N, S, S, 3) -> CLIP-normalised RGB float tensor (N, 3, S, S)."""
    import torch

    return torch.from_numpy(model_input(crops))


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _centre_distance(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Distance of the box centres in units of the larger box side."""
    side = max(a[2] - a[0], a[3] - a[1], b[2] - b[0], b[3] - b[1], 1e-6)
    return float(np.hypot((a[0] + a[2] - b[0] - b[2]) / 2, (a[1] + a[3] - b[1] - b[3]) / 2)) / side


@dataclass
class Tracker:
    """Links faces of successive sampled frames into tracks: greedy matching on box overlap (IoU), falling back to
    centre distance for frames far apart in time. A track that misses a frame stays open."""

    min_iou: float = 0.2
    max_centre_distance: float = 0.6
    last_box: dict[int, tuple[float, ...]] = field(default_factory=dict)

    def assign(self, boxes: list[tuple[float, ...]]) -> list[int]:
        pairs = sorted(
            (
                (iou(box, prev), -_centre_distance(box, prev), i, t)
                for i, box in enumerate(boxes)
                for t, prev in self.last_box.items()
            ),
            reverse=True,
        )
        ids: list[int | None] = [None] * len(boxes)
        used: set[int] = set()
        for overlap, neg_dist, i, t in pairs:
            if ids[i] is not None or t in used:
                continue
            if overlap >= self.min_iou or -neg_dist <= self.max_centre_distance:
                ids[i] = t
                used.add(t)
        for i, box in enumerate(boxes):
            if ids[i] is None:
                ids[i] = len(self.last_box)
            self.last_box[ids[i]] = box  # type: ignore[index]
        return [int(t) for t in ids]  # type: ignore[arg-type]
