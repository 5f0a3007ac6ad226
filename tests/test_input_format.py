"""One way from a face crop to the model's input, for training and scanning alike: the config's ``face_px`` and
``face_jpeg`` take resolution and codec away as cues (a large clean PNG face and a small JPEG face of the same
content reach the model alike)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from gmdf_cli.data.cache import Crop, load_batch
from gmdf_cli.data.faces import InputFormat, canonical_face, to_model_input
from gmdf_cli.engine.batching import score_crops
from gmdf_cli.model import build_model, get_config
from gmdf_cli.model.bounds import ConfigError, check_config

from .conftest import perturbed

ASTRONAUT = Path(__file__).parents[1] / "examples" / "astronaut.png"


def _sharpness(image: np.ndarray) -> float:
    """Variance of the Laplacian: the fine detail a large clean face has and a small JPEG face lacks."""
    return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


def _cut(image: np.ndarray) -> np.ndarray:
    """The 224 px crop the pipeline cuts (``crop_face``'s interpolation)."""
    shrink = image.shape[0] > 224
    return cv2.resize(image, (224, 224), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def _large_and_small() -> tuple[np.ndarray, np.ndarray]:
    """The same face as a generator gives it (a 448 px clean image) and as a news photo gives it (144 px, JPEG
    q60, about what LFW's 250 px photos give), both cut to the pipeline's 224 px crop."""
    photo = cv2.imread(str(ASTRONAUT), cv2.IMREAD_COLOR)
    h, w = photo.shape[:2]
    side = min(h, w)
    face = photo[:side, (w - side) // 2 : (w + side) // 2]
    large = cv2.resize(face, (448, 448), interpolation=cv2.INTER_CUBIC)
    small = cv2.resize(face, (144, 144), interpolation=cv2.INTER_AREA)
    small = cv2.imdecode(cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 60])[1], cv2.IMREAD_COLOR)
    return _cut(large), _cut(small)


def test_a_large_clean_face_and_a_small_jpeg_face_reach_a_canonical_model_at_one_resolution() -> None:
    large, small = _large_and_small()
    as_cut = _sharpness(canonical_face(large, 224)) / _sharpness(canonical_face(small, 224))
    canonical = _sharpness(canonical_face(large, 224, 112, 85)) / _sharpness(canonical_face(small, 224, 112, 85))
    assert as_cut > 3.0  # as cut, the large face carries several times the fine detail: a cue for "generated"
    assert canonical < 1.5, (as_cut, canonical)


def test_a_model_without_face_px_sees_crops_as_before() -> None:
    """Weights made before face_px (0, 0) keep their input: a plain INTER_AREA resize to the model's size."""
    large, _ = _large_and_small()
    assert np.array_equal(canonical_face(large, 64), cv2.resize(large, (64, 64), interpolation=cv2.INTER_AREA))
    assert np.array_equal(canonical_face(large, 224), large)
    small = cv2.resize(large, (48, 48), interpolation=cv2.INTER_AREA)  # enlarged to the input size: INTER_AREA too
    assert np.array_equal(canonical_face(small, 64), cv2.resize(small, (64, 64), interpolation=cv2.INTER_AREA))


def test_scanning_and_training_bring_a_crop_to_the_model_the_same_way(tmp_path: Path) -> None:
    cfg = get_config("vit-tiny")
    cfg = cfg.replace(vision=dataclasses.replace(cfg.vision, face_px=24, face_jpeg=70))
    torch.manual_seed(0)
    model = perturbed(build_model(cfg)).eval()
    large, _ = _large_and_small()
    path = tmp_path / "crop.png"
    cv2.imwrite(str(path), large)
    row = Crop("d", "val", "v", 0, 0, path)

    trained_on, _, _ = load_batch([row], InputFormat.of(cfg.vision))
    expected = to_model_input([canonical_face(large, 64, 24, 70)])
    assert torch.equal(trained_on, expected)
    scanned = score_crops(model, [large])
    assert scanned == pytest.approx(model.score(trained_on), abs=1e-6)
    as_cut = model.score(to_model_input([canonical_face(large, 64)]))
    assert scanned != pytest.approx(as_cut, abs=1e-4)


def test_face_px_and_face_jpeg_are_checked_in_stored_configs() -> None:
    cfg = get_config("mnv2")
    raw = json.loads(cfg.replace(vision=dataclasses.replace(cfg.vision, face_px=112, face_jpeg=85)).to_json())
    check_config(json.dumps(raw))
    for key, value in (("face_jpeg", 101), ("face_px", -1), ("face_px", 10**6)):
        bad = json.loads(json.dumps(raw))
        bad["vision"][key] = value
        with pytest.raises(ConfigError):
            check_config(json.dumps(bad))
