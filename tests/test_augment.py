"""Training-time transforms: self-blends made on the fly and in-the-wild degradations (the trainer's use of them is
tested in test_train.py)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from gmdf_cli.data.faces import crop_face
from gmdf_cli.train.augment import crop_face_box, degrade, online_blend

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "astronaut.png"


def _face_crop(size: int = 224) -> np.ndarray:
    """The astronaut's face as a cache holds it (``crop_face`` around the detector's box)."""
    image = cv2.imread(str(EXAMPLE), cv2.IMREAD_COLOR)
    assert image is not None
    return crop_face(image, (180.0, 60.0, 290.0, 205.0), size)


def test_online_blend_changes_the_face_and_leaves_the_border() -> None:
    crop = _face_crop()
    x1, y1, x2, y2 = (int(v) for v in crop_face_box(224))
    changed = 0
    for seed, mask in [(s, m) for s in range(4) for m in ("hull", "ellipse")]:
        fake = online_blend(crop, np.random.default_rng(seed), mask)
        assert fake.shape == crop.shape and fake.dtype == np.uint8
        diff = np.abs(fake.astype(int) - crop.astype(int)).sum(axis=2)
        border = np.ones_like(diff, dtype=bool)
        border[max(0, y1 - 20) : y2 + 20, max(0, x1 - 20) : x2 + 20] = False
        assert diff[border].max() == 0  # outside the (soft) face mask nothing moves
        changed += int(
            diff[(y1 + y2) // 2 - 20 : (y1 + y2) // 2 + 20, (x1 + x2) // 2 - 20 : (x1 + x2) // 2 + 20].mean() > 1
        )
    assert changed >= 6  # the face centre is re-blended (a few draws use a faint 0.5 mask)


def test_online_blends_follow_the_landmarks_with_the_hull_mask() -> None:
    crop = _face_crop()
    for seed in range(4):
        regions = [
            np.abs(online_blend(crop, np.random.default_rng(seed), mask).astype(int) - crop).max(-1) > 0
            for mask in ("hull", "ellipse")
        ]
        hull, ellipse = regions
        assert hull.any() and (hull & ellipse).sum() / (hull | ellipse).sum() < 0.9


def test_degrade_is_seeded_and_keeps_the_crop_format() -> None:
    crop = _face_crop(128)
    outs = [degrade(crop, np.random.default_rng(s)) for s in range(20)]
    assert all(o.shape == crop.shape and o.dtype == np.uint8 for o in outs)
    again = degrade(crop, np.random.default_rng(3))
    assert np.array_equal(outs[3], again)
    assert sum(not np.array_equal(o, crop) for o in outs) >= 15
