"""Make examples/astronaut.mp4: a 2-second, 24 fps slow zoom-and-pan over examples/astronaut.png, written with OpenCV.

python examples/make_sample_clip.py
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent


def main(size: int = 256, frames: int = 48, fps: float = 24.0) -> Path:
    image = cv2.imread(str(HERE / "astronaut.png"))
    h, w = image.shape[:2]
    out = HERE / "astronaut.mp4"
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size, size))
    for t in np.linspace(0.0, 1.0, frames):
        zoom = 1.0 + 0.25 * t  # from the whole photo to a closer view of the face
        side = int(min(h, w) / zoom)
        x = int((w - side) * (0.5 - 0.15 * t))
        y = int((h - side) * (0.5 - 0.35 * t))
        writer.write(cv2.resize(image[y : y + side, x : x + side], (size, size), interpolation=cv2.INTER_AREA))
    writer.release()
    return out


if __name__ == "__main__":
    print(main())
