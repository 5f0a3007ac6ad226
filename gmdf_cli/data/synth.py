"""`gmdf synth`: forgeries made from real faces, to train on when real deepfakes are scarce.

- ``sbi`` (self-blended image, after Shiohara & Yamasaki, CVPR 2022): the face is blended into a slightly
  transformed copy of itself (scale, shift, colour and frequency jitter) through a soft mask: the convex hull of the
  face's 68 landmarks (``data/landmarks.py``), randomly eroded or dilated and blurred, as the paper does (``mask
  "hull"``), or a randomly deformed ellipse over the detector box (``"ellipse"``, where no landmarks are at hand):
  the result carries blending boundaries and colour mismatches but no identity change.
- ``cross`` (cross-identity blend): the face of another real person, fitted to the face box, colour-matched and
  blended in through the same kind of soft mask: a crude face swap.

Output, ready for ``gmdf prepare --domain folder --group-by '^[^/]+'``::

    OUT/real/<group>/<source>/<frame>.png            the real frames used
    OUT/fake/<group>/<source>/<frame>_sbi<k>.png     their self-blended versions
    OUT/fake/<group>/<source>/<frame>_cross<k>.png   cross-identity blends onto them

``<source>`` is one folder per input file. The input files are dealt at random into groups of ``group_size``
(``g00``, ``g01``...) and a cross blend only takes its donor face from the same group, so splitting by group keeps
every face, as a real person and as a pasted donor, inside one split: a held-out person is never seen in training,
not even as the fake face of somebody else (which would teach a small model "this face is fake" and turn its
held-out scores upside down).
"""

from __future__ import annotations

import cv2
import numpy as np

KINDS = ("sbi", "cross")
"""The forgery kinds: the registry of ``gmdf synth --kind``."""
MASKS = ("hull", "ellipse")
"""How the blending mask is drawn: the landmarks' convex hull, or an ellipse over the face box."""
Box = tuple[float, float, float, float]


def soft_mask(shape: tuple[int, int], box: tuple[float, float, float, float], rng: np.random.Generator) -> np.ndarray:
    """A randomly deformed ellipse over the face box, blurred into a soft edge. (H, W) float32 in [0, 1]."""
    h, w = shape
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2 + rng.uniform(-0.04, 0.04) * (x2 - x1), (y1 + y2) / 2 + rng.uniform(-0.02, 0.06) * (y2 - y1)
    ax, ay = (x2 - x1) / 2 * rng.uniform(0.6, 0.95), (y2 - y1) / 2 * rng.uniform(0.65, 1.0)
    t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    wobble = 1 + rng.uniform(-0.08, 0.08, t.shape)
    points = np.stack([cx + ax * wobble * np.cos(t), cy + ay * wobble * np.sin(t)], axis=1).astype(np.int32)
    mask: np.ndarray = np.zeros((h, w), np.float32)
    cv2.fillPoly(mask, [points], 1.0)
    k = max(3, int(0.15 * max(ax, ay)) | 1)
    mask = cv2.GaussianBlur(mask, (k, k), k / 3)
    return mask * rng.choice([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])


def hull_mask(shape: tuple[int, int], points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """SBI's mask: the convex hull of the 68 landmarks (sometimes of the lower face only: jaw and nose, no brows),
    eroded or dilated by up to a tenth of the face, blurred into a soft edge, at a random blend ratio.
    points: (68, 2) pixels. Returns (H, W) float32 in [0, 1]."""
    h, w = shape
    chosen = points if rng.random() < 0.7 else np.concatenate([points[0:17], points[27:36]])
    hull = cv2.convexHull(np.round(chosen).astype(np.int32))
    mask: np.ndarray = np.zeros((h, w), np.float32)
    cv2.fillConvexPoly(mask, hull, 1.0)
    face = float(max(np.ptp(points[:, 0]), np.ptp(points[:, 1]), 8.0))
    k = int(face * rng.uniform(0.0, 0.1)) | 1
    if k > 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        mask = cv2.erode(mask, kernel) if rng.random() < 0.5 else cv2.dilate(mask, kernel)
    blur = max(3, int(face * rng.uniform(0.05, 0.2)) | 1)
    mask = cv2.GaussianBlur(mask, (blur, blur), blur / 3)
    return mask * rng.choice([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])


def blend_mask(
    shape: tuple[int, int], box: Box, rng: np.random.Generator, points: np.ndarray | None = None
) -> np.ndarray:
    """The landmarks' hull where ``points`` are given, else the ellipse over the box."""
    return hull_mask(shape, points, rng) if points is not None else soft_mask(shape, box, rng)


def _jitter(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Colour (per-channel gain and shift) and frequency jitter: down- and up-scaling by 2-4x (the coarse texture of
    a face a generator renders small and the swap pipeline enlarges), blur, or sharpening."""
    out: np.ndarray = image.astype(np.float32) * rng.uniform(0.9, 1.1, 3) + rng.uniform(-12, 12, 3)
    r = rng.random()
    if r < 0.5:
        h, w = out.shape[:2]
        f = rng.uniform(2.0, 4.0)
        small = cv2.resize(out, (max(8, round(w / f)), max(8, round(h / f))), interpolation=cv2.INTER_AREA)
        out = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    elif r < 0.7:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.6, 1.4))
    else:
        blurred = cv2.GaussianBlur(out, (0, 0), 1.2)
        out = cv2.addWeighted(out, 1.6, blurred, -0.6, 0)
    return np.clip(out, 0, 255)


def self_blend(image: np.ndarray, box: Box, rng: np.random.Generator, points: np.ndarray | None = None) -> np.ndarray:
    """SBI: the frame blended with a jittered, slightly scaled and shifted copy of itself inside a soft face mask
    (the landmarks' hull with ``points``, else an ellipse over ``box``)."""
    h, w = image.shape[:2]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    size = max(box[2] - box[0], box[3] - box[1])
    m = np.array(cv2.getRotationMatrix2D((cx, cy), 0.0, rng.uniform(0.95, 1.05)), dtype=np.float64)
    m[:, 2] += rng.uniform(-0.03, 0.03, 2) * size
    source = cv2.warpAffine(_jitter(image, rng), m, (w, h), borderMode=cv2.BORDER_REFLECT)
    mask = blend_mask((h, w), box, rng, points)[..., None]
    return np.clip(source * mask + image.astype(np.float32) * (1 - mask), 0, 255).astype(np.uint8)


def cross_blend(
    target: np.ndarray,
    box: tuple[float, float, float, float],
    donor: np.ndarray,
    donor_box: tuple[float, float, float, float],
    rng: np.random.Generator,
    points: np.ndarray | None = None,
) -> np.ndarray:
    """Another person's face fitted to ``box``, colour-matched (mean/std in Lab) and blended in softly (inside the
    target's landmark hull with ``points``)."""
    h, w = target.shape[:2]
    dx1, dy1, dx2, dy2 = donor_box
    x1, y1, x2, y2 = box
    src = np.array([[dx1, dy1], [dx2, dy1], [dx1, dy2]], dtype=np.float32)
    dst = np.array([[x1, y1], [x2, y1], [x1, y2]], dtype=np.float32)
    warped = cv2.warpAffine(donor, cv2.getAffineTransform(src, dst), (w, h), borderMode=cv2.BORDER_REFLECT)
    mask = blend_mask((h, w), box, rng, points)
    region = mask > 0.5
    if region.sum() > 16:
        lab_w = cv2.cvtColor(warped, cv2.COLOR_BGR2LAB).astype(np.float32)
        lab_t = cv2.cvtColor(target, cv2.COLOR_BGR2LAB).astype(np.float32)
        mu_w, sd_w = lab_w[region].mean(0), lab_w[region].std(0) + 1e-3
        mu_t, sd_t = lab_t[region].mean(0), lab_t[region].std(0) + 1e-3
        lab_w = (lab_w - mu_w) / sd_w * sd_t + mu_t
        warped = cv2.cvtColor(np.clip(lab_w, 0, 255).astype(np.uint8), cv2.COLOR_LAB2BGR)
    m = mask[..., None]
    return np.clip(_jitter(warped, rng) * m + target.astype(np.float32) * (1 - m), 0, 255).astype(np.uint8)


def donor_groups(sources: list[str], size: int, rng: np.random.Generator) -> dict[str, str]:
    """Deal the sources at random into groups of ``size`` (at least 2, the last group takes the remainder):
    source -> group name ``gNN``."""
    size = max(2, size)
    order = [sources[i] for i in rng.permutation(len(sources))]
    count = max(1, len(order) // size)
    return {name: f"g{min(i // size, count - 1):02d}" for i, name in enumerate(order)}
