"""Nothing lost, nothing trusted blindly: finished work survives kills and failed writes, outputs never collide with
inputs, untrusted text is never markup, hostile weights and zoo entries get one line, reruns refuse other settings."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from gmdf_cli.model import get_config

from .conftest import DETECTOR_WEIGHTS, HAVE_RETINAFACE, TinyWeights, assert_schema, invoke_gmdf, run_gmdf

ROOT = Path(__file__).resolve().parents[1]
ASTRONAUT = ROOT / "examples" / "astronaut.png"
CLIP = ROOT / "examples" / "astronaut.mp4"
DET = ["--detector-weights", str(DETECTOR_WEIGHTS)] if HAVE_RETINAFACE else ["--detector", "mtcnn"]


@pytest.fixture(scope="module")
def weights(tiny_weights_factory: TinyWeights) -> Path:
    return tiny_weights_factory(seed=7, std=0.3)


def _folder(tmp_path: Path, videos: int) -> Path:
    folder = tmp_path / "archive"
    folder.mkdir()
    for i in range(videos):
        shutil.copy(CLIP, folder / f"clip_{i:02d}.mp4")
    return folder


def _scan(folder: Path, out: Path, weights: Path, *extra: str) -> list[str]:
    scan = [sys.executable, "-m", "gmdf_cli", "scan", str(folder), "--weights", str(weights), "--out", str(out)]
    return [*scan, "--frames", "8", *DET, *extra]


def _wait_for_files(out: Path, proc: subprocess.Popen[str], count: int) -> None:
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        try:
            if len(json.loads((out / "report.json").read_text())["files"]) >= count:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.1)
    raise AssertionError("the scan finished (or stalled) before it could be killed")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_scan_keeps_finished_files_and_a_rerun_finishes_the_rest(
    weights: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    folder, out = _folder(tmp_path, 6), tmp_path / "out"
    proc = subprocess.Popen(_scan(folder, out, weights), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_files(out, proc, 2)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert "Traceback" not in stderr
    kept = json.loads((out / "report.json").read_text())
    assert_schema("ScanReport", kept)
    assert 2 <= len(kept["files"]) < 6 and all(f["verdict"] in ("real", "fake") for f in kept["files"])
    if sig == signal.SIGTERM:
        assert proc.returncode == 143 and kept["interrupted"] is True
    again = subprocess.run(_scan(folder, out, weights, "--json"), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert f"{len(kept['files'])} of 6 files already done" in again.stderr
    final = json.loads(again.stdout)
    assert sorted(Path(f["path"]).name for f in final["files"]) == sorted(p.name for p in folder.iterdir())
    before = {f["path"]: f for f in kept["files"]}
    for f in final["files"]:
        if f["path"] in before:  # taken over, not scanned again
            assert f == before[f["path"]]


def test_a_rerun_with_other_settings_is_refused(weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert invoke_gmdf("scan", str(ASTRONAUT), "--weights", str(weights), "--out", str(out), *DET).returncode == 0
    other = invoke_gmdf("scan", str(ASTRONAUT), "--weights", str(weights), "--out", str(out), "--max-faces", "1", *DET)
    assert other.returncode == 2 and "other settings" in other.stderr and "Traceback" not in other.stderr


def test_failed_output_writes_lose_no_results(weights: Path, tmp_path: Path) -> None:
    """A full disk (/dev/full) under --csv and an unwritable report: the scan goes on, --json still arrives."""
    out = tmp_path / "out"
    (out / "report.json").mkdir(parents=True)  # a folder where the report should go: every write there fails
    done = invoke_gmdf(
        "scan", str(ASTRONAUT), str(CLIP), "--weights", str(weights), "--csv", "/dev/full", "--out", str(out),
        "--frames", "4", "--json", *DET,
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert len(json.loads(done.stdout)["files"]) == 2
    assert "cannot write" in done.stderr and done.stderr.count("cannot write") <= 3


def test_outputs_never_overwrite_or_rescan_inputs(weights: Path, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(ASTRONAUT, folder / "a.png")
    clash = invoke_gmdf("scan", str(folder), "--weights", str(weights), "--csv", str(folder / "a.png"), *DET)
    assert clash.returncode == 2 and "input" in clash.stderr
    assert (folder / "a.png").read_bytes() == ASTRONAUT.read_bytes()
    inside = folder / "report"
    for _ in range(2):  # the second scan must not score the first one's face crops and plots
        done = invoke_gmdf("scan", str(folder), "--weights", str(weights), "--out", str(inside), "--json", *DET)
        assert done.returncode == 0, done.stderr
        assert [Path(f["path"]).name for f in json.loads(done.stdout)["files"]] == ["a.png"]


def test_names_and_values_are_text_not_markup(weights: Path, tmp_path: Path) -> None:
    folder = tmp_path / "odd"
    folder.mkdir()
    shutil.copy(ASTRONAUT, folder / "[bold red]x[red].png")
    shutil.copy(ASTRONAUT, folder / "esc\x1b[31mred.png")
    (folder / "sub[").mkdir()
    (folder / "sub[" / "broken].mp4").write_text("not a video")  # its path holds "[/broken]": a closing tag
    done = invoke_gmdf("scan", str(folder), "--weights", str(weights), *DET)
    assert done.returncode == 1 and "Traceback" not in done.stderr  # the broken file: exit 1, the rest scanned
    assert "[bold red]x[red].png" in done.stdout and "\x1b[31m" not in done.stdout + done.stderr
    assert "sub[/broken].mp4" in done.stderr and "esc\\x1b[31mred.png" in done.stdout
    bad = invoke_gmdf("robustness", str(folder), "--corruption", "[/x]", "--weights", str(weights))
    assert bad.returncode == 2 and "[/x]" in bad.stderr and "Traceback" not in bad.stderr


def _hostile(path: Path, config: object, extra: dict[str, str] | None = None) -> Path:
    text = config if isinstance(config, str) else json.dumps(config)
    save_file({"x": torch.zeros(1)}, str(path), metadata={"format": "gmdf", "config": text, **(extra or {})})
    return path


def _config(**changes: object) -> dict[str, object]:
    cfg = json.loads(get_config("vit-tiny").to_json())
    for key, value in changes.items():
        section, _, field = key.rpartition(".")
        (cfg[section] if section else cfg)[field] = value
    return cfg


HOSTILE = {
    "zero-patch": _config(**{"vision.patch_size": 0}),
    "negative-width": _config(**{"vision.width": -64}),
    "wrong-type": _config(**{"vision.layers": "twelve"}),
    "55-GB": _config(**{"vision.width": 4096, "vision.layers": 64, "text.width": 4096, "text.layers": 48}),
    "no-domains": _config(domains=[]),
    "object-domain": _config(domains=[{"a": 1}]),
    "heads-do-not-divide": _config(**{"text.heads": 7}),
    "expert-from-not-a-number": _config(**{"vision.kind": "mobilenet", "vision.expert_from": "six"}),
    "deep-nesting": "[" * 100_000 + "]" * 100_000,
    "not-json": "not json",
    "a-list": ["a", "list"],
}


@pytest.mark.parametrize("config", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_weights_config_is_refused_before_anything_is_built(tmp_path: Path, config: object) -> None:
    from gmdf_cli.errors import WeightsError
    from gmdf_cli.weights import load_checkpoint

    with pytest.raises(WeightsError, match="unusable model config"):
        load_checkpoint(_hostile(tmp_path / "bad.safetensors", config))


@pytest.mark.slow
def test_hostile_weights_get_one_line_from_the_command(tmp_path: Path) -> None:
    bad = _hostile(tmp_path / "bad.safetensors", HOSTILE["55-GB"])
    done = run_gmdf("scan", str(ASTRONAUT), "--weights", str(bad), *DET)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "G parameters" in done.stderr


def test_weights_with_nan_tensors_are_refused(weights: Path, tmp_path: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as fh:
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - safe_open has no __iter__
        meta = fh.metadata()
    key = next(k for k, v in tensors.items() if v.is_floating_point() and v.numel() > 4)
    tensors[key][0] = float("nan")
    save_file(tensors, str(tmp_path / "nan.safetensors"), metadata=meta)
    done = invoke_gmdf("scan", str(ASTRONAUT), "--weights", str(tmp_path / "nan.safetensors"), *DET)
    assert done.returncode == 1 and "not finite" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"lab": {"config": "vit-b-16", "description": "x", "sha256": "", "repo_id": "o/r"}}, "sha256"),
        ({"lab": {"config": "vit-b-16", "description": "x", "sha256": 5, "repo_id": "o/r"}}, "sha256"),
        ({"gmdf-mnv2-dev": {"config": "c", "description": "x", "sha256": "a" * 64, "repo_id": "o/r"}}, "built-in"),
        (["not", "an", "object"], "object"),
        ({"lab": "a string"}, "object"),
    ],
)
def test_odd_zoo_entries_get_one_line(tmp_path: Path, entry: object, message: str) -> None:
    zoo = tmp_path / "zoo.json"
    zoo.write_text(json.dumps(entry))
    done = invoke_gmdf("weights", "list", env={"GMDF_ZOO": str(zoo)})
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


@pytest.mark.skipif(not HAVE_RETINAFACE, reason="needs the shared RetinaFace weights")
def test_a_tampered_retinaface_file_is_refused(weights: Path, tmp_path: Path) -> None:
    folder = tmp_path / "det"
    folder.mkdir()
    original = (DETECTOR_WEIGHTS / "detection_mobilenet0.25_Final.pth").read_bytes()
    (folder / "detection_mobilenet0.25_Final.pth").write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    done = invoke_gmdf("scan", str(ASTRONAUT), "--weights", str(weights), "--detector-weights", str(folder))
    assert done.returncode == 1 and "sha256" in done.stderr and "Traceback" not in done.stderr


def _labelled(tmp_path: Path, fake: Path) -> Path:
    """A folder dataset: the astronaut photo as real/a.png, ``fake`` as fake/b<suffix>."""
    data = tmp_path / "data"
    (data / "real").mkdir(parents=True)
    (data / "fake").mkdir()
    shutil.copy(ASTRONAUT, data / "real" / "a.png")
    shutil.copy(fake, data / "fake" / f"b{fake.suffix}")
    return data


def test_prepare_and_robustness_refuse_to_resume_with_other_settings(weights: Path, tmp_path: Path) -> None:
    data = _labelled(tmp_path, CLIP)
    cache = tmp_path / "cache"
    prep = ["prepare", "--domain", "folder", "--root", str(data), "--out", str(cache), *DET]
    assert invoke_gmdf(*prep, "--frames", "2").returncode == 0
    again = invoke_gmdf(*prep, "--frames", "3")
    assert again.returncode == 2 and "other settings" in again.stderr
    sweep = ["robustness", str(data), "--weights", str(weights), "--corruption", "blur", "--levels", "1"]
    sweep += ["--out", str(tmp_path / "sweep"), "--frames", "2"]
    assert invoke_gmdf(*sweep, *DET).returncode == 0
    other = invoke_gmdf(*sweep, "--detector", "mtcnn")
    assert other.returncode == 2 and "other settings" in other.stderr


def test_prepare_write_failure_is_not_recorded_as_bad_input(tmp_path: Path) -> None:
    data = _labelled(tmp_path, ASTRONAUT)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "crops").write_text("a file where the crops folder should be: every crop write fails")
    prep = ["prepare", "--domain", "folder", "--root", str(data), "--out", str(cache), *DET]
    failed = invoke_gmdf(*prep)
    assert failed.returncode == 1 and "cannot write" in failed.stderr and "Traceback" not in failed.stderr
    assert not list((cache / "records").rglob("*.json")) if (cache / "records").exists() else True
    (cache / "crops").unlink()  # space freed: the rerun prepares every source
    done = invoke_gmdf(*prep)
    assert done.returncode == 0, done.stderr
    assert len(list((cache / "records").rglob("*.json"))) == 2
    assert os.path.getsize(cache / "index.csv") > 0
