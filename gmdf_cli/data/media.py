"""Inputs -> frames: discovering files, choosing which frames to look at, and decoding only those."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import UsageError

# FFmpeg's own log lines ("moov atom not found", ...) are not for gmdf's users: every unreadable file is reported once,
# by gmdf, in its results. OpenCV reads this when it first opens a video.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"})
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
ANIMATED_EXTENSIONS = frozenset({".gif", ".webp"})
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS | IMAGE_EXTENSIONS


class MediaError(Exception):
    """A file that cannot be read as an image or video; the message is one line for the user."""


@dataclass(frozen=True)
class MediaItem:
    path: Path
    kind: str  # "video" | "image" (animated images become "video" once opened)


@dataclass(frozen=True)
class Discovery:
    items: list[MediaItem]
    missing: list[Path]
    """Paths given on the command line that do not exist."""
    skipped: list[Path]
    """Files inside given folders that are not images or videos (by extension)."""


def kind_of(path: Path) -> str:
    return "video" if path.suffix.lower() in VIDEO_EXTENSIONS else "image"


def discover(paths: Sequence[str | Path], exclude: Sequence[Path] = ()) -> Discovery:
    """Expand folders recursively (sorted, deduplicated); files named explicitly are always tried. Files below an
    ``exclude`` folder (a report folder inside a scanned folder) are never inputs."""
    outside = [p.resolve() for p in exclude]
    items: list[MediaItem] = []
    missing: list[Path] = []
    skipped: list[Path] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            missing.append(path)
            continue
        if path.is_dir():
            for child in walk_files(path):
                if child.name.startswith(".") or any(child.resolve().is_relative_to(o) for o in outside):
                    continue
                if child.suffix.lower() not in MEDIA_EXTENSIONS:
                    skipped.append(child)
                elif child.resolve() not in seen:
                    seen.add(child.resolve())
                    items.append(MediaItem(child, kind_of(child)))
        elif path.resolve() not in seen:
            seen.add(path.resolve())
            items.append(MediaItem(path, kind_of(path)))
    return Discovery(items, missing, skipped)


def walk_files(folder: Path) -> list[Path]:
    """Files below ``folder``, sorted, following symlinked folders (each real folder visited once)."""
    seen: set[str] = set()
    found: list[Path] = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        found.extend(Path(root) / f for f in files)
    return sorted(p for p in found if p.is_file())


def labelled_items(folder: Path) -> list[tuple[MediaItem, int]]:
    """The images and videos of a labelled folder, ``folder/real/...`` (label 0) and ``folder/fake/...`` (label 1)."""
    items: list[tuple[MediaItem, int]] = []
    for sub, label in (("real", 0), ("fake", 1)):
        if not (folder / sub).is_dir():
            raise UsageError(f"{folder} needs real/ and fake/ subfolders (missing {sub}/)")
        items.extend((item, label) for item in discover([folder / sub]).items)
    if not items:
        raise UsageError(f"no images or videos in {folder}/real or {folder}/fake")
    return items


@dataclass(frozen=True)
class Sampling:
    """Which frames of a video to look at. Default: ``frames`` evenly spread (the community's 32)."""

    frames: int = 32
    every: int | None = None
    all: bool = False
    start: float | None = None
    end: float | None = None

    def indices(self, total: int, fps: float) -> list[int]:
        lo = max(0, int(round((self.start or 0.0) * fps))) if fps > 0 else 0
        hi = total if self.end is None or fps <= 0 else min(total, int(round(self.end * fps)))
        if hi <= lo:
            return []
        if self.all:
            return list(range(lo, hi))
        if self.every:
            return list(range(lo, hi, self.every))
        count = min(self.frames, hi - lo)
        return sorted({int(round(x)) for x in np.linspace(lo, hi - 1, count)})

    def describe(self) -> str:
        if self.all:
            how = "every frame"
        elif self.every:
            how = f"every {self.every}th frame"
        else:
            how = f"{self.frames} frames spread evenly"
        if self.start is not None or self.end is not None:
            how += f" between {self.start or 0:g}s and {'the end' if self.end is None else f'{self.end:g}s'}"
        return how


@dataclass
class Frame:
    index: int
    time: float
    image: np.ndarray  # (H, W, 3) uint8 BGR


@dataclass
class OpenedMedia:
    """A file opened for reading: how many frames it claims, its rate, and which frames will be read."""

    path: Path
    kind: str
    total_frames: int
    fps: float
    indices: list[int]
    width: int
    height: int


def _count_frames(cap: cv2.VideoCapture) -> int:
    count = 0
    while cap.grab():
        count += 1
    return count


def open_media(item: MediaItem, sampling: Sampling) -> OpenedMedia:
    """Probe a file (cheaply) and decide which frames to read. Raises MediaError for unreadable files."""
    path = item.path
    if path.stat().st_size == 0:
        raise MediaError("empty file")
    if item.kind == "image":
        if path.suffix.lower() in ANIMATED_EXTENSIONS:
            frames, fps, (w, h) = _animated_info(path)
            if frames > 1:
                return OpenedMedia(path, "video", frames, fps, sampling.indices(frames, fps), w, h)
        return OpenedMedia(path, "image", 1, 0.0, [0], 0, 0)
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise MediaError("cannot open as a video (not a video file, or an unsupported codec)")
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if total <= 0:  # some containers do not say; count by decoding once
            total = _count_frames(cap)
        if total <= 0:
            raise MediaError("the video has no frames that can be decoded")
        return OpenedMedia(path, "video", total, fps if fps > 0 else 25.0, sampling.indices(total, fps), w, h)
    finally:
        cap.release()


def read_frames(media: OpenedMedia) -> Iterator[Frame]:
    """Decode the chosen frames: one sequential pass with grab() (seeking is far slower), retrieve() only for the
    chosen ones. A truncated video simply yields fewer frames."""
    if media.kind == "image" and media.total_frames == 1:
        yield Frame(0, 0.0, read_image(media.path))
        return
    if media.path.suffix.lower() in ANIMATED_EXTENSIONS and media.path.suffix.lower() not in VIDEO_EXTENSIONS:
        yield from _read_animated(media)
        return
    if not media.indices:
        return
    cap = cv2.VideoCapture(str(media.path))
    try:
        wanted = set(media.indices)
        first, last = media.indices[0], media.indices[-1]
        index = 0
        if first > 2 * media.fps and cap.set(cv2.CAP_PROP_POS_FRAMES, first):  # one seek to a late --start
            index = int(cap.get(cv2.CAP_PROP_POS_FRAMES))
            if index != first:  # inexact seek: start over sequentially
                cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                index = 0
        while index <= last and cap.grab():
            if index in wanted:
                ok, image = cap.retrieve()
                if ok and image is not None:
                    yield Frame(index, index / media.fps, _as_bgr(image))
            index += 1
    finally:
        cap.release()


MAX_IMAGE_PIXELS = 1 << 28
"""Larger images (over ~268 megapixels) are refused rather than allowed to exhaust memory."""


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray | None:
    """A BGR uint8 image encoded as JPEG at ``quality`` (1-100) and decoded again, as a re-saved file would be; None
    when OpenCV's codec fails (each caller decides what that means)."""
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return cv2.imdecode(data, cv2.IMREAD_COLOR) if ok else None


def read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:  # reads the header only
            width, height = img.size
    except Image.DecompressionBombError as exc:
        raise MediaError(f"image too large ({exc})") from None
    except (UnidentifiedImageError, OSError, ValueError):
        width = height = 0
    if width * height > MAX_IMAGE_PIXELS:
        raise MediaError(f"image too large ({width}x{height} pixels; the limit is {MAX_IMAGE_PIXELS:,} pixels)")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        image = _read_with_pillow(path)
    return _as_bgr(image)


def _as_bgr(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.dtype != np.uint8:
        image = cv2.convertScaleAbs(image, alpha=255.0 / max(1.0, float(image.max())))
    return np.ascontiguousarray(image)


def _read_with_pillow(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return cv2.cvtColor(np.asarray(img.convert("RGB")), cv2.COLOR_RGB2BGR)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise MediaError(f"cannot decode as an image ({str(exc).splitlines()[0] or type(exc).__name__})") from None


def _animated_info(path: Path) -> tuple[int, float, tuple[int, int]]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            frames = int(getattr(img, "n_frames", 1))
            duration_ms = float(img.info.get("duration") or 40.0)
            return frames, 1000.0 / max(duration_ms, 1.0), img.size
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise MediaError(f"cannot decode as an image ({str(exc).splitlines()[0] or type(exc).__name__})") from None


def _read_animated(media: OpenedMedia) -> Iterator[Frame]:
    from PIL import Image, ImageSequence

    wanted = set(media.indices)
    with Image.open(media.path) as img:
        for index, frame in enumerate(ImageSequence.Iterator(img)):
            if index > media.indices[-1]:
                break
            if index in wanted:
                rgb = np.asarray(frame.convert("RGB"))
                yield Frame(index, index / media.fps, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
