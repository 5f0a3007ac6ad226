"""MTCNN from facenet-pytorch: the face detector of last resort, its weights inside the installed package."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from ..fileio import sha256_file
from . import DETECTION_SIDE
from .boxes import Face, downscale, frame_box


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
        small, scale = downscale(frame, max_side or self.max_side)
        boxes, probs = self.net.detect(cv2.cvtColor(small, cv2.COLOR_BGR2RGB))
        if boxes is None:
            return []
        return [
            Face(frame_box(box, scale), float(p))
            for box, p in zip(boxes, probs, strict=True)
            if p is not None and p >= self.threshold
        ]
