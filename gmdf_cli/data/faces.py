"""Frames -> faces: detection (facexlib's RetinaFace, MTCNN as the offline fallback), square crops around
each face, linking faces across frames into tracks, and turning crops into model input tensors."""

from __future__ import annotations

import contextlib
import io
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import torch
from torch import nn

from ..errors import WeightsError
from ..fileio import sha256_file
from ..model.config import CLIP_MEAN, CLIP_STD
from . import DETECTION_SIDE
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
from .retinaface import BGR_MEAN, MobileRetinaFace, decode, priors

CROP_SCALE = 1.3
__all__ = ["DETECTORS", "DETECTOR_ENV", "RETINAFACE_FILES", "DetectorEntry", "DetectorOptions", "facexlib_weights_dir"]


@dataclass(frozen=True)
class Face:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in frame pixels
    score: float  # detector confidence


class FaceDetector(Protocol):
    info: dict[str, Any]

    def detect(self, frame: np.ndarray, max_side: int | None = None) -> list[Face]: ...


def _downscale(frame: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    h, w = frame.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        frame = cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return frame, scale


def _box(values: Any, scale: float) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) / scale for v in values)
    return x1, y1, x2, y2


NMS_THRESHOLD = 0.4
"""facexlib's default IoU threshold for RetinaFace's non-maximum suppression."""


class RetinaFaceDetector:
    """facexlib's RetinaFace, run on the frame downscaled to ``max_side`` (faces in forensic footage are large; the
    detector's cost grows with pixels). frame (H, W, 3) BGR uint8 -> faces in full-frame coordinates."""

    def __init__(
        self,
        name: str,
        weights_dir: Path,
        max_side: int = DETECTION_SIDE,
        threshold: float = 0.8,
        device: torch.device | str = "cpu",
    ) -> None:
        filename = RETINAFACE_FILES[name][1]
        path = weights_dir / filename
        digest = sha256_file(path)
        known = DETECTORS[name].sha256
        if known is not None and digest != known:
            raise WeightsError(
                f"{path} is not the published {filename} (sha256 {digest[:16]}..., expected {known[:16]}...): "
                "refusing to load it"
            )
        self.net = _load_retinaface(name, path, device)
        self.mean = torch.tensor(BGR_MEAN, device=device).view(1, 3, 1, 1)
        self.max_side = max_side
        self.threshold = threshold
        self._anchors: dict[tuple[int, int], torch.Tensor] = {}
        self.info = {
            "name": name,
            "weights": str(path),
            "sha256": digest,
            "max_side": max_side,
            "device": str(device),
        }

    @torch.inference_mode()
    def detect(self, frame: np.ndarray, max_side: int | None = None) -> list[Face]:
        """facexlib's ``detect_faces`` (origin size, NMS 0.4) for the boxes and scores alone, with its anchors made
        once per frame size: facexlib rebuilds them in a Python loop on every call, 40 % of a 640x480 detection on
        the CPU and what held a GPU scan near 60 frames/s."""
        small, scale = _downscale(frame, max_side or self.max_side)
        h, w = small.shape[:2]
        net = self.net
        device = self.mean.device
        image = torch.from_numpy(small.astype(np.float32).transpose(2, 0, 1)).unsqueeze(0).to(device)
        loc, conf, _ = net(image - self.mean)
        boxes = decode(loc.squeeze(0), self._priors(h, w), net.cfg["variance"])
        boxes = boxes * torch.tensor([w, h, w, h], dtype=torch.float32, device=boxes.device)
        scores = conf.squeeze(0)[:, 1]
        kept = scores > self.threshold
        boxes, scores = boxes[kept].float().cpu(), scores[kept].float().cpu()
        order = nms(boxes.numpy(), scores.numpy(), NMS_THRESHOLD)
        return [Face(_box(boxes[i], scale), float(scores[i])) for i in order]

    def _priors(self, height: int, width: int) -> torch.Tensor:
        """facexlib's anchors (P, 4) for an input of this size, on the network's device, computed once."""
        key = (height, width)
        if key not in self._anchors:
            if len(self._anchors) >= 16:  # frame sizes of a long mixed archive: keep the memory bounded
                self._anchors.clear()
            self._anchors[key] = priors(self.net.cfg, height, width).to(self.mean.device)
        return self._anchors[key]


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Non-maximum suppression (OpenCV's): indices of the boxes (N, 4) x1, y1, x2, y2 kept, best score first; a box
    whose overlap (IoU) with a better kept one exceeds ``iou`` is dropped."""
    if len(boxes) == 0:
        return []
    rects = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1).astype(np.float64)
    return [int(i) for i in np.asarray(cv2.dnn.NMSBoxes(rects.tolist(), scores.tolist(), 0.0, iou)).flatten()]


def _load_retinaface(name: str, path: Path, device: torch.device | str) -> Any:
    """RetinaFace with the file's weights, read by ``torch.load(weights_only=True)`` (facexlib's own loader would
    unpickle the file): the MobileNet-0.25 network without importing facexlib's package (``retinaface.py``), the
    ResNet-50 one as facexlib's ``RetinaFace``."""
    if name == "retinaface":
        net: nn.Module = MobileRetinaFace()
    else:
        from facexlib.detection.retinaface import RetinaFace

        net = RetinaFace(network_name="resnet50", half=False, device=str(device))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k.removeprefix("module."): v for k, v in state.items()}
        net.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError, AttributeError, OSError, pickle.UnpicklingError) as exc:
        raise WeightsError(f"{path} is not a usable {name} weights file ({str(exc).splitlines()[0][:160]})") from None
    net.train(False)
    return net.to(device)


class MTCNNDetector:
    """MTCNN from facenet-pytorch, whose weights ship inside the installed package: the detector of last resort
    when no RetinaFace weights can be found or downloaded."""

    def __init__(
        self, max_side: int = DETECTION_SIDE, threshold: float = 0.9, device: torch.device | str = "cpu"
    ) -> None:
        import facenet_pytorch
        from facenet_pytorch import MTCNN

        self.net = MTCNN(keep_all=True, device=str(device), min_face_size=40)
        self.max_side = max_side
        self.threshold = threshold
        data = Path(facenet_pytorch.__file__).parent / "data"
        digest = "+".join(sha256_file(data / f"{n}.pt")[:16] for n in ("pnet", "rnet", "onet"))
        self.info = {
            "name": "mtcnn",
            "weights": str(data),
            "sha256": digest,
            "max_side": max_side,
            "device": str(device),
        }

    @torch.inference_mode()
    def detect(self, frame: np.ndarray, max_side: int | None = None) -> list[Face]:
        small, scale = _downscale(frame, max_side or self.max_side)
        boxes, probs = self.net.detect(cv2.cvtColor(small, cv2.COLOR_BGR2RGB))
        if boxes is None:
            return []
        return [
            Face(_box(box, scale), float(p))
            for box, p in zip(boxes, probs, strict=True)
            if p is not None and p >= self.threshold
        ]


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


def to_model_input(crops: list[np.ndarray]) -> torch.Tensor:
    """BGR uint8 crops (N, S, S, 3) -> CLIP-normalised RGB float tensor (N, 3, S, S)."""
    batch = torch.from_numpy(np.stack(crops)[..., ::-1].copy()).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return batch.sub_(mean).div_(std)


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
