"""The compiled graphs at work: GM-DF's score and RetinaFace run by OpenCV's DNN module on the CPU, standing in for
the torch model and detector in the engine. Imports no torch."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import numpy as np

from ..data.anchors import BGR_MEAN, MOBILENET_CFG, decode, priors
from ..data.boxes import Face, downscale, faces_from
from ..model.config import GMDFConfig
from .graphs import load_graph

CHUNK = 8
"""Faces per forward pass (as ``GMDF.score`` on a CPU)."""


class CompiledModel:
    """GM-DF's deployed score as an ONNX graph: CLIP-normalised images (B, 3, S, S) float32 -> P(fake) (B,) under
    the wildcard domain's prompts (eq. 9-11 with the cached prompt features), fp32 on the CPU. Scores as
    ``GMDF.score`` does, to ~1e-6 (checked when it was compiled)."""

    runtime = "opencv-dnn"

    def __init__(self, config: GMDFConfig, path: Path) -> None:
        self.config = config
        self.path = path
        self.net = load_graph(path)

    def score(self, images: np.ndarray, domain: Any = 0) -> list[float]:
        if not (isinstance(domain, int) and domain == 0):
            raise ValueError("a compiled model scores under the wildcard domain (0) only")
        scores: list[float] = []
        for start in range(0, len(images), CHUNK):
            self.net.setInput(np.ascontiguousarray(images[start : start + CHUNK], dtype=np.float32))
            scores += [float(p) for p in self.net.forward().reshape(-1)]
        return scores

    def __deepcopy__(self, memo: dict[int, Any]) -> CompiledModel:
        return CompiledModel(copy.deepcopy(self.config, memo), self.path)


class CompiledRetinaFace:
    """RetinaFace MobileNet-0.25 as an ONNX graph, run on the frame downscaled to ``max_side``, with the anchors,
    decoding and NMS of the torch detector (``gmdf_cli.data.retinaface.RetinaFaceDetector``), whose boxes it gives
    to ~1e-4 px. frame (H, W, 3) BGR uint8 -> faces in full-frame coordinates."""

    def __init__(self, path: Path, info: dict[str, Any], max_side: int, threshold: float = 0.8) -> None:
        self.path = path
        self.net = load_graph(path)
        self.max_side = max_side
        self.threshold = threshold
        self.info = info

    def detect(self, frame: np.ndarray, max_side: int | None = None) -> list[Face]:
        small, scale = downscale(frame, max_side or self.max_side)
        h, w = small.shape[:2]
        image = (small.astype(np.float32) - np.asarray(BGR_MEAN, np.float32)).transpose(2, 0, 1)[None]
        self.net.setInput(np.ascontiguousarray(image))
        loc, conf = self.net.forward(["loc", "conf"])
        boxes = decode(loc[0], _anchors(h, w), MOBILENET_CFG["variance"])
        boxes *= np.asarray([w, h, w, h], np.float32)
        return faces_from(boxes, conf[0][:, 1], self.threshold, scale)

    def __deepcopy__(self, memo: dict[int, Any]) -> CompiledRetinaFace:
        """A copy for another thread: its own network (an OpenCV network keeps per-call state)."""
        return CompiledRetinaFace(self.path, dict(self.info), self.max_side, self.threshold)


@functools.lru_cache(maxsize=16)  # frame sizes of a long mixed archive: memory stays bounded
def _anchors(height: int, width: int) -> np.ndarray:
    """RetinaFace MobileNet-0.25's anchors for an input of this size, made once (read, never written)."""
    return priors(MOBILENET_CFG, height, width)
