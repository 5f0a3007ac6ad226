"""The key-frame decision (``engine.keyframes``) on synthetic frames: which frames run the face detector, and where
the carried faces go. Real videos: ``test_keyframes_media``."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from gmdf_cli.data.faces import Face
from gmdf_cli.data.media import Frame
from gmdf_cli.engine import Engine, EngineOptions
from gmdf_cli.engine.keyframes import KeyFrames

BOX = (100.0, 60.0, 164.0, 124.0)


def scene(seed: int = 0, face_at: tuple[int, int] | None = (100, 60)) -> np.ndarray:
    """A 240x320 frame: a smooth random background and, at ``face_at``, a 64-pixel textured 'face'."""
    rng = np.random.default_rng(seed)
    frame = np.kron(rng.integers(0, 255, (15, 20, 3)), np.ones((16, 16, 1))).astype(np.uint8)
    if face_at is not None:
        x, y = face_at
        face = np.random.default_rng(99).integers(0, 255, (8, 8, 3))
        frame[y : y + 64, x : x + 64] = np.kron(face, np.ones((8, 8, 1))).astype(np.uint8)
    return frame


def run(frames: list[np.ndarray], every: int, found: list[Face] | None = None) -> tuple[list[int], list[list[Face]]]:
    """The frames the detector ran on (their positions) and the faces each frame got."""
    keys = KeyFrames(every)
    detected: list[int] = []
    faces = []
    for i, frame in enumerate(frames):

        def detect(image: np.ndarray, i: int = i) -> list[Face]:
            detected.append(i)
            return [Face(BOX, 0.99)] if found is None else found

        faces.append(keys.faces(frame, detect))
    return detected, faces


def test_every_kth_frame_is_detected_and_the_rest_carried() -> None:
    detected, faces = run([scene()] * 8, every=3)
    assert detected == [0, 3, 6]
    assert all(f == [Face(BOX, 0.99)] for f in faces)


def test_every_one_detects_every_frame() -> None:
    assert run([scene()] * 5, every=1)[0] == [0, 1, 2, 3, 4]


def test_a_scene_cut_forces_detection() -> None:
    # Another background, the same face at the same place: the face alone would be carried, the cut is not.
    frames = [scene(0), scene(0), scene(1), scene(1)]
    assert run(frames, every=10)[0] == [0, 2]
    keys = KeyFrames(10)
    assert keys.carry(frames[0])[1] == "first"
    keys.faces(frames[0], lambda image: [Face(BOX, 0.99)])
    assert keys.carry(frames[1])[1] == "carried" and keys.carry(frames[2])[1] == "scene-cut"


def test_no_face_on_the_key_frame_forces_detection() -> None:
    assert run([scene()] * 4, every=10, found=[])[0] == [0, 1, 2, 3]


def test_a_carried_face_follows_a_small_move_and_a_lost_one_forces_detection() -> None:
    moved = scene(face_at=(108, 64))
    detected, faces = run([scene(), moved], every=10)
    assert detected == [0]
    assert np.allclose(faces[1][0].box, (108.0, 64.0, 172.0, 128.0), atol=3)
    gone = scene(face_at=None)  # the same background: no scene cut, but the face is not there any more
    assert run([scene(), gone], every=10)[0] == [0, 1]


class FakeDetector:
    info: dict[str, Any] = {"max_side": 480}

    def __init__(self) -> None:
        self.calls = 0

    def detect(self, frame: np.ndarray, max_side: int | None = None) -> list[Face]:
        self.calls += 1
        return [Face(BOX, 0.99)]


def test_the_engine_detects_key_frames_of_videos_only() -> None:
    detector = FakeDetector()
    engine = Engine(None, detector, EngineOptions(detect_every=4))
    frames = [Frame(i, i / 25, scene()) for i in range(8)]
    found = list(engine.detect_frames(frames))
    assert detector.calls == 2 and [d.tracks for d in found] == [[0]] * 8
    list(engine.detect_frames(frames[:1], still=True))
    assert detector.calls == 3
    list(Engine(None, detector, EngineOptions()).detect_frames(frames))  # the engine's own default: every frame
    assert detector.calls == 11


def test_detect_every_flows_from_the_command_line_to_every_engine(tmp_path: Any, monkeypatch: Any) -> None:
    """``gmdf scan --detect-every K`` -> ``ScanRequest`` (its settings and recorded parameters) -> ``Detector``
    (this process and each ``--workers`` process open it with ``open_detector``) and Ray's engines."""
    import gmdf_cli.jobs.scan as scan_job
    from gmdf_cli.api import Detector
    from gmdf_cli.engine.keyframes import DETECT_EVERY
    from gmdf_cli.jobs.scan.ray import _engine_options
    from gmdf_cli.jobs.scan.request import ScanRequest, open_detector

    from .conftest import invoke_gmdf

    asked: list[ScanRequest] = []

    def fake_run_scan(request: ScanRequest, console: Any) -> Any:
        asked.append(request)
        raise SystemExit(0)

    monkeypatch.setattr(scan_job, "run_scan", fake_run_scan)
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"0")
    invoke_gmdf("scan", str(video), "--detect-every", "3")
    invoke_gmdf("scan", str(video))
    assert [r.detect_every for r in asked] == [3, DETECT_EVERY]
    assert invoke_gmdf("scan", str(video), "--detect-every", "0").returncode == 2

    request = asked[0]
    detector = SimpleNamespace(name="retinaface", sha256="0" * 64, max_side=480)
    info: Any = SimpleNamespace(model=SimpleNamespace(sha256="1" * 64), detector=detector, threshold=0.5, band=None)
    info.image_size = 224
    assert request.settings(info)["detect_every"] == 3
    assert request.parameters(0.5, "retinaface")["detect_every"] == 3
    assert _engine_options(request, info).detect_every == 3
    opened: list[dict[str, Any]] = []
    monkeypatch.setattr(Detector, "from_pretrained", lambda *args, **kwargs: opened.append(kwargs))
    open_detector(request, None, warn=print)  # type: ignore[arg-type]
    assert opened[0]["detect_every"] == 3
