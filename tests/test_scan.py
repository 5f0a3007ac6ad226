"""`gmdf scan` end to end through the CLI: real model (tiny config), real detector, real files written here."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from gmdf_cli.data.faces import Tracker, crop_face
from gmdf_cli.data.media import Sampling, discover
from gmdf_cli.model import build_model, get_config

from . import conftest
from .conftest import DETECTOR_WEIGHTS, HAVE_RETINAFACE, assert_schema, invoke_gmdf, perturbed, run_gmdf

ROOT = Path(__file__).resolve().parents[1]
ASTRONAUT = ROOT / "examples" / "astronaut.png"
FACE_BOX = (180, 60, 290, 205)  # the astronaut's face in examples/astronaut.png (x1, y1, x2, y2)


def detector_args() -> list[str]:
    """RetinaFace from ../shared/weights where present; else the detector shipped in facenet-pytorch."""
    if (DETECTOR_WEIGHTS / "detection_mobilenet0.25_Final.pth").is_file():
        return ["--detector-weights", str(DETECTOR_WEIGHTS)]
    return ["--detector", "mtcnn"]


def _face_tile(flip: bool, tint: int) -> np.ndarray:
    image = cv2.imread(str(ASTRONAUT))
    tile = crop_face(image, FACE_BOX, 200, scale=1.9)
    if flip:
        tile = cv2.flip(tile, 1)
    return cv2.add(tile, np.full_like(tile, tint))


def write_two_face_video(path: Path, frames: int = 40) -> None:
    """Two faces side by side, drifting in opposite directions."""
    left, right = _face_tile(False, 0), _face_tile(True, 25)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 20.0, (640, 360))
    for i in range(frames):
        canvas = np.full((360, 640, 3), 90, dtype=np.uint8)
        dx = i
        canvas[80:280, 40 + dx : 240 + dx] = left
        canvas[80:280, 400 - dx : 600 - dx] = right
        writer.write(canvas)
    writer.release()


def write_png_header_only(path: Path, width: int, height: int) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def check_contract(report: dict) -> None:
    """The JSON contract of issue 3."""
    assert set(report) >= {"files", "model", "detector", "version", "parameters", "environment", "started"}
    assert set(report["model"]) >= {"name", "sha256"} and len(report["model"]["sha256"]) == 64
    assert report["detector"]["name"] and report["detector"]["sha256"]
    for f in report["files"]:
        assert set(f) >= {"path", "sha256", "kind", "verdict", "score", "threshold", "frames", "tracks", "error"}
        assert f["verdict"] in {"real", "fake", "no-face", "error"}
        if f["verdict"] == "error":
            assert isinstance(f["error"], str) and f["error"]
            continue
        assert f["kind"] in {"video", "image"} and len(f["sha256"]) == 64
        assert 0.0 <= f["threshold"] <= 1.0
        scores = []
        for frame in f["frames"]:
            assert set(frame) >= {"index", "time", "faces"}
            frame_scores = []
            for face in frame["faces"]:
                assert set(face) >= {"box", "track", "score"}
                x1, y1, x2, y2 = face["box"]
                assert x2 > x1 and y2 > y1
                assert 0.0 <= face["score"] <= 1.0
                frame_scores.append(face["score"])
            if frame_scores:
                scores.append(max(frame_scores))
        if f["verdict"] == "no-face":
            assert f["score"] is None and not scores
            continue
        assert f["score"] == pytest.approx(float(np.mean(scores)))  # file score = mean of frame scores
        assert f["score_max"] == pytest.approx(max(scores))
        assert f["verdict"] == ("fake" if f["score"] >= f["threshold"] else "real")
        for track in f["tracks"]:
            assert set(track) >= {"track", "score", "verdict"}
            assert track["verdict"] == ("fake" if track["score"] >= f["threshold"] else "real")


def test_json_contract_and_per_track_verdicts(tiny_weights: Path, tmp_path: Path) -> None:
    video = tmp_path / "two_faces.mp4"
    write_two_face_video(video)
    out = invoke_gmdf(
        "scan", str(video), str(ASTRONAUT), "--weights", str(tiny_weights), "--json", "--frames", "8", *detector_args()
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert_schema("ScanReport", report)
    check_contract(report)
    vid, img = report["files"]
    assert vid["kind"] == "video" and img["kind"] == "image"
    assert len(vid["frames"]) == 8 and all(len(fr["faces"]) == 2 for fr in vid["frames"])
    assert len(vid["tracks"]) == 2
    left_track = {min(fr["faces"], key=lambda fa: fa["box"][0])["track"] for fr in vid["frames"]}
    assert len(left_track) == 1  # the left face keeps one track id through the video
    assert img["faces_found"] >= 1 and img["verdict"] in {"real", "fake"}
    assert img["media"]["width"] == 512 and vid["media"]["width"] == 640 and vid["media"]["fps"] == 20.0


@pytest.mark.slow
def test_bad_inputs_get_one_line_each_and_the_good_ones_are_scanned(tiny_weights: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "good.png").write_bytes(ASTRONAUT.read_bytes())
    cv2.imwrite(str(folder / "grey.png"), cv2.cvtColor(cv2.imread(str(ASTRONAUT)), cv2.COLOR_BGR2GRAY))
    (folder / "notes.txt").write_text("not media")
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "text.mp4").write_text("this is not a video\n" * 50)
    (folder / "broken.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    write_png_header_only(folder / "huge.png", 40000, 40000)
    writer = cv2.VideoWriter(str(folder / "zero.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 64))
    writer.release()
    full = tmp_path / "full.mp4"
    write_two_face_video(full, frames=30)
    (folder / "truncated.mp4").write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    csv_path = tmp_path / "faces.csv"

    out = run_gmdf(
        "scan",
        str(folder),
        "--weights",
        str(tiny_weights),
        "--json",
        "--csv",
        str(csv_path),
        "--frames",
        "4",
        *detector_args(),
    )
    assert out.returncode == 1, out.stderr  # some inputs failed
    assert "Traceback" not in out.stderr
    assert "moov atom" not in out.stderr and "@ 0x" not in out.stderr  # no FFmpeg noise, gmdf's own lines only
    report = json.loads(out.stdout)
    assert_schema("ScanReport", report)
    check_contract(report)
    verdicts = {Path(f["path"]).name: f for f in report["files"]}
    assert verdicts["good.png"]["verdict"] in {"real", "fake"}
    assert verdicts["grey.png"]["verdict"] in {"real", "fake"}  # grayscale is fine, not an error
    assert "notes.txt" not in verdicts and any("notes.txt" in p for p in report["skipped"])
    expected_errors = {
        "empty.mp4": "empty file",
        "text.mp4": "cannot open as a video",
        "broken.jpg": "cannot decode as an image",
        "huge.png": "too large",
        "zero.avi": "",
        "truncated.mp4": "",
    }
    for name, phrase in expected_errors.items():
        entry = verdicts[name]
        assert entry["verdict"] == "error", (name, entry)
        assert phrase in entry["error"], (name, entry["error"])
        lines = [line for line in out.stderr.splitlines() if name in line and line.startswith("error:")]
        assert len(lines) == 1, (name, lines)
    rows = csv_path.read_text().splitlines()
    assert rows[0].startswith("path,sha256,frame") and len(rows) >= 3  # the good files' faces were written


def test_out_dir_with_heatmaps_writes_plot_heatmaps_and_html(tiny_weights: Path, tmp_path: Path) -> None:
    video = tmp_path / "two_faces.mp4"
    write_two_face_video(video)
    out_dir = tmp_path / "report"
    out = invoke_gmdf(
        "scan",
        str(video),
        "--weights",
        str(tiny_weights),
        "--out",
        str(out_dir),
        "--heatmaps",
        "--frames",
        "6",
        *detector_args(),
    )
    assert out.returncode == 0, out.stderr
    report = json.loads((out_dir / "report.json").read_text())
    assert_schema("ScanReport", report)
    check_contract(report)
    folder = next(p for p in out_dir.iterdir() if p.is_dir())
    for name in ("timeline.png", "contact_sheet.png", "heatmap_00.png"):
        image = cv2.imread(str(folder / name))
        assert image is not None and image.shape[0] > 100, name
    html = (out_dir / "report.html").read_text()
    assert report["files"][0]["sha256"] in html
    faces = html.count('alt="face ')
    assert faces >= 1 and html.count('alt="Grad-CAM') == faces  # each face beside its overlay
    assert html.count("data:image/png;base64,") == 1 + 2 * faces  # the timeline, the faces, the overlays


def test_heatmaps_work_for_the_conv_tower() -> None:
    from gmdf_cli.analysis.heatmaps import gradcam_maps

    torch.manual_seed(0)
    cfg = get_config("cnn-small")
    # seed 2: this random tower's "fake" evidence at the last block is not negative everywhere (for seeds 0, 1 and 3
    # it is, and Grad-CAM's ReLU then leaves a blank map; the shipped file does that on the astronaut too)
    model = perturbed(build_model(cfg), seed=2)
    model.drop_text_tower()
    size = cfg.vision.image_size
    crop = crop_face(cv2.imread(str(ASTRONAUT)), FACE_BOX, size)
    maps = gradcam_maps(model, [crop, crop[:, ::-1].copy()])
    assert maps.shape == (2, size, size) and maps.min() >= 0 and maps.max() <= 1 and maps.std() > 0


def test_animated_webp_is_a_frame_sequence(tiny_weights: Path, tmp_path: Path) -> None:
    base = Image.open(ASTRONAUT).convert("RGB")
    frames = [base.rotate(angle) for angle in (0, 3, 6, 9, 12)]
    anim = tmp_path / "anim.webp"
    frames[0].save(anim, save_all=True, append_images=frames[1:], duration=100, loop=0)
    out = invoke_gmdf("scan", str(anim), "--weights", str(tiny_weights), "--json", *detector_args())
    assert out.returncode == 0, out.stderr
    entry = json.loads(out.stdout)["files"][0]
    assert entry["kind"] == "video" and len(entry["frames"]) == 5 and entry["frames_with_faces"] == 5


def test_a_zoo_entry_naming_a_local_file_is_one_clear_error(tmp_path: Path) -> None:
    """A user's zoo entry can only name a Hub file with its sha256, never pose as a shipped one."""
    zoo = tmp_path / "zoo.json"
    spec = {"config": "cnn-small", "sha256": "", "description": "", "local": "not-there.safetensors"}
    zoo.write_text(json.dumps({"gone": spec}))
    out = invoke_gmdf("scan", str(ASTRONAUT), "--weights", "gone", env={"GMDF_ZOO": str(zoo)})
    assert out.returncode == 2 and "needs repo_id" in out.stderr and "Traceback" not in out.stderr


def test_sampling_rules() -> None:
    assert Sampling().indices(751, 25.0)[:3] == [0, 24, 48] and len(Sampling().indices(751, 25.0)) == 32
    assert Sampling(frames=32).indices(10, 25.0) == list(range(10))
    assert Sampling(every=100).indices(751, 25.0) == [0, 100, 200, 300, 400, 500, 600, 700]
    window = Sampling(start=2.0, end=3.0).indices(751, 25.0)
    assert window[0] == 50 and window[-1] == 74 and len(window) == 25
    assert Sampling(all=True, start=29.9).indices(751, 25.0) == list(range(748, 751))
    assert Sampling(start=40.0).indices(751, 25.0) == []


def test_discover_sorts_recurses_and_reports(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.MP4").write_bytes(b"1")
    (tmp_path / "a.jpg").write_bytes(b"1")
    (tmp_path / "readme.md").write_text("x")
    (tmp_path / "linked").symlink_to(tmp_path / "b", target_is_directory=True)
    (tmp_path / "b" / "loop").symlink_to(tmp_path / "b", target_is_directory=True)  # a cycle must not hang
    found = discover([tmp_path, tmp_path / "a.jpg", tmp_path / "nope.png"])
    assert [i.path.name for i in found.items] == ["a.jpg", "x.MP4"]
    assert [i.kind for i in found.items] == ["image", "video"]
    assert [p.name for p in found.missing] == ["nope.png"] and [p.name for p in found.skipped] == ["readme.md"]


@pytest.mark.skipif(not HAVE_RETINAFACE, reason="needs the RetinaFace weights in ../shared/weights")
def test_retinaface_with_anchors_made_once_finds_what_facexlib_finds(tmp_path: Path) -> None:
    """Our detection path (facexlib's network loaded without its package, our anchors cached per frame size, our
    decoding and OpenCV's NMS) returns facexlib's own ``RetinaFace.detect_faces`` boxes and scores, on frames of two
    sizes, with two faces and with one, twice over (the second time from the cache)."""
    from facexlib.detection.retinaface import RetinaFace

    from gmdf_cli.data.boxes import downscale
    from gmdf_cli.data.faces import load_detector

    detector, _ = load_detector("retinaface", DETECTOR_WEIGHTS)
    reference = RetinaFace(network_name="mobile0.25", half=False, device="cpu")
    state = torch.load(DETECTOR_WEIGHTS / "detection_mobilenet0.25_Final.pth", map_location="cpu", weights_only=True)
    reference.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
    reference.train(False)
    write_two_face_video(tmp_path / "two.mp4", frames=2)
    capture = cv2.VideoCapture(str(tmp_path / "two.mp4"))
    _, two_faces = capture.read()
    capture.release()
    frames = [two_faces, cv2.imread(str(ROOT / "examples" / "astronaut.png"))]
    with torch.inference_mode():
        for frame in frames * 2:
            small, scale = downscale(frame, detector.max_side)
            ref = reference.detect_faces(small, conf_threshold=detector.threshold, use_origin_size=True)
            found = np.array([[*face.box, face.score] for face in detector.detect(frame)]).reshape(-1, 5)
            expected = ref[:, :5] / np.array([scale, scale, scale, scale, 1.0])
            assert found.shape == expected.shape and len(found) >= 1
            np.testing.assert_allclose(found, expected, atol=1e-3)
    assert len(detector.detect(two_faces)) == 2 and len(detector._anchors) == 2


def test_tracker_keeps_identities_apart() -> None:
    tracker = Tracker()
    assert tracker.assign([(0, 0, 10, 10), (100, 0, 110, 10)]) == [0, 1]
    assert tracker.assign([(102, 1, 112, 11), (2, 1, 12, 11)]) == [1, 0]
    assert tracker.assign([(300, 300, 310, 310)]) == [2]


@pytest.mark.slow
def test_interrupted_scan_keeps_the_finished_files(tiny_weights: Path, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    folder = tmp_path / "many"
    folder.mkdir()
    write_two_face_video(folder / "clip_00.mp4", frames=40)
    for i in range(1, 30):
        (folder / f"clip_{i:02d}.mp4").write_bytes((folder / "clip_00.mp4").read_bytes())
    out_dir, csv_path = tmp_path / "out", tmp_path / "faces.csv"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gmdf_cli",
            "scan",
            str(folder),
            "--weights",
            str(tiny_weights),
            "--csv",
            str(csv_path),
            "--out",
            str(out_dir),
            "--frames",
            "16",
            "--batch-size",
            "4",
            *detector_args(),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # SIGINT as a terminal's foreground job gets it: a suite started in the background of a non-interactive shell
        # (`bash .ci/run &`) hands SIGINT down ignored, and a process that starts with it ignored keeps ignoring it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if csv_path.exists() and len(csv_path.read_text().splitlines()) > 1:
            break
        time.sleep(0.1)
    assert proc.poll() is None, "the scan finished before it could be interrupted"
    os.kill(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr
    report = json.loads((out_dir / "report.json").read_text())
    assert_schema("ScanReport", report)
    assert report["interrupted"] is True
    assert 1 <= len(report["files"]) < 30
    assert all(f["verdict"] in {"real", "fake"} for f in report["files"])
    assert (out_dir / "report.html").is_file()


_INTERRUPTED_IMPORT = """
import sys
from gmdf_cli.cli import Interrupted, main

class InterruptedImport:  # what CPython makes of Ctrl-C arriving while a C extension initialises
    def find_spec(self, name, path=None, target=None):
        if name == "matplotlib.ft2font":
            try:
                raise Interrupted
            except Interrupted as exc:
                raise ImportError("initialization failed") from exc
        return None

sys.meta_path.insert(0, InterruptedImport())
sys.argv = ["gmdf", *sys.argv[1:]]
main()
"""


@pytest.mark.slow
def test_an_interrupt_wrapped_in_an_import_error_is_still_an_interrupt(tiny_weights: Path, tmp_path: Path) -> None:
    """Ctrl-C during matplotlib's import (before a video's first frame: its timeline will need it) reaches gmdf as
    ``ImportError: initialization failed`` caused by the interrupt: the scan ends as interrupted (exit 130, its
    report written), not with a traceback and exit 1."""
    import subprocess
    import sys

    out_dir, video = tmp_path / "out", tmp_path / "two.mp4"
    write_two_face_video(video, frames=4)
    args = ["scan", str(video), "--weights", str(tiny_weights), "--out", str(out_dir)]
    done = subprocess.run(
        [sys.executable, "-c", _INTERRUPTED_IMPORT, *args, *detector_args()], capture_output=True, text=True
    )
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr and "interrupted" in done.stderr
    assert json.loads((out_dir / "report.json").read_text())["interrupted"] is True


_INTERRUPTED_HEATMAPS = _INTERRUPTED_IMPORT.replace('"matplotlib.ft2font"', '"pytorch_grad_cam"')
"""Ctrl-C as the first file scanned this run draws its heatmaps (Grad-CAM is imported then, and only then)."""


@pytest.mark.slow
def test_an_interrupted_report_names_the_files_not_finished(tiny_weights: Path, tmp_path: Path) -> None:
    """A scan finishes one photo; a rerun into the same --out takes it over and is interrupted on the next file: its
    report.json lists that file (and the one after it) as unfinished, and the HTML banner names them, as text."""
    import subprocess
    import sys

    out_dir, photo = tmp_path / "out", tmp_path / "done.png"
    photo.write_bytes(ASTRONAUT.read_bytes())
    later = [tmp_path / "second <b>face.png", tmp_path / "third.png"]
    for path in later:
        path.write_bytes(ASTRONAUT.read_bytes())
    first = invoke_gmdf("scan", str(photo), "--weights", str(tiny_weights), "--out", str(out_dir), *detector_args())
    assert first.returncode == 0, first.stderr
    args = ["scan", str(photo), *map(str, later), "--weights", str(tiny_weights), "--out", str(out_dir), "--heatmaps"]
    done = subprocess.run(
        [sys.executable, "-c", _INTERRUPTED_HEATMAPS, *args, *detector_args()], capture_output=True, text=True
    )
    assert done.returncode == 130 and "resuming: 1 of 3" in done.stderr, done.stderr
    report = json.loads((out_dir / "report.json").read_text())
    assert_schema("ScanReport", report)
    assert report["interrupted"] is True and [f["path"] for f in report["files"]] == [str(photo)]
    assert report["unfinished"] == [str(p) for p in later]
    banner = (out_dir / "report.html").read_text().split('id="interrupted"', 1)[1].split("</div>", 1)[0]
    assert "2 file(s) not finished" in banner
    assert "<li>" + str(later[0]).replace("<", "&lt;").replace(">", "&gt;") + "</li>" in banner
    assert f"<li>{later[1]}</li>" in banner and str(photo) not in banner


@pytest.mark.slow
def test_offline_without_retinaface_weights_falls_back_to_the_shipped_detector(
    tiny_weights: Path, tmp_path: Path
) -> None:
    from gmdf_cli.data.faces import RETINAFACE_FILES, facexlib_weights_dir

    if (facexlib_weights_dir() / RETINAFACE_FILES["retinaface"][1]).is_file():
        pytest.skip("facexlib's own cache holds RetinaFace weights on this machine: nothing to fall back from")
    empty = tmp_path / "no-weights"
    empty.mkdir()
    env = {
        "GMDF_DETECTOR_WEIGHTS": str(tmp_path / "also-empty"),
        "https_proxy": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
    }  # no download can succeed, online or not
    out = run_gmdf(
        "scan", str(ASTRONAUT), "--weights", str(tiny_weights), "--json", "--detector-weights", str(empty), env=env
    )
    assert out.returncode == 0, out.stderr
    warnings = [line for line in out.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "using MTCNN" in warnings[0] and str(empty) in warnings[0]
    report = json.loads(out.stdout)
    assert report["detector"]["name"] == "mtcnn" and "not found" in report["detector"]["fallback_reason"]
    assert report["files"][0]["faces_found"] == 1


def test_detector_weights_from_the_environment(tiny_weights: Path) -> None:
    if not (DETECTOR_WEIGHTS / "detection_mobilenet0.25_Final.pth").is_file():
        pytest.skip("../shared/weights is not here")
    out = invoke_gmdf(
        "scan",
        str(ASTRONAUT),
        "--weights",
        str(tiny_weights),
        "--json",
        env={"GMDF_DETECTOR_WEIGHTS": str(DETECTOR_WEIGHTS)},
    )
    assert out.returncode == 0, out.stderr
    detector = json.loads(out.stdout)["detector"]
    assert detector["name"] == "retinaface" and detector["fallback_reason"] is None
    assert detector["sha256"] == "2979b33ffafda5d74b6948cd7a5b9a7a62f62b949cef24e95fd15d2883a65220"


def test_the_shipped_default_does_not_call_the_readme_astronaut_fake() -> None:
    """The README's first command scans examples/astronaut.{png,mp4}, a real photo and a clip of it: the shipped
    default must not call them fake (the previous default did, 0.84 and 0.86)."""
    from gmdf_cli import Detector

    detector = Detector.from_pretrained(
        device="cpu", face_detector=conftest.detector_options(), sampling=Sampling(frames=8)
    )
    examples = Path(__file__).resolve().parent.parent / "examples"
    results = list(detector.scan_many([examples / "astronaut.png", examples / "astronaut.mp4"]))
    assert [r.faces_found > 0 for r in results] == [True, True]
    assert [r.verdict for r in results if r.verdict == "fake"] == [], [(r.verdict, r.score) for r in results]
