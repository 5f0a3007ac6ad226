"""Compiled inference (``gmdf_cli.runtime``): a CPU scan of the default model runs its ONNX graphs with OpenCV, never
importing torch, compiled once by the first scan; and it reports what the torch way reports. On real videos of
``../shared/media`` (32 frames, key frames as the scan's default) every frame holds the same faces, each box within
``BOX_TOLERANCE`` pixels and each face's score within ``SCORE_TOLERANCE`` of the torch scan's."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gmdf_cli.api import Detector
from gmdf_cli.runtime.compiled import CompiledModel, CompiledRetinaFace
from gmdf_cli.runtime.export import _agrees, compile_retinaface
from gmdf_cli.weights import DEFAULT_WEIGHTS

from .conftest import DETECTOR_WEIGHTS, HAVE_RETINAFACE, MEDIA, detector_options

ASTRONAUT = Path(__file__).resolve().parents[1] / "examples" / "astronaut.png"
VIDEO = MEDIA / "ffpp_icpr2020/fake/test__data__ffpp__manipulated_sequences__Face2Face__c23__videos__750_743.mp4"
BOX_TOLERANCE = 0.01
SCORE_TOLERANCE = 1e-4
NO_TORCH = (
    "import sys, importlib.abc\n"
    "class NoTorch(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path, target=None):\n"
    "        if name.split('.')[0] in ('torch', 'torchvision', 'open_clip'):\n"
    "            raise ImportError('a compiled scan imported ' + name)\n"
    "sys.meta_path.insert(0, NoTorch())\n"
    "from gmdf_cli.cli import main\n"
    "sys.argv = ['gmdf', *sys.argv[1:]]\n"
    "main()\n"
)

pytestmark = pytest.mark.skipif(not HAVE_RETINAFACE, reason="needs RetinaFace weights in ../shared/weights")


def scan_cli(out: Path, compiled_dir: Path, code: str | None = None, **env: str) -> subprocess.CompletedProcess:
    args = ["scan", str(ASTRONAUT), "--out", str(out), "--detector-weights", str(DETECTOR_WEIGHTS)]
    command = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "gmdf_cli", *args]
    environ = {**os.environ, "GMDF_COMPILED_DIR": str(compiled_dir), **env}
    return subprocess.run(command, capture_output=True, text=True, env=environ, timeout=600)


@pytest.mark.slow
def test_the_first_cpu_scan_compiles_and_the_next_runs_without_torch(tmp_path: Path) -> None:
    graphs = tmp_path / "compiled"
    first = scan_cli(tmp_path / "a", graphs)
    assert first.returncode == 0, first.stderr
    assert "compiling" in first.stderr and len(list(graphs.glob("*.onnx"))) == 2
    second = scan_cli(tmp_path / "b", graphs, NO_TORCH)  # torch cannot even be imported
    assert second.returncode == 0, second.stderr
    assert "compiling" not in second.stderr
    torch_way = scan_cli(tmp_path / "c", graphs, GMDF_COMPILED="0")
    assert torch_way.returncode == 0, torch_way.stderr
    reports = [json.loads((tmp_path / d / "report.json").read_text()) for d in "abc"]
    assert [r["model"]["runtime"] for r in reports] == ["opencv-dnn", "opencv-dnn", "torch"]
    pages = [(tmp_path / d / "report.html").read_text() for d in "bc"]
    assert "; run by opencv-dnn</td>" in pages[0] and "; run by torch</td>" in pages[1]  # how it ran, for people
    scores = [r["files"][0]["score"] for r in reports]
    assert scores[0] == scores[1] and abs(scores[1] - scores[2]) <= SCORE_TOLERANCE


@pytest.mark.slow
@pytest.mark.skipif(not VIDEO.is_file(), reason="../shared/media is not here")
def test_a_compiled_scan_of_a_real_video_reports_what_torch_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GMDF_COMPILED_DIR", str(tmp_path))
    torch_way = Detector.from_pretrained(
        DEFAULT_WEIGHTS, device="cpu", face_detector=detector_options(), compiled=False
    )
    compiled = Detector.from_pretrained(DEFAULT_WEIGHTS, device="cpu", face_detector=detector_options())
    assert isinstance(compiled.model, CompiledModel) and isinstance(compiled.face_detector, CompiledRetinaFace)
    want, got = torch_way.scan(VIDEO), compiled.scan(VIDEO)
    assert len(got.frames) == len(want.frames) == 32 and got.faces_found == want.faces_found > 0
    worst_box = worst_score = 0.0
    for a, b in zip(want.frames, got.frames, strict=True):
        assert len(a.faces) == len(b.faces)
        for fa, fb in zip(a.faces, b.faces, strict=True):
            worst_box = max(worst_box, *(abs(x - y) for x, y in zip(fa.box, fb.box, strict=True)))
            worst_score = max(worst_score, abs(fa.score - fb.score))
    print(f"largest differences: box {worst_box:.4f} px, face score {worst_score:.2e}")
    assert worst_box <= BOX_TOLERANCE and worst_score <= SCORE_TOLERANCE
    assert abs(got.score - want.score) <= SCORE_TOLERANCE and got.verdict == want.verdict


def test_a_graph_is_kept_only_where_opencv_gives_torchs_outputs(tmp_path: Path) -> None:
    """The check every compiled graph passes before it is kept: OpenCV's run of it against the torch module on
    check inputs. A RetinaFace graph agrees with its own network, not with one whose weights differ."""
    from gmdf_cli.data.retinaface import MobileRetinaFace

    torch.manual_seed(0)
    net, other = MobileRetinaFace().eval(), MobileRetinaFace().eval()
    path = tmp_path / "retinaface.onnx"
    assert compile_retinaface(net, path) and path.is_file()
    checks = [torch.rand(1, 3, 96, 128, generator=torch.Generator().manual_seed(1)) * 255]
    from gmdf_cli.runtime.export import _Detections

    assert _agrees(_Detections(net).eval(), path, checks, ["loc", "conf"])
    assert not _agrees(_Detections(other).eval(), path, checks, ["loc", "conf"])


def test_a_damaged_graph_is_replaced_and_the_scan_still_right(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GMDF_COMPILED_DIR", str(tmp_path))
    first = Detector.from_pretrained(DEFAULT_WEIGHTS, device="cpu", face_detector=detector_options())
    assert isinstance(first.model, CompiledModel)
    first.model.path.write_bytes(b"not an onnx graph")
    again = Detector.from_pretrained(DEFAULT_WEIGHTS, device="cpu", face_detector=detector_options())
    assert isinstance(again.model, CompiledModel) and again.model.path.stat().st_size > 1_000_000
    assert abs(again.scan(ASTRONAUT).score - first.scan(ASTRONAUT).score) <= SCORE_TOLERANCE


def test_a_folder_that_cannot_be_written_leaves_the_scan_on_torch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compiling is an optimisation: where the graphs cannot be written the scan goes on with torch, saying why."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("GMDF_COMPILED_DIR", str(blocker / "compiled"))
    notes: list[str] = []
    detector = Detector.from_pretrained(
        DEFAULT_WEIGHTS, device="cpu", face_detector=detector_options(), note=notes.append
    )
    assert not isinstance(detector.model, CompiledModel)
    assert any("cannot write compiled graphs" in note for note in notes), notes
    assert detector.scan(ASTRONAUT).faces_found == 1


def test_info_says_whether_cpu_scans_run_compiled_and_where_the_graphs_are(tmp_path: Path) -> None:
    from .conftest import invoke_gmdf

    (tmp_path / "gmdf-x.onnx").write_bytes(b"graph")
    on = json.loads(invoke_gmdf("info", "--json", env={"GMDF_COMPILED_DIR": str(tmp_path)}).stdout)["compiled"]
    assert on == {"enabled": True, "dir": str(tmp_path), "graphs": 1}
    off = invoke_gmdf("info", env={"GMDF_COMPILED_DIR": str(tmp_path), "GMDF_COMPILED": "0"}).stdout
    assert "off (GMDF_COMPILED=0)" in off


def test_ray_and_heatmap_scans_open_the_torch_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray's actors and tasks run torch (the report must not say otherwise), and Grad-CAM needs the torch model's
    gradients: their scans open the torch model where a plain CPU scan of the same settings opens the compiled one."""
    import io

    from rich.console import Console

    from gmdf_cli.jobs.scan.request import ScanRequest, open_detector

    monkeypatch.setenv("GMDF_COMPILED_DIR", str(tmp_path))
    quiet = Console(file=io.StringIO())
    plain = ScanRequest([], detector=detector_options(), device="cpu")
    assert isinstance(open_detector(plain, quiet).model, CompiledModel)
    for changed in ({"engine": "ray"}, {"heatmaps": True}):
        request = ScanRequest([], detector=detector_options(), device="cpu", **changed)  # type: ignore[arg-type]
        assert not isinstance(open_detector(request, quiet).model, CompiledModel), changed


def test_auto_leaves_a_machine_with_a_gpu_driver_to_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--device auto`` runs compiled only where no GPU could be found without torch: an ``nvidia-smi`` on the
    PATH (how a Windows machine shows its NVIDIA driver) hands the choice back to torch, unless
    ``CUDA_VISIBLE_DEVICES`` hides every GPU; ``--device cpu`` is the CPU anywhere."""
    from gmdf_cli.runtime.plan import on_cpu

    tool = tmp_path / "nvidia-smi"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert not on_cpu("auto") and on_cpu("cpu")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert on_cpu("auto") == (sys.platform != "darwin" or platform.machine() != "arm64")
