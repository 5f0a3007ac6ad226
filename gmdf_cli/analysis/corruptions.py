"""Degradations at five severities, following DeeperForensics-1.0's perturbation definitions (Jiang et al. 2020).

Every function takes and returns a BGR uint8 image (H, W, 3). ``rng`` makes the random ones reproducible.
Video compression is different: the whole file is re-encoded with H.264 at a CRF (``encode_h264``), as footage on
the web is; a still image is re-encoded as JPEG instead, at the qualities in ``JPEG_QUALITY``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..data.media import jpeg_roundtrip

H264_CRF = (30, 32, 35, 38, 40)
"""Videos: "compression" level 1..5 re-encodes the whole file with H.264 at these CRFs (DeeperForensics-1.0)."""
JPEG_QUALITY = (75, 60, 45, 30, 15)
"""Still images: "compression" level 1..5 is a JPEG re-encoding at these qualities (DeeperForensics defines only the
video CRFs; these span mild to heavy web recompression)."""


def saturation(image: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """In YCbCr scaled to [0, 1]: Cb, Cr = 0.5 + (c - 0.5) * p (p = 0 leaves no chroma)."""
    ycc = cv2.cvtColor(image, cv2.COLOR_BGR2YCrCb).astype(np.float32) / 255.0
    ycc[..., 1:] = 0.5 + (ycc[..., 1:] - 0.5) * p
    return cv2.cvtColor(np.clip(ycc * 255.0 + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_YCrCb2BGR)


def contrast(image: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """pixel * p."""
    return np.clip(image.astype(np.float32) * p + 0.5, 0, 255).astype(np.uint8)


def block(image: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """round(p * min(h, w) / 256) grey (128) 8x8 blocks at random places, at least one: p blocks per 256 px of the
    shorter side, in proportion on any size (a 224 px face crop gets 14 ... 70; the old integer division gave a
    crop none, so crop-level sweeps reported the clean score as "block")."""
    out = image.copy()
    h, w = image.shape[:2]
    count = max(1, round(p * min(h, w) / 256))
    for _ in range(count):
        y, x = int(rng.integers(0, max(1, h - 8))), int(rng.integers(0, max(1, w - 8)))
        out[y : y + 8, x : x + 8] = 128
    return out


def noise(image: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """In YCbCr / 255 add sqrt(p) * N(0, 1) to every channel."""
    ycc = cv2.cvtColor(image, cv2.COLOR_BGR2YCrCb).astype(np.float32) / 255.0
    ycc += np.sqrt(p) * rng.standard_normal(ycc.shape).astype(np.float32)
    return cv2.cvtColor(np.clip(ycc * 255.0 + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_YCrCb2BGR)


def blur(image: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur, kernel p x p, sigma p / 6."""
    k = int(p)
    return cv2.GaussianBlur(image, (k, k), k / 6)


def pixelation(image: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """Downscale by p (area), upscale back (nearest)."""
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, round(w / p)), max(1, round(h / p))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def jpeg(image: np.ndarray, quality: float, rng: np.random.Generator) -> np.ndarray:
    decoded = jpeg_roundtrip(image, int(quality))
    if decoded is None:
        raise RuntimeError("JPEG re-encoding failed")
    return decoded


def compression(image: np.ndarray, crf: float, rng: np.random.Generator) -> np.ndarray:
    """On one image: JPEG at the level's quality (``JPEG_QUALITY``); videos are re-encoded whole (``encode_h264``)."""
    return jpeg(image, JPEG_QUALITY[H264_CRF.index(crf)], rng)


@dataclass(frozen=True)
class Corruption:
    """One registry entry: the name users type, the parameter of each severity 1..5, and the function."""

    name: str
    levels: tuple[float, float, float, float, float]
    function: Callable[[np.ndarray, float, np.random.Generator], np.ndarray]
    meaning: str
    """What ``levels`` holds, for the help text."""

    def param(self, level: int) -> float:
        if not 1 <= level <= 5:
            raise ValueError(f"severity level must be 1..5, got {level}")
        return self.levels[level - 1]


CORRUPTIONS: dict[str, Corruption] = {
    c.name: c
    for c in (
        Corruption("saturation", (0.4, 0.3, 0.2, 0.1, 0.0), saturation, "chroma scale in YCbCr"),
        Corruption("contrast", (0.85, 0.725, 0.6, 0.475, 0.35), contrast, "pixel scale"),
        Corruption("block", (16, 32, 48, 64, 80), block, "grey 8x8 blocks per 256 pixels of the shorter side"),
        Corruption("noise", (0.001, 0.002, 0.005, 0.01, 0.05), noise, "variance of Gaussian noise in YCbCr / 255"),
        Corruption("blur", (7, 9, 13, 17, 21), blur, "Gaussian kernel size, sigma = size / 6"),
        Corruption("pixelation", (2, 3, 4, 5, 6), pixelation, "downscale factor"),
        Corruption("compression", H264_CRF, compression, "H.264 CRF (videos; JPEG quality on images)"),
    )
}
"""The registry: CLI choices, help text and the sweep all come from here."""


def get_corruption(name: str) -> Corruption:
    try:
        return CORRUPTIONS[name]
    except KeyError:
        raise ValueError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}") from None


def param(name: str, level: int) -> float:
    return get_corruption(name).param(level)


def corrupt_image(image: np.ndarray, name: str, level: int, rng: np.random.Generator) -> np.ndarray:
    """One image (a frame, a still, or a face crop) at severity ``level``; "compression" is JPEG here."""
    corruption = get_corruption(name)
    return corruption.function(image, corruption.param(level), rng)


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


def h264_command(source: Path, target: Path, crf: float) -> list[str]:
    return [
        ffmpeg_exe(),
        "-v",
        "error",
        "-y",
        "-i",
        str(source),
        "-an",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-crf",
        f"{crf:g}",
        "-pix_fmt",
        "yuv420p",
        str(target),
    ]


def encode_h264(source: Path, target: Path, level: int) -> Path:
    """Re-encode a whole video with libx264 at the level's CRF (the encoder ships inside imageio-ffmpeg)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(h264_command(source, target, param("compression", level)), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"H.264 re-encoding failed: {done.stderr.strip().splitlines()[-1:] or done.returncode}")
    return target
