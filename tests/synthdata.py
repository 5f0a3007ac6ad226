"""Generated multi-domain deepfake data for training tests: videos of a real face under per-video variations, whose
fakes carry a domain-specific forgery trace in the face region."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ASTRONAUT = ROOT / "examples" / "astronaut.png"
FACE = (180, 60, 290, 205)


def _face_mask(shape: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    mask = np.zeros(shape, np.float32)
    x1, y1, x2, y2 = box
    cv2.ellipse(mask, ((x1 + x2) // 2, (y1 + y2) // 2), ((x2 - x1) // 2, (y2 - y1) // 2), 0, 0, 360, 1.0, -1)
    return cv2.GaussianBlur(mask, (15, 15), 5)[..., None]


def forge(image: np.ndarray, box: tuple[int, int, int, int], kind: str, rng: np.random.Generator) -> np.ndarray:
    """Apply a forgery trace of ``kind`` inside the face region of a BGR uint8 image."""
    mask = _face_mask(image.shape[:2], box)
    src = image.astype(np.float32)
    if kind == "blend":  # self-blend: a shifted, colour-jittered, blurred copy inside a soft ellipse
        alt = cv2.GaussianBlur(np.roll(src, (4, 6), (0, 1)), (9, 9), 3) * rng.uniform(0.75, 0.85, 3)
    elif kind == "noise":  # a checkerboard of 6-pixel cells
        yy, xx = np.indices(image.shape[:2])
        alt = src + ((((yy // 6) + (xx // 6)) % 2) * 2 - 1)[..., None] * 22.0
    elif kind == "blocks":  # 16x16 block averaging
        h, w = image.shape[:2]
        alt = cv2.resize(
            cv2.resize(src, (w // 16, h // 16), interpolation=cv2.INTER_AREA), (w, h), interpolation=cv2.INTER_NEAREST
        )
    else:
        raise ValueError(kind)
    return np.clip(src * (1 - mask) + alt * mask, 0, 255).astype(np.uint8)


def write_domain(root: Path, kind: str, videos: int, frames: int, seed: int) -> None:
    """ROOT/real/vNN.mp4 and ROOT/fake/vNN.mp4: each video its own pose, light and background."""
    base = cv2.imread(str(ASTRONAUT))
    rng = np.random.default_rng(seed)
    for label in ("real", "fake"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for v in range(videos):
            angle, scale = rng.uniform(-12, 12), rng.uniform(0.8, 1.1)
            gain, shift = rng.uniform(0.75, 1.2, 3), rng.integers(-30, 30, 2)
            writer = cv2.VideoWriter(
                str(root / label / f"v{v:02d}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (256, 256)
            )
            for f in range(frames):
                m = cv2.getRotationMatrix2D((235, 130), angle + f, scale)
                m[:, 2] += shift + f
                frame = cv2.warpAffine(base, m, (512, 512), borderMode=cv2.BORDER_REFLECT)
                frame = np.clip(frame * gain, 0, 255).astype(np.uint8)
                pts = cv2.transform(np.array([[[FACE[0], FACE[1]], [FACE[2], FACE[3]]]], np.float32), m)[0]
                box = (int(pts[:, 0].min()), int(pts[:, 1].min()), int(pts[:, 0].max()), int(pts[:, 1].max()))
                if label == "fake":
                    frame = forge(frame, box, kind, rng)
                writer.write(cv2.resize(frame, (256, 256), interpolation=cv2.INTER_AREA))
            writer.release()
