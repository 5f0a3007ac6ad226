"""Key frames on real videos: detecting faces on key frames only (``--detect-every``, default
``keyframes.DETECT_EVERY``) must give boxes and file scores close to detecting on every sampled frame.

Tolerances, checked on three real videos of ``../shared/media`` (32 frames each, RetinaFace from
``../shared/weights``, the shipped default model), each chosen for a face that moves between sampled frames:

- every face box of a key-frame scan overlaps a face box of the every-frame scan of the same frame with
  IoU >= ``IOU_BOUND`` (0.7), and each frame holds as many faces either way;
- each file's score differs by at most ``SCORE_TOLERANCE`` (0.03) between the two scans;
- the key-frame scan ran the face detector on at most half of the frames (else it saved nothing).

``docs/scan.md`` states the same figures and those measured."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gmdf_cli.api import Detector
from gmdf_cli.data.faces import Face, iou
from gmdf_cli.engine.keyframes import DETECT_EVERY
from gmdf_cli.report.results import FileResult
from gmdf_cli.weights import DEFAULT_WEIGHTS

from .conftest import HAVE_RETINAFACE, MEDIA, detector_options

IOU_BOUND = 0.7
SCORE_TOLERANCE = 0.03
VIDEOS = [
    "celebdf_hantschmann/fake/assets__videos__deepfake__id26_id25_0006.mp4",
    "celebdf_hantschmann/real/assets__videos__real__id33_0003.mp4",
    "ffpp_icpr2020/fake/test__data__ffpp__manipulated_sequences__Face2Face__c23__videos__750_743.mp4",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not all((MEDIA / v).is_file() for v in VIDEOS), reason="../shared/media is not here"),
    pytest.mark.skipif(not HAVE_RETINAFACE, reason="../shared/weights has no RetinaFace"),
]


class Counting:
    """A face detector that counts the frames it is run on."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.info, self.calls = inner, inner.info, 0

    def detect(self, frame: np.ndarray, max_side: int | None = None) -> list[Face]:
        self.calls += 1
        result: list[Face] = self.inner.detect(frame, max_side)
        return result


def scan(every: Detector, detect_every: int, video: Path) -> tuple[FileResult, int]:
    """One video scanned with the detector run on every ``detect_every``-th frame; the result and the detections."""
    counting = Counting(every.face_detector)
    options = dataclasses.replace(every.options, detect_every=detect_every)
    detector = Detector(every.model, every.weights, every.metadata, counting, options)  # type: ignore[arg-type]
    return detector.scan(video), counting.calls


@pytest.fixture(scope="module")
def every_frame() -> Detector:
    return Detector.from_pretrained(DEFAULT_WEIGHTS, device="cpu", face_detector=detector_options(), detect_every=1)


@pytest.mark.parametrize("name", VIDEOS, ids=lambda v: Path(v).stem[-16:])
def test_key_frames_stay_close_to_every_frame(every_frame: Detector, name: str) -> None:
    video = MEDIA / name
    exact, exact_calls = scan(every_frame, 1, video)
    keyed, keyed_calls = scan(every_frame, DETECT_EVERY, video)
    assert exact.score is not None and keyed.score is not None
    assert exact_calls == len(exact.frames) == len(keyed.frames) == 32
    assert keyed_calls <= len(keyed.frames) // 2, f"the detector ran on {keyed_calls} of {len(keyed.frames)} frames"
    overlaps = []
    for a, b in zip(exact.frames, keyed.frames, strict=True):
        assert a.index == b.index and len(a.faces) == len(b.faces), f"frame {a.index}"
        overlaps += [max(iou(tuple(f.box), tuple(g.box)) for g in a.faces) for f in b.faces]
    difference = abs(keyed.score - exact.score)
    print(f"{video.name}: detected {keyed_calls}/32, IoU min {min(overlaps):.3f}, score diff {difference:.4f}")
    assert min(overlaps) >= IOU_BOUND
    assert difference <= SCORE_TOLERANCE, (exact.score, keyed.score)
