"""Scanning an archive: a file list, worker processes and Ray give the rows of one process; a killed run finishes on
rerun with every file exactly once; archives too big for a report keep only their rows."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from gmdf_cli.jobs.scan import outputs as scan_outputs
from gmdf_cli.jobs.scan import run as scan_run

from .conftest import DETECTOR_WEIGHTS, HAVE_RETINAFACE, MEDIA, TinyWeights, invoke_gmdf
from .synthdata import write_domain

ROOT = Path(__file__).resolve().parents[1]
DET = ["--detector-weights", str(DETECTOR_WEIGHTS)] if HAVE_RETINAFACE else ["--detector", "mtcnn"]
TOLERANCE = 1e-6
"""Scores of one face agree to this, not to the last bit: fp32 sums depend on how faces are batched and on the
number of threads, which differ between one process, workers and Ray."""


@pytest.fixture(scope="module")
def weights(tiny_weights_factory: TinyWeights) -> Path:
    return tiny_weights_factory(seed=11, std=0.3)


def _real_media(count: int) -> list[Path]:
    """A few small real and fake files of the shared media (none where it is absent)."""
    if not (MEDIA / "MANIFEST.tsv").is_file():
        return []
    picked: list[Path] = []
    for source in ("lfw_mmehdig", "stylegan_basemax", "celebdf_hantschmann", "ffpp_icpr2020"):
        files = sorted(p for p in (MEDIA / source).rglob("*") if p.is_file())
        files.sort(key=lambda p: p.stat().st_size)
        picked.extend(files[: count // 4])
    return picked


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About twenty files: generated videos (real and forged), the examples, real media, a damaged file and an image
    without a face; names with spaces."""
    root = tmp_path_factory.mktemp("archive")
    write_domain(root / "generated", "blend", videos=4, frames=8, seed=3)
    shutil.copy(ROOT / "examples" / "astronaut.png", root / "astronaut photo.png")
    shutil.copy(ROOT / "examples" / "astronaut.mp4", root / "astronaut.mp4")
    for i, path in enumerate(_real_media(8)):
        shutil.copy(path, root / f"media_{i:02d}{path.suffix}")
    (root / "damaged.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2048))
    cv2.imwrite(str(root / "no face.png"), np.full((120, 160, 3), 90, np.uint8))
    return root


def _scan_args(inputs: list[str], out: Path, weights: Path, *extra: str) -> list[str]:
    return ["scan", *inputs, "--weights", str(weights), "--out", str(out), "--frames", "4", *DET, *extra]


def rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]


def _close(a: Any, b: Any, where: str) -> None:
    if isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, abs_tol=TOLERANCE), f"{where}: {a} != {b}"
    elif isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _close(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_same_rows(expected: list[dict[str, Any]], got: list[dict[str, Any]]) -> None:
    """The same files, each once, with the same row (the time a file took aside)."""
    by_path = {r["path"]: r for r in got}
    assert len(by_path) == len(got) == len(expected)
    for row in expected:
        other = dict(by_path[row["path"]])
        mine = dict(row)
        mine.pop("seconds"), other.pop("seconds")
        _close(mine, other, row["path"])


@pytest.fixture(scope="module")
def one_process(archive: Path, weights: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("one") / "out"
    done = invoke_gmdf(*_scan_args([str(archive)], out, weights))
    assert done.returncode == 1, done.stderr  # the damaged file is an error row; the others are scanned
    found = rows(out)
    verdicts = {r["verdict"] for r in found}
    assert {"error", "no-face"} <= verdicts and verdicts & {"real", "fake"}
    return found


@pytest.mark.slow
def test_workers_give_the_rows_of_one_process(
    archive: Path, weights: Path, one_process: list[dict[str, Any]], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    done = invoke_gmdf(*_scan_args([str(archive)], out, weights, "--workers", "2"))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert_same_rows(one_process, rows(out))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["files"] == len(one_process) and summary["workers"] == 2
    report = json.loads((out / "report.json").read_text())  # in input order, whatever order workers finished in
    assert [f["path"] for f in report["files"]] == [r["path"] for r in one_process]


@pytest.mark.slow
def test_ray_gives_the_rows_of_one_process_and_parquet_the_same_rows(
    archive: Path, weights: Path, one_process: list[dict[str, Any]], tmp_path: Path
) -> None:
    ray = pytest.importorskip("ray")
    pq = pytest.importorskip("pyarrow.parquet")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = tmp_path / "out"
        done = invoke_gmdf(*_scan_args([str(archive)], out, weights, "--engine", "ray", "--parquet"))
    finally:
        ray.shutdown()
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    got = rows(out)
    assert_same_rows(one_process, got)
    table = pq.read_table(out / "results.parquet").to_pylist()
    assert_same_rows(got, [{k: v for k, v in r.items()} for r in table])


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.extend(int(c) for c in text)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc to find the workers")
def test_a_killed_run_with_workers_finishes_on_rerun_with_every_file_once(
    archive: Path, weights: Path, one_process: list[dict[str, Any]], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    command = [sys.executable, "-m", "gmdf_cli", *_scan_args([str(archive)], out, weights, "--workers", "2")]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        journal = out / "results.jsonl"
        if journal.is_file() and len(journal.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the scan finished before it could be killed"
    workers = _children(proc.pid)
    proc.kill()
    proc.wait(timeout=30)
    deadline = time.time() + 30
    while any(_alive(w) for w in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert workers and not any(_alive(w) for w in workers), "workers outlived a killed scan"
    before = rows(out)
    assert 3 <= len(before) < len(one_process)
    ok = sum(r["verdict"] != "error" for r in before)
    with open(out / "results.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"path": "' + str(archive / "astronaut.mp4") + '", "verd')  # a line cut short by the kill
    again = invoke_gmdf(*_scan_args([str(archive)], out, weights, "--workers", "2"))
    assert again.returncode == 1, again.stderr
    final = rows(out)
    assert_same_rows(one_process, final)  # every file exactly once, no line cut short, same rows
    assert f"resuming: {ok} of {len(one_process)} files" in again.stderr  # error rows are tried again


def test_files_from_a_list_and_stdin(archive: Path, weights: Path, tmp_path: Path) -> None:
    listed = [str(archive / "astronaut photo.png"), str(archive / "gone.mp4"), "", str(archive / "no face.png")]
    (tmp_path / "list.txt").write_text("\n".join(listed) + "\n")
    out = tmp_path / "a"
    done = invoke_gmdf(*_scan_args([], out, weights, "--files-from", str(tmp_path / "list.txt")))
    assert done.returncode == 1 and "gone.mp4: no such file" in done.stderr
    found = {Path(r["path"]).name: r for r in rows(out)}
    assert found.keys() == {"astronaut photo.png", "gone.mp4", "no face.png"}
    assert found["gone.mp4"]["verdict"] == "error" and found["no face.png"]["verdict"] == "no-face"
    piped = invoke_gmdf(*_scan_args([], tmp_path / "b", weights, "--files-from", "-"), input="\n".join(listed[:1]))
    assert piped.returncode == 0 and [Path(r["path"]).name for r in rows(tmp_path / "b")] == ["astronaut photo.png"]
    nothing = invoke_gmdf("scan", "--weights", str(weights))
    assert nothing.returncode == 2 and "--files-from" in nothing.stderr


def test_archives_above_the_report_limit_keep_rows_only(
    archive: Path, weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scan_run, "REPORT_MAX_FILES", 2)
    inputs = [str(archive / "astronaut photo.png"), str(archive / "no face.png"), str(archive / "astronaut.mp4")]
    out = tmp_path / "out"
    done = invoke_gmdf(*_scan_args(inputs, out, weights))
    assert done.returncode == 0, done.stderr
    assert len(rows(out)) == 3 and not (out / "report.json").exists() and not (out / "report.html").exists()
    assert json.loads((out / "summary.json").read_text())["files"] == 3
    assert "3 files" in done.stderr
    refused = invoke_gmdf(*_scan_args(inputs, tmp_path / "other", weights, "--json"))
    assert refused.returncode == 2 and "--json" in refused.stderr


def test_a_rerun_reads_again_only_files_whose_size_or_time_changed(weights: Path, tmp_path: Path) -> None:
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    for name in ("same.png", "touched.png", "edited.png"):
        shutil.copy(ROOT / "examples" / "astronaut.png", folder / name)
    assert invoke_gmdf(*_scan_args([str(folder)], out, weights)).returncode == 0
    first = {Path(r["path"]).name: r for r in rows(out)}
    stamp = (folder / "same.png").stat().st_mtime_ns
    image = (folder / "same.png").read_bytes()
    (folder / "same.png").write_bytes(image[:-4] + b"XXXX")  # other bytes, same size, and the time set back
    os.utime(folder / "same.png", ns=(stamp, stamp))
    time.sleep(0.01)
    (folder / "touched.png").write_bytes(image)  # the same bytes, a new time
    cv2.imwrite(str(folder / "edited.png"), cv2.imread(str(folder / "edited.png"))[:, ::-1])  # other content
    again = invoke_gmdf(*_scan_args([str(folder)], out, weights))
    assert again.returncode == 0 and "resuming: 2 of 3 files" in again.stderr
    final = {Path(r["path"]).name: r for r in rows(out)}
    assert final["same.png"] == first["same.png"]  # taken over on size and time alone: not read again
    assert final["touched.png"]["sha256"] == first["touched.png"]["sha256"]  # new time, same sha256: taken over
    assert final["touched.png"]["mtime_ns"] == first["touched.png"]["mtime_ns"]
    assert final["edited.png"]["sha256"] != first["edited.png"]["sha256"]  # scanned again


def test_the_report_shows_images_of_the_most_suspicious_files_only(
    archive: Path, weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scan_outputs, "HTML_IMAGES_MAX", 1)
    inputs = [str(archive / "astronaut photo.png"), str(archive / "astronaut.mp4")]
    out = tmp_path / "out"
    assert invoke_gmdf(*_scan_args(inputs, out, weights)).returncode == 0
    page = (out / "report.html").read_text()
    assert "shown for the 1 most suspicious files" in page
    assert all((out / d).is_dir() for d in ("000-astronaut_photo", "001-astronaut"))  # every file's images on disk
    start = page.index('id="f0"'), page.index('id="f1"')
    sections = [page[start[0] : start[1]], page[start[1] :]]
    with_images = [i for i, section in enumerate(sections) if "data:image/png;base64" in section]
    scores = [f["score"] for f in json.loads((out / "report.json").read_text())["files"]]
    assert len(with_images) == 1 and scores[with_images[0]] == max(scores)


def _workers_of(pid: int) -> list[int]:
    """The scan's worker processes (not multiprocessing's resource tracker)."""
    return [c for c in _children(pid) if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc to find the workers")
def test_a_dead_worker_costs_only_its_unfinished_files(weights: Path, tmp_path: Path) -> None:
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    for i in range(6):
        shutil.copy(ROOT / "examples" / "astronaut.mp4", folder / f"clip_{i}.mp4")
    command = [sys.executable, "-m", "gmdf_cli", *_scan_args([str(folder)], out, weights, "--workers", "2")]
    proc = subprocess.Popen([*command, "--frames", "8"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (out / "results.jsonl").is_file() and (out / "results.jsonl").read_text().count("\n") >= 1:
            break
        time.sleep(0.05)
    os.kill(_workers_of(proc.pid)[0], signal.SIGKILL)
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 1 and "Traceback" not in stderr, stderr
    found = rows(out)
    assert sorted(r["path"] for r in found) == sorted(str(p) for p in folder.iterdir())  # each once, none lost
    lost = [r for r in found if r["verdict"] == "error"]
    assert 1 <= len(lost) <= 2 and all("worker process scanning it stopped" in r["error"] for r in lost)
    again = invoke_gmdf(*_scan_args([str(folder)], out, weights, "--frames", "8"))
    assert again.returncode == 0 and f"resuming: {6 - len(lost)} of 6" in again.stderr
    final = rows(out)
    assert len(final) == 6 and len({r["path"] for r in final}) == 6 and all(r["verdict"] != "error" for r in final)
