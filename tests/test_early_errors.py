"""The first ten minutes: what a user can type wrong is one line and exit 2, said before torch, a model or a face
detector loads, with nothing left on disk; the face detector that will run is said once, with its fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import DETECTOR_WEIGHTS, HAVE_RETINAFACE, invoke_gmdf, run_gmdf

ROOT = Path(__file__).resolve().parents[1]
ASTRONAUT = ROOT / "examples" / "astronaut.png"
HEAVY = ("torch", "open_clip", "facexlib", "facenet_pytorch")


def _early(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> tuple[int, list[str], set[str]]:
    """Run gmdf in a fresh process with Python's import log on: its exit code, its own stderr lines, and the
    modules it imported."""
    done = run_gmdf(*args, env={"PYTHONPROFILEIMPORTTIME": "1", **(env or {})}, cwd=cwd)
    lines = done.stderr.splitlines()
    imported = {line.rsplit("|", 1)[-1].strip() for line in lines if line.startswith("import time:")}
    return done.returncode, [line for line in lines if not line.startswith("import time:")], imported


def _assert_one_line_before_torch(code: int, lines: list[str], imported: set[str], *words: str) -> None:
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("gmdf: error: "), lines
    assert all(word in lines[0] for word in words), lines
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


@pytest.mark.slow
def test_the_cli_module_imports_no_torch() -> None:
    code = f"import sys, gmdf_cli.cli; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("command", ["scan", "train"])
def test_a_command_without_arguments_says_what_it_needs_before_torch(command: str) -> None:
    _assert_one_line_before_torch(*_early(command), "--")


@pytest.mark.slow
def test_an_output_folder_under_proc_is_refused_before_torch() -> None:
    target = Path("/proc/gmdf-test-out")
    _assert_one_line_before_torch(*_early("scan", str(ASTRONAUT), "--out", str(target)), "--out", "/proc")
    assert not target.exists()


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into any folder, so none is read-only to it")
def test_an_output_folder_in_a_read_only_folder_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    _assert_one_line_before_torch(*_early("scan", str(ASTRONAUT), "--out", str(locked / "out")), "not writable")
    assert not (locked / "out").exists()


def test_a_file_where_a_folder_is_needed_and_the_reverse(tmp_path: Path) -> None:
    note = tmp_path / "note.txt"
    note.write_text("a file")
    out = invoke_gmdf("scan", str(ASTRONAUT), "--out", str(note))
    assert out.returncode == 2 and "is a file, not a folder" in out.stderr and out.stderr.count("\n") == 1
    out = invoke_gmdf("scan", str(ASTRONAUT), "--out", str(note / "report"))
    assert out.returncode == 2 and f"{note} is a file, not a folder" in out.stderr
    out = invoke_gmdf("scan", str(ASTRONAUT), "--csv", str(tmp_path))
    assert out.returncode == 2 and "is a folder, not a file" in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["note.txt"] and note.read_text() == "a file"


OUTPUTS = {
    "scan --out": ["scan", str(ASTRONAUT), "--out", "{x}"],
    "scan --csv": ["scan", str(ASTRONAUT), "--csv", "{x}"],
    "prepare --out": ["prepare", "--out", "{x}", "--domain", "folder", "--root", str(ROOT / "examples")],
    "synth --out": ["synth", "--out", "{x}", "--root", str(ROOT / "examples")],
    "train --out": ["train", "--out", "{x}", "--domains", "a", "--data", str(ROOT / "examples")],
    "eval --out": ["eval", "--out", "{x}", "--data", str(ROOT / "examples")],
    "robustness --out": ["robustness", "--out", "{x}", str(ROOT / "examples")],
    "weights export TARGET": ["weights", "export", "run/best.safetensors", "{x}"],
}


@pytest.mark.parametrize("args", list(OUTPUTS.values()), ids=list(OUTPUTS))
def test_every_output_is_checked_as_it_is_parsed(args: list[str]) -> None:
    target = "/proc/gmdf-test/x"
    out = invoke_gmdf(*[target if a == "{x}" else a for a in args])
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    assert target in out.stderr and "proc filesystem" in out.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("weights", "words"),
    [
        ("[bold]x<y>", ["unknown weights", "[bold]x<y>"]),
        ("hf-hub:a/b c", ["bad Hub repository", "'a/b c'"]),
        ("hf-hub:[bold]/x<y>", ["bad Hub repository", "[bold]/x<y>"]),
        ("hf-hub:org/repo/../x.safetensors", ["bad file name", "'../x.safetensors'"]),
    ],
    ids=["markup-name", "space-in-repo", "markup-in-repo", "dotdot-file"],
)
def test_weights_references_are_checked_before_torch(weights: str, words: list[str]) -> None:
    _assert_one_line_before_torch(*_early("scan", str(ASTRONAUT), "--weights", weights), *words)


@pytest.mark.slow
def test_a_zoo_entry_outside_its_repository_is_one_line_before_torch(tmp_path: Path) -> None:
    """Zoo-file problems are usage errors (exit 2: the user wrote the file), said before torch loads."""
    zoo = tmp_path / "zoo.json"
    entry = {"repo_id": "lab/m", "filename": "../../x.safetensors", "sha256": "ab" * 32, "config": "vit-b-16"}
    zoo.write_text(json.dumps({"lab": entry}))
    done = run_gmdf("scan", str(ASTRONAUT), "--weights", "lab", env={"GMDF_ZOO": str(zoo)})
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "bad file name '../../x.safetensors'" in done.stderr
    listed = invoke_gmdf("weights", "download", "lab", env={"GMDF_ZOO": str(zoo)})
    assert listed.returncode == 2 and "bad file name" in listed.stderr and "Traceback" not in listed.stderr


@pytest.mark.slow
def test_robustness_on_a_folder_without_real_and_fake_loads_and_writes_nothing(tmp_path: Path) -> None:
    _assert_one_line_before_torch(*_early("robustness", str(ROOT / "examples"), cwd=tmp_path), "real/", "fake/")
    assert list(tmp_path.iterdir()) == []  # no robustness-report/ with a sweep.json


def test_robustness_on_empty_real_and_fake_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "data" / "real").mkdir(parents=True)
    (tmp_path / "data" / "fake").mkdir()
    out = invoke_gmdf("robustness", str(tmp_path / "data"), "--out", str(tmp_path / "sweep"))
    assert out.returncode == 2 and "no images or videos" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "sweep").exists()


@pytest.mark.slow
def test_an_empty_folder_is_named_without_a_dangling_comma(tmp_path: Path) -> None:
    code, lines, imported = _early("scan", str(tmp_path))
    _assert_one_line_before_torch(code, lines, imported)
    assert lines[0].endswith(f"no images or videos found in {tmp_path}")


def test_info_says_which_face_detector_will_run_and_why(tmp_path: Path) -> None:
    from gmdf_cli.data.detectors import RETINAFACE_MOBILENET_SHA256, facexlib_weights_dir

    report = json.loads(invoke_gmdf("info", "--json", env={"GMDF_DETECTOR_WEIGHTS": str(tmp_path)}).stdout)
    if (facexlib_weights_dir() / "detection_mobilenet0.25_Final.pth").is_file():
        assert report["face_detector"]["name"] == "retinaface"
    else:
        assert report["face_detector"]["name"] == "mtcnn"
        why = report["face_detector"]["why"]
        assert "--detector-weights DIR" in why and "GMDF_DETECTOR_WEIGHTS" in why
        assert f"detection_mobilenet0.25_Final.pth (sha256 {RETINAFACE_MOBILENET_SHA256})" in why
    if HAVE_RETINAFACE:
        table = invoke_gmdf("info", env={"GMDF_DETECTOR_WEIGHTS": str(DETECTOR_WEIGHTS)})
        assert f"retinaface (weights in {DETECTOR_WEIGHTS})" in " ".join(table.stdout.split())


@pytest.mark.slow
def test_info_loads_no_torch() -> None:
    done = run_gmdf("info", "--json", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert done.returncode == 0
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "import time:" in line}
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


@pytest.mark.skipif(not HAVE_RETINAFACE, reason="needs the shared RetinaFace weights to check its digest")
def test_the_pinned_retinaface_digest_is_the_shared_files() -> None:
    from gmdf_cli.data.detectors import RETINAFACE_MOBILENET_SHA256
    from gmdf_cli.fileio import sha256_file

    assert sha256_file(DETECTOR_WEIGHTS / "detection_mobilenet0.25_Final.pth") == RETINAFACE_MOBILENET_SHA256


def test_the_fallback_is_one_line_with_the_fix_and_no_package_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gmdf_cli.data.faces import facexlib_weights_dir, load_detector

    if (facexlib_weights_dir() / "detection_mobilenet0.25_Final.pth").is_file():
        pytest.skip("facexlib's own cache holds RetinaFace here, so nothing falls back")
    for proxy in ("https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")  # no download can succeed, online or not
    monkeypatch.delenv("GMDF_DETECTOR_WEIGHTS", raising=False)
    detector, reason = load_detector("retinaface", tmp_path / "empty")
    assert detector.info["name"] == "mtcnn" and reason is not None and "\n" not in reason
    assert reason.startswith("using MTCNN") and str(tmp_path / "empty") in reason
    assert "--detector-weights DIR" in reason and "$GMDF_DETECTOR_WEIGHTS" in reason
    assert "detection_mobilenet0.25_Final.pth (sha256 2979b33f" in reason
    assert str(facexlib_weights_dir().parent) not in reason and "site-packages" not in reason
