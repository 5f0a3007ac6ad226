"""A detected face and the box arithmetic every face detector shares: the frame shrunk for detection, boxes back
in frame pixels, RetinaFace's last step (threshold, non-maximum suppression)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np


@dataclass(frozen=True)
class Face:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in frame pixels
    score: float  # detector confidence


def downscale(frame: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """The frame shrunk (INTER_AREA) so its longer side is at most ``max_side``, and the factor it was shrunk by."""
    h, w = frame.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        frame = cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return frame, scale


def frame_box(values: Any, scale: float) -> tuple[float, float, float, float]:
    """A box x1, y1, x2, y2 found on a frame shrunk by ``scale``, in the full frame's pixels."""
    x1, y1, x2, y2 = (float(v) / scale for v in values)
    return x1, y1, x2, y2


NMS_THRESHOLD = 0.4
"""facexlib's default IoU threshold for RetinaFace's non-maximum suppression."""


def faces_from(boxes: np.ndarray, scores: np.ndarray, threshold: float, scale: float) -> list[Face]:
    """RetinaFace's last step, the same for every way it runs: boxes (P, 4) x1, y1, x2, y2 in pixels of the frame
    shrunk by ``scale`` and their scores (P,) -> the faces scoring above ``threshold`` after non-maximum
    suppression, best first, in full-frame coordinates."""
    kept = scores > threshold
    boxes, scores = boxes[kept], scores[kept]
    return [Face(frame_box(boxes[i], scale), float(scores[i])) for i in nms(boxes, scores, NMS_THRESHOLD)]


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Non-maximum suppression (OpenCV's): indices of the boxes (N, 4) x1, y1, x2, y2 kept, best score first; a box
    whose overlap (IoU) with a better kept one exceeds ``iou`` is dropped."""
    if len(boxes) == 0:
        return []
    rects = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1).astype(np.float64)
    return [int(i) for i in np.asarray(cv2.dnn.NMSBoxes(rects.tolist(), scores.tolist(), 0.0, iou)).flatten()]
