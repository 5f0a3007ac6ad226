"""gmdf synth: self-blended and cross-identity fakes from real faces, ready for gmdf prepare."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
from rich.console import Console

from gmdf_cli.data.cache import read_index
from gmdf_cli.data.landmarks import landmarks, load_landmark_net
from gmdf_cli.data.synth import _jitter, cross_blend, donor_groups, hull_mask, self_blend, soft_mask
from gmdf_cli.jobs.prepare import PrepareRequest, run_prepare
from gmdf_cli.jobs.synth import SynthRequest, run_synth

from .conftest import DETECTOR_WEIGHTS, detector_options, invoke_gmdf

QUIET = Console(stderr=True, quiet=True)
ASTRONAUT = Path(__file__).resolve().parents[1] / "examples" / "astronaut.png"
BOX = (180.0, 60.0, 290.0, 205.0)
DET = {"detector": detector_options()}


def test_forgeries_change_the_face_region_only() -> None:
    image = cv2.imread(str(ASTRONAUT))
    rng = np.random.default_rng(0)
    mask = soft_mask(image.shape[:2], BOX, rng)
    assert mask.max() > 0.45 and mask[:40].max() == 0 and mask[:, 350:].max() == 0
    outside = np.ones(image.shape[:2], bool)
    outside[30:240, 150:320] = False  # the face box with a margin
    for fake in (
        self_blend(image, BOX, rng),
        cross_blend(image, BOX, np.ascontiguousarray(image[:, ::-1]), (222.0, 60.0, 332.0, 205.0), rng),
    ):
        assert fake.shape == image.shape and fake.dtype == np.uint8
        assert np.array_equal(fake[outside], image[outside])
        assert np.abs(fake[80:180, 200:270].astype(int) - image[80:180, 200:270]).mean() > 2


def test_the_hull_mask_follows_the_face_outline_not_the_box() -> None:
    image = cv2.imread(str(ASTRONAUT))
    points = landmarks(load_landmark_net(), image, BOX)
    chin, height = points[8], float(np.ptp(points[:, 1]))
    for seed in range(8):
        mask = hull_mask(image.shape[:2], points, np.random.default_rng(seed))
        peak = mask.max()
        nose = mask[int(points[30, 1]), int(points[30, 0])]
        assert peak > 0.2 and nose > 0.9 * peak  # the nose tip lies well inside
        assert mask[int(chin[1] + 0.25 * height) :].max() == 0  # nothing a quarter face below the chin
        brows = int(points[17:27, 1].min() - 0.25 * height)
        assert mask[:brows].max() == 0  # nor a quarter face above the brows
        ellipse = soft_mask(image.shape[:2], BOX, np.random.default_rng(seed)) > 0.05
        inside = mask > 0.05
        assert (inside & ellipse).sum() / (inside | ellipse).sum() < 0.9  # another region than the box's ellipse
    fake = self_blend(image, BOX, np.random.default_rng(0), points)
    changed = np.abs(fake.astype(int) - image).max(-1) > 0
    ys = np.nonzero(changed)[0]
    assert changed.any() and ys.max() < chin[1] + 0.25 * height and ys.min() > brows
    boxed = np.abs(self_blend(image, BOX, np.random.default_rng(0)).astype(int) - image).max(-1) > 0
    assert (changed & boxed).sum() / (changed | boxed).sum() < 0.9  # with landmarks, the blend follows them


def test_the_blended_source_is_made_coarser_or_sharper_than_the_face_it_covers() -> None:
    image = cv2.imread(str(ASTRONAUT))

    def detail(x: np.ndarray) -> float:
        gray = cv2.cvtColor(np.clip(x, 0, 255).astype(np.uint8), cv2.COLOR_BGR2GRAY)
        return float(cv2.Laplacian(gray, cv2.CV_64F).var())

    ratios = [detail(_jitter(image, np.random.default_rng(seed))) / detail(image) for seed in range(20)]
    assert sum(r < 0.5 for r in ratios) >= 8  # down-and-up scaling or blur, the commoner case
    assert sum(r > 1.5 for r in ratios) >= 3  # sharpening


def test_donor_groups_deal_every_source_into_groups_of_two_or_more() -> None:
    names = [f"s{i}" for i in range(7)]
    groups = donor_groups(names, 2, np.random.default_rng(0))
    assert set(groups) == set(names)
    sizes = sorted(list(groups.values()).count(g) for g in set(groups.values()))
    assert sizes == [2, 2, 3]  # the last group takes the remainder: nobody is left without a donor
    assert groups == donor_groups(names, 2, np.random.default_rng(0))  # seeded
    assert set(donor_groups(names[:3], 2, np.random.default_rng(1)).values()) == {"g00"}


def test_synth_writes_a_folder_dataset_that_prepare_splits_by_donor_group(tmp_path: Path) -> None:
    real = tmp_path / "footage"
    real.mkdir()
    image = cv2.imread(str(ASTRONAUT))
    for i, name in enumerate(("anna", "bert", "carl", "dora")):
        variant = image[:, ::-1] if i % 2 else image
        cv2.imwrite(str(real / f"{name}.png"), np.ascontiguousarray(np.clip(variant * (0.8 + 0.1 * i), 0, 255)))
    cv2.imwrite(str(real / "empty.png"), np.zeros((200, 200, 3), np.uint8))
    out = tmp_path / "synth"
    summary = run_synth(SynthRequest(root=real, out=out, per_frame=2, **DET), QUIET)
    assert summary["written"] == {"real": 4, "sbi": 8, "cross": 8}
    assert summary["skipped"] == {str(real / "empty.png"): "no face found"}
    groups = summary["groups"]
    assert sorted(groups) == ["g00", "g01"] and sorted(n for g in groups.values() for n in g) == [
        "anna",
        "bert",
        "carl",
        "dora",
    ]
    for group, members in groups.items():
        for name in members:
            assert (out / "real" / group / name / "000000.png").is_file()
            assert sorted(p.name for p in (out / "fake" / group / name).iterdir()) == [
                "000000_cross0.png",
                "000000_cross1.png",
                "000000_sbi0.png",
                "000000_sbi1.png",
            ]
    assert json.loads((out / "synth.json").read_text())["sources"] == 4

    cache = tmp_path / "cache"
    run_prepare(PrepareRequest(layout="folder", root=out, out=cache, group_by="^[^/]+", **DET), QUIET)
    with (cache / "index.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {r["identity"] for r in rows} == {"g00", "g01"}
    assert {c.identity for c in read_index(cache)} == {"g00", "g01"}  # read back with the crops
    for group, members in groups.items():
        mine = [r for r in rows if r["identity"] == group]
        assert len(mine) == 5 * len(members)  # each real frame, its two cross blends and its two self-blends
        assert len({r["split"] for r in mine}) == 1 and {r["label"] for r in mine} == {"0", "1"}


def test_synth_cli_needs_two_sources_for_cross_blends(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    cv2.imwrite(str(tmp_path / "one" / "a.png"), cv2.imread(str(ASTRONAUT)))
    out = invoke_gmdf(
        "synth",
        "--root",
        str(tmp_path / "one"),
        "--out",
        str(tmp_path / "o"),
        "--kind",
        "cross",
        *(["--detector-weights", str(DETECTOR_WEIGHTS)] if DETECTOR_WEIGHTS.is_dir() else []),
    )
    assert out.returncode == 2 and "at least two different files" in out.stderr
