"""The tfjs converter and the landmark port: dequantisation as the manifest says, the shipped weights are the converted
npm files with their provenance, and the torch port gives what face-api gives in JavaScript (fixtures made by
``tests/fixtures/face_landmark_68/reference.mjs`` with face-api 1.7.15 on tfjs 4.22.0's cpu backend)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from gmdf_cli.data.landmarks import SHIPPED, landmarks, load_landmark_net, to_input, to_points
from gmdf_cli.errors import UsageError
from gmdf_cli.tools.tfjs import convert, read_manifest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "face_landmark_68"
MANIFEST = FIXTURES / "face_landmark_68_model-weights_manifest.json"
REFERENCE = json.loads((FIXTURES / "reference.json").read_text())


def test_dequantisation_follows_the_manifest(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(bytes([0, 1, 2, 255]) + np.array([1.5], "<f4").tobytes()[:2])
    (tmp_path / "b.bin").write_bytes(
        np.array([1.5], "<f4").tobytes()[2:] + np.array([2, 65535], "<u2").tobytes() + np.array([0.25], "<f2").tobytes()
    )
    q8 = {"dtype": "uint8", "scale": 0.5, "min": -1}
    weights = [
        {"name": "q8", "shape": [2, 2], "dtype": "float32", "quantization": q8},
        {"name": "plain", "shape": [1], "dtype": "float32"},
        {"name": "q16", "shape": [2], "dtype": "float32", "quantization": {"dtype": "uint16", "scale": 2, "min": 1}},
        {"name": "half", "shape": [], "dtype": "float32", "quantization": {"dtype": "float16"}},
    ]
    (tmp_path / "m.json").write_text(json.dumps([{"paths": ["a.bin", "b.bin"], "weights": weights}]))
    got = read_manifest(tmp_path / "m.json")
    np.testing.assert_array_equal(got["q8"], np.array([[-1.0, -0.5], [0.0, 126.5]], np.float32))
    np.testing.assert_array_equal(got["plain"], np.array([1.5], np.float32))
    np.testing.assert_array_equal(got["q16"], np.array([5.0, 131071.0], np.float32))
    assert got["half"].shape == () and float(got["half"]) == 0.25
    (tmp_path / "b.bin").write_bytes(b"\x00")
    with pytest.raises(UsageError, match="shards end inside"):
        read_manifest(tmp_path / "m.json")


def test_the_shipped_landmark_weights_are_the_converted_npm_files(tmp_path: Path) -> None:
    meta = convert(MANIFEST, tmp_path / "lm.safetensors", "face-landmark-68", "@vladmandic/face-api", "1.7.15", "MIT")
    fresh, shipped = load_file(str(tmp_path / "lm.safetensors")), load_file(str(SHIPPED))
    assert fresh.keys() == shipped.keys() and all(torch.equal(fresh[k], shipped[k]) for k in fresh)
    with safe_open(str(SHIPPED), "pt") as fh:
        stored = fh.metadata()
    assert stored == meta and stored["source_package"] == "@vladmandic/face-api" and stored["source_license"] == "MIT"
    hashes = json.loads(stored["source_files"])
    for name in ("face_landmark_68_model-weights_manifest.json", "face_landmark_68_model.bin"):
        assert hashes[name] == hashlib.sha256((FIXTURES / name).read_bytes()).hexdigest()


@pytest.mark.parametrize("case", REFERENCE["results"], ids=lambda c: c["file"])
def test_the_port_gives_what_face_api_gives_in_javascript(case: dict) -> None:
    net = load_landmark_net()
    rgb = cv2.imread(str(FIXTURES / case["file"]))[:, :, ::-1]
    assert rgb.shape[:2] == (case["height"], case["width"])
    with torch.no_grad():
        raw = net(to_input(rgb)[None])
    np.testing.assert_allclose(raw[0].numpy(), np.array(case["raw"], np.float32), rtol=0, atol=1e-6)
    points = to_points(raw, case["width"], case["height"])[0].numpy()
    np.testing.assert_allclose(points, np.array(case["points"]), rtol=0, atol=1e-3)


def test_landmarks_of_a_face_box_are_in_image_pixels() -> None:
    """The crop fixture face_110x145.png is the astronaut's box (180, 60, 290, 205): the same points, moved."""
    image = cv2.imread(str(ROOT / "examples" / "astronaut.png"))
    points = landmarks(load_landmark_net(), image, (180, 60, 290, 205))
    case = next(c for c in REFERENCE["results"] if c["file"] == "face_110x145.png")
    np.testing.assert_allclose(points, np.array(case["points"]) + np.array([180.0, 60.0]), rtol=0, atol=1e-3)
    eyes, mouth = points[36:48, 1].mean(), points[48:68, 1].mean()
    assert eyes < points[30, 1] < mouth  # eyes above the nose tip, the nose tip above the mouth
    with pytest.raises(ValueError, match="no pixels"):
        landmarks(load_landmark_net(), image, (600, 600, 700, 700))
