"""Key frames: the face detector runs on some sampled frames of a video, and their faces are carried to the frames
between them, so that detection leaves the critical path of a scan (issue #43).

A sampled frame is a key frame, and its faces are detected, when it is

- the first of its video (or its size changed);
- ``every`` sampled frames after the last key frame (``every=1``: every frame, exactly as without key frames);
- the last key frame held no face;
- a scene cut: a small grey thumbnail of the whole frame differs from the last key frame's by more than
  ``scene_cut`` (mean absolute difference, 0..1);
- a lost track: one of the key frame's faces is no longer found near its box (below).

Any other frame takes the key frame's faces, each box moved by the face's own shift: the face as cut from the key
frame (grey, shrunk to ``TEMPLATE_SIDE`` pixels across) is looked for around its box in the new frame by normalised
cross-correlation (``cv2.matchTemplate``), and the best match must correlate at least ``min_match``, else the track is
lost and the frame is detected. A face that does not move keeps its box; the box keeps its size and the key frame's
detector score. Still images never get here (they are one frame).

``tests/test_keyframes_media.py`` bounds, on real videos, how far carried boxes and file scores may lie from
detecting on every frame; ``docs/scan.md`` states the figures.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:  # the CLI reads DETECT_EVERY for its help: no torch for that
    from ..data.faces import Face

DETECT_EVERY = 6
"""Sampled frames from one key frame to the next (the default of ``gmdf scan`` and ``Detector``)."""
THUMB_STEP = 8
"""The scene-cut thumbnail takes every ``THUMB_STEP``-th pixel each way (no resampling: it must cost almost nothing)."""
SCENE_CUT = 0.15
"""Mean absolute difference of grey thumbnails (0..1) from the key frame, from which a frame is a scene cut."""
TEMPLATE_SIDE = 24
"""Pixels across a face when it is looked for again: small enough to cost a fraction of a millisecond."""
SEARCH = 0.5
"""How far a face is looked for around its key-frame box, in box sides each way."""
MIN_MATCH = 0.7
"""Normalised cross-correlation below which a carried face counts as lost (the frame is then detected)."""

Box = tuple[float, float, float, float]


def thumbnail(image: np.ndarray, step: int = THUMB_STEP) -> np.ndarray:
    """A small grey copy of a frame for a scene-cut test: (H, W, 3) BGR uint8 -> (H/step, W/step) float32 in 0..1."""
    small = np.ascontiguousarray(image[::step, ::step])
    return cv2.cvtColor(small, cv2.COLOR_BGR2GRAY).astype(np.float32) / 255.0


def _grey_patch(image: np.ndarray, box: Box, scale: float) -> tuple[np.ndarray, float, float]:
    """The part of ``box`` inside the frame, grey and resized by ``scale``, with its top-left corner in frame
    pixels. (H, W, 3) BGR uint8 -> (h, w) float32."""
    h, w = image.shape[:2]
    x1, y1 = max(0, int(box[0])), max(0, int(box[1]))
    x2, y2 = min(w, int(np.ceil(box[2]))), min(h, int(np.ceil(box[3])))
    region = image[y1 : max(y2, y1 + 1), x1 : max(x2, x1 + 1)]
    size = (max(1, round(region.shape[1] * scale)), max(1, round(region.shape[0] * scale)))
    small = cv2.resize(region, size, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_BGR2GRAY).astype(np.float32), float(x1), float(y1)


@dataclass
class _Template:
    """One key-frame face as it is looked for again: its grey patch, the patch's corner and the scale it was cut at."""

    face: Face
    patch: np.ndarray
    left: float
    top: float
    scale: float

    @classmethod
    def of(cls, image: np.ndarray, face: Face) -> _Template:
        x1, y1, x2, y2 = face.box
        scale = TEMPLATE_SIDE / max(x2 - x1, y2 - y1, 1.0)
        patch, left, top = _grey_patch(image, face.box, scale)
        return cls(face, patch, left, top, scale)

    def find(self, image: np.ndarray, min_match: float) -> Face | None:
        """The face moved to where it best matches in ``image`` near its box, or None when no place matches at least
        ``min_match`` (or the patch is too flat to match anything)."""
        x1, y1, x2, y2 = self.face.box
        reach = SEARCH * max(x2 - x1, y2 - y1)
        window, left, top = _grey_patch(image, (x1 - reach, y1 - reach, x2 + reach, y2 + reach), self.scale)
        if window.shape[0] < self.patch.shape[0] or window.shape[1] < self.patch.shape[1]:
            return None
        scores = cv2.matchTemplate(window, self.patch, cv2.TM_CCOEFF_NORMED)
        _, best, _, (u, v) = cv2.minMaxLoc(scores)
        if not np.isfinite(best) or best < min_match:
            return None
        dx, dy = left + u / self.scale - self.left, top + v / self.scale - self.top
        return dataclasses.replace(self.face, box=(x1 + dx, y1 + dy, x2 + dx, y2 + dy))


@dataclass
class KeyFrames:
    """Decides, frame by frame of one video, whether to detect its faces or carry the key frame's (see the module's
    docstring). One instance per video: it keeps the last key frame's thumbnail and faces."""

    every: int = DETECT_EVERY
    scene_cut: float = SCENE_CUT
    min_match: float = MIN_MATCH
    _thumb: np.ndarray | None = field(default=None, repr=False)
    _size: tuple[int, ...] = ()
    _templates: list[_Template] = field(default_factory=list, repr=False)
    _since: int = 0

    def carry(self, image: np.ndarray) -> tuple[list[Face] | None, str]:
        """The key frame's faces moved onto this frame and ``"carried"``, or None and why this frame must be a key
        frame: ``first``, ``every``, ``no-face``, ``scene-cut`` or ``lost``."""
        if self._thumb is None or image.shape[:2] != self._size:
            return None, "first"
        if self._since + 1 >= self.every:
            return None, "every"
        if not self._templates:
            return None, "no-face"
        if float(np.abs(thumbnail(image) - self._thumb).mean()) > self.scene_cut:
            return None, "scene-cut"
        moved = [t.find(image, self.min_match) for t in self._templates]
        if any(face is None for face in moved):
            return None, "lost"
        return [face for face in moved if face is not None], "carried"

    def faces(self, image: np.ndarray, detect: Callable[[np.ndarray], list[Face]]) -> list[Face]:
        """The faces of the video's next frame: ``detect(image)`` on a key frame, else the key frame's, carried."""
        if self.every <= 1:
            return detect(image)
        carried, _ = self.carry(image)
        if carried is not None:
            self._since += 1
            return carried
        found = detect(image)
        self._thumb, self._size, self._since = thumbnail(image), image.shape[:2], 0
        self._templates = [_Template.of(image, face) for face in found]
        return found
