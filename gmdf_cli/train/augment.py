"""Per-crop training transforms: self-blended forgeries made on the fly, and the degradations a detector meets in
the wild. Everything draws from one ``numpy`` generator seeded per batch by the trainer, so a resumed run makes the
same images.

- :func:`online_blend` turns a cached *real* face crop into a self-blended fake (``gmdf synth``'s SBI applied to
  the crop itself): every step sees new blends, where an offline set repeats the same few hundred. Its mask is the
  hull of the crop's 68 landmarks (found by the ported face-api net, one per process) or an ellipse over the face box.
- :func:`degrade` is applied after blending, to real and fake alike, so a compression or blur never tells the
  classes apart: random resized crop, brightness/contrast/saturation, blur, down-and-up scaling, JPEG.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ..data.faces import CROP_SCALE
from ..data.media import jpeg_roundtrip
from ..data.synth import self_blend

if TYPE_CHECKING:
    from ..data.landmarks import FaceLandmark68Net

ONLINE_DOMAIN = "blend"
"""Name of the training domain whose fakes are self-blends of the real training crops of every other domain."""


def crop_face_box(size: int) -> tuple[float, float, float, float]:
    """Where the face box lies inside a cached crop (``crop_face`` centres it and scales its longer side by
    ``CROP_SCALE``); detector boxes are narrower than tall, hence the 0.85 width."""
    side = size / CROP_SCALE
    c = size / 2
    return (c - 0.425 * side, c - side / 2, c + 0.425 * side, c + side / 2)


@functools.cache
def _landmark_net() -> FaceLandmark68Net:
    from ..data.landmarks import load_landmark_net

    return load_landmark_net()


def online_blend(image: np.ndarray, rng: np.random.Generator, mask: str = "hull") -> np.ndarray:
    """(S, S, 3) uint8 real crop -> its self-blended forgery, same shape; ``mask`` ``hull`` (the landmarks') or
    ``ellipse`` (over the face box)."""
    box = crop_face_box(image.shape[0])
    points = None
    if mask == "hull":
        from ..data.landmarks import landmarks

        points = landmarks(_landmark_net(), image, box)
    return self_blend(image, box, rng, points)


def degrade(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(S, S, 3) uint8 -> (S, S, 3) uint8 with a random subset of in-the-wild degradations."""
    size = image.shape[0]
    out = image
    if rng.random() < 0.5:  # random resized crop, 80-100 % of the side
        side = int(size * rng.uniform(0.8, 1.0))
        x, y = (int(v) for v in rng.integers(0, size - side + 1, 2))
        out = cv2.resize(out[y : y + side, x : x + side], (size, size), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.3:  # brightness and contrast
        out = np.clip(out.astype(np.float32) * rng.uniform(0.8, 1.2) + rng.uniform(-20, 20), 0, 255).astype(np.uint8)
    if rng.random() < 0.2:  # saturation
        hsv = cv2.cvtColor(out, cv2.COLOR_BGR2HSV).astype(np.float32)
        hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.6, 1.3), 0, 255)
        out = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)
    if rng.random() < 0.15:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.4, 1.2))
    if rng.random() < 0.2:  # down- then up-scaling, as in re-uploaded or low-resolution footage
        small = max(16, int(size * rng.uniform(0.45, 0.8)))
        out = cv2.resize(cv2.resize(out, (small, small), interpolation=cv2.INTER_AREA), (size, size))
    if rng.random() < 0.5:
        decoded = jpeg_roundtrip(out, int(rng.integers(40, 96)))
        if decoded is not None:
            out = decoded
    return np.ascontiguousarray(out)
