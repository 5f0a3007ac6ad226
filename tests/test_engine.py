"""The one engine and its public face: typed results and their published schema, the Python API (the README's
example), robustness on the engine's path, the jobs layer's size, and a wheel that scans out of the box."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from gmdf_cli import Detector
from gmdf_cli.data.media import Sampling
from gmdf_cli.errors import UsageError
from gmdf_cli.jobs.robustness import CLEAN, RobustnessRequest, run_robustness
from gmdf_cli.report.schema import build_schema, load_schema, to_jsonable

from .conftest import DETECTOR_WEIGHTS, HAVE_RETINAFACE, TinyWeights, assert_schema, detector_options

ROOT = Path(__file__).resolve().parents[1]
ASTRONAUT = ROOT / "examples" / "astronaut.png"
QUIET = Console(quiet=True)


@pytest.fixture(scope="module")
def weights(tiny_weights_factory: TinyWeights) -> Path:
    return tiny_weights_factory(seed=5, std=0.3)


def test_published_schema_is_the_one_the_typed_results_generate() -> None:
    """schema.json is package data generated from report/results.py: a field added to a result and not to the file
    (or the reverse) fails here. Regenerate with `python -m gmdf_cli.report.schema > gmdf_cli/report/schema.json`."""
    assert load_schema() == build_schema()


def test_serialised_results_leave_internal_fields_out_and_nan_becomes_null(weights: Path) -> None:
    detector = Detector.from_pretrained(str(weights), device="cpu", keep_crops=2, face_detector=detector_options())
    result = detector.scan(ASTRONAUT)
    assert result.suspicious and result.faces_found >= 1  # kept in memory for heatmaps ...
    data = to_jsonable(result)
    assert "suspicious" not in data and "frames_requested" not in data  # ... never written out
    result.score = float("nan")
    assert to_jsonable(result)["score"] is None


def test_api_scan_gives_typed_results_and_one_error_for_a_missing_file(weights: Path, tmp_path: Path) -> None:
    detector = Detector.from_pretrained(str(weights), device="cpu", face_detector=detector_options())
    result = detector.scan(ASTRONAUT)
    assert result.verdict in ("real", "fake") and result.kind == "image" and result.frames[0].faces
    assert result.frames[0].score == max(f.score for f in result.frames[0].faces if f.score is not None)
    with pytest.raises(UsageError, match="no such file"):
        detector.scan(tmp_path / "missing.mp4")
    many = list(detector.scan_many([ASTRONAUT, tmp_path / "missing.mp4"]))
    assert many[0].verdict == "error" and many[1].score == result.score


def test_robustness_clean_level_is_the_plain_scan(weights: Path, tmp_path: Path) -> None:
    """The sweep's clean scores are what `scan` gives the same files: one engine, one scoring rule."""
    data = tmp_path / "data"
    (data / "real").mkdir(parents=True)
    (data / "fake").mkdir()
    shutil.copy(ROOT / "examples" / "astronaut.mp4", data / "fake" / "clip.mp4")
    shutil.copy(ASTRONAUT, data / "real" / "astronaut.png")
    request = RobustnessRequest(
        data=data,
        corruptions=["blur"],
        levels=[1],
        out=tmp_path / "sweep",
        weights=str(weights),
        frames=4,
        detector=detector_options(),
        device="cpu",
    )
    run_robustness(request, QUIET)
    records = [json.loads(p.read_text()) for p in (tmp_path / "sweep" / "records").glob("*.json")]
    detector = Detector.from_pretrained(
        str(weights),
        device="cpu",
        sampling=Sampling(frames=4),
        batch_size=32,
        face_detector=detector_options(),
        detect_every=1,  # the sweep finds faces on every frame, clean or corrupted: no key frames
    )
    assert len(records) == 2
    for record in records:
        scanned = detector.scan(record["path"])
        assert record["scores"][CLEAN]["score"] == pytest.approx(scanned.score, abs=1e-6)
        assert record["scores"][CLEAN]["frames"] == pytest.approx([f.score for f in scanned.frames], abs=1e-6)
        assert record["scores"]["blur/1"]["score"] != record["scores"][CLEAN]["score"]


def test_no_job_or_command_function_is_longer_than_sixty_lines() -> None:
    files = [*sorted((ROOT / "gmdf_cli" / "jobs").rglob("*.py")), ROOT / "gmdf_cli" / "cli.py"]
    long = [
        f"{path.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path in files
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef) and (node.end_lineno or 0) - node.lineno + 1 > 60
    ]
    assert not long


def _api_example() -> str:
    text = (ROOT / "docs" / "python-api.md").read_text()
    match = re.search(r"```python\n(.*?)```", text, re.S)
    assert match, "docs/python-api.md has no python example"
    return match.group(1)


@pytest.mark.slow
def test_the_documented_api_example_runs() -> None:
    """docs/python-api.md's five lines, as a user pastes them, in a fresh interpreter at the repository root."""
    code = _api_example()
    assert len([line for line in code.splitlines() if line.strip()]) <= 6
    env = {**os.environ, "GMDF_DETECTOR_WEIGHTS": str(DETECTOR_WEIGHTS)} if HAVE_RETINAFACE else None
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    verdict, score = done.stdout.split()[:2]
    assert verdict in ("real", "fake", "uncertain") and 0.0 <= float(score) <= 1.0


@pytest.mark.slow
def test_a_built_wheel_installed_elsewhere_scans_with_the_shipped_detector(tmp_path: Path) -> None:
    """Build a wheel from the sources, install it into an empty prefix, and scan from a folder outside the
    repository: the default detector and the schema come from the installed package, not from this checkout."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "gmdf_cli", source / "gmdf_cli", ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path / "dist"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), "."]
    done = subprocess.run(build, cwd=source, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    wheel = next(dist.glob("gmdf_cli-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "gmdf_cli/weights/shipped/gmdf-mnv2-dev.safetensors" in names
    assert "gmdf_cli/weights/shipped/CARD.md" in names and "gmdf_cli/report/schema.json" in names
    assert "gmdf_cli/report/templates/report.html.j2" in names
    prefix = tmp_path / "prefix"
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(prefix), str(wheel)]
    done = subprocess.run(install, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(prefix)}
    detector = ["--detector-weights", str(DETECTOR_WEIGHTS)] if HAVE_RETINAFACE else ["--detector", "mtcnn"]
    scan = [sys.executable, "-m", "gmdf_cli", "scan", str(ASTRONAUT), "--json", "--out", "report", *detector]
    done = subprocess.run(scan, cwd=elsewhere, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert_schema("ScanReport", report)
    assert report["model"]["source"] == "shipped" and report["model"]["path"].startswith(str(prefix))
    assert report["files"][0]["verdict"] in ("real", "fake", "uncertain")  # scored: not no-face or error
    assert "known weaknesses" in (elsewhere / "report" / "report.html").read_text()  # the packaged template


def test_corrupted_crop_hook_changes_only_the_scored_crop(weights: Path) -> None:
    """Robustness's crop hook: faces from the clean frame, the crop changed before scoring."""
    from gmdf_cli.data.media import MediaItem
    from gmdf_cli.engine import Job

    detector = Detector.from_pretrained(str(weights), device="cpu", face_detector=detector_options())
    engine = detector.engine()
    grey = lambda frame, number, crop: np.full_like(crop, 128)  # noqa: E731
    clean, hooked = engine.run([Job(MediaItem(ASTRONAUT, "image")), Job(MediaItem(ASTRONAUT, "image"), crop=grey)])
    assert [f.box for f in clean.frames[0].faces] == [f.box for f in hooked.frames[0].faces]
    assert clean.score != hooked.score


def test_command_choices_come_from_the_registries() -> None:
    """Layouts, detectors, corruptions, configs and towers are named once, in their registries."""
    import click

    from gmdf_cli.analysis.corruptions import CORRUPTIONS
    from gmdf_cli.cli import cli
    from gmdf_cli.data.datasets import LAYOUTS
    from gmdf_cli.data.detectors import DETECTORS
    from gmdf_cli.model.config import CONFIG_HELP, CONFIGS, TOWER_KINDS

    def option(command: str, name: str) -> click.Parameter:
        return next(p for p in cli.commands[command].params if p.name == name)

    assert list(option("prepare", "layout").type.choices) == list(LAYOUTS)  # type: ignore[attr-defined]
    for command in ("scan", "prepare", "synth", "eval", "robustness"):
        assert list(option(command, "detector").type.choices) == list(DETECTORS)  # type: ignore[attr-defined]
    help_text = option("robustness", "corruption").help or ""
    assert all(name in help_text for name in CORRUPTIONS)
    assert set(CONFIG_HELP) == set(CONFIGS)
    # every tower is some registered config's, so the tests that walk CONFIGS (test_model) reach every tower
    assert {c.vision.kind for c in CONFIGS.values()} == set(TOWER_KINDS)


def test_ctrl_c_still_reports_files_whose_faces_wait_in_the_batch(weights: Path) -> None:
    """A file read to its end whose faces still wait for a full batch is scored and reported before the interrupt
    goes on, not lost with the batch."""
    from gmdf_cli.data.media import MediaItem

    detector = Detector.from_pretrained(str(weights), device="cpu", batch_size=64, face_detector=detector_options())
    frames_read = []

    def on_frame() -> None:
        frames_read.append(1)
        if len(frames_read) == 2:  # the first frame of the second file: the image's face waits in the batch
            raise KeyboardInterrupt

    got = []
    items = [MediaItem(ASTRONAUT, "image"), MediaItem(ROOT / "examples" / "astronaut.mp4", "video")]
    with pytest.raises(KeyboardInterrupt):
        for result in detector.engine().run(items, on_frame=on_frame):
            got.append(result)
    assert [r.path.name for r in got] == ["astronaut.png"] and got[0].score is not None


def test_faces_the_model_cannot_score_never_pass_as_real() -> None:
    """A NaN score (a broken model) leaves its face unscored: a file with no valid score is an error, not 'real'."""
    from gmdf_cli.engine.pipeline import aggregate
    from gmdf_cli.report.results import FaceResult, FileResult, FrameResult

    broken = FileResult(Path("x.mp4"), frames=[FrameResult(0, 0.0, [FaceResult([0, 0, 9, 9], 0, None)])])
    assert aggregate(broken, 0.5).verdict == "error" and "NaN" in (broken.error or "")
    scored = FaceResult([0, 0, 9, 9], 0, 0.8)
    partial = FileResult(Path("y.mp4"), frames=[FrameResult(0, 0.0, [FaceResult([0, 0, 9, 9], 1, None), scored])])
    assert aggregate(partial, 0.5).verdict == "fake" and any("NaN" in w for w in partial.warnings)
