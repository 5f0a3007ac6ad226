"""Faces/s of the whole scan pipeline (decode -> detect -> crop -> model) on a real video, against the model alone on
the same face crops at the same batch size, interleaved in one process: the pipeline both detecting faces on every
frame (``--detect-every 1``) and on key frames only (``--detect-every K``, default the scan's); then the peak RSS of
a real `gmdf scan`; with ``--compiled`` the model and RetinaFace run as the compiled graphs a CPU scan of a
MobileNetV2 model runs (``gmdf_cli.runtime``, OpenCV); then, with ``--against REV``, the engine against the pipeline
of an earlier commit on the same video and weights.
Targets: pipeline/model >= 0.85; peak RSS of a `vit-b-16` scan <= 1.2 GB; engine/earlier >= 1 (no slowdown).

    python benchmarks/scan_pipeline.py [--video PATH] [--config vit-b-16] [--batch 16] [--rounds 2] [--detect-every K]
    python benchmarks/scan_pipeline.py --config mnv2 --compiled          # the default model as a CPU scan runs it
    python benchmarks/scan_pipeline.py --against 1253bdf [--only-against]   # the scan before the one engine
    python benchmarks/scan_pipeline.py --against HEAD~1 --only-against      # any later commit: engine against engine

The model has random weights (none are trained for vit-b-16 here): speed and memory do not depend on their values.
"""

from __future__ import annotations

import argparse
import os
import site
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from gmdf_cli.data.faces import load_detector, model_input
from gmdf_cli.data.media import MediaItem, Sampling
from gmdf_cli.data.retinaface import RetinaFaceDetector
from gmdf_cli.engine import Engine, EngineOptions
from gmdf_cli.engine.keyframes import DETECT_EVERY
from gmdf_cli.model import GMDF, build_model, get_config
from gmdf_cli.runtime.compiled import CompiledModel, CompiledRetinaFace
from gmdf_cli.runtime.export import compile_model, compile_retinaface
from gmdf_cli.weights import load_weights, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
VIDEO = SHARED / "media/celebdf_hantschmann/fake"


# Peak RSS is read from the process's own VmHWM at exit: ru_maxrss of a child would include the high-water mark its
# parent (this benchmark, with a model loaded) had when it forked, which Linux carries across fork and exec.
HWM = (
    "import atexit, sys\n"
    "def _hwm():\n"
    "    line = next(l for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
    "    print('VMHWM_KB', line.split()[1], file=sys.stderr)\n"
    "atexit.register(_hwm)\n"
)
IMPORTS_ONLY = HWM + "import cv2, torch, gmdf_cli.data.faces, gmdf_cli.jobs.scan, gmdf_cli.model.gmdf\n"
"""The libraries a scan imports (a ViT or MobileNetV2 scan: no open_clip, torchvision or facexlib package)."""
SCAN = (
    HWM + "import sys, runpy\nsys.argv = ['gmdf'] + sys.argv[1:]\nrunpy.run_module('gmdf_cli', run_name='__main__')\n"
)


def _peak_mb(stderr: str) -> float:
    return float(next(line.split()[1] for line in stderr.splitlines() if line.startswith("VMHWM_KB"))) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path)
    parser.add_argument("--config", default="vit-b-16")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--detect-every", type=int, default=DETECT_EVERY, help="Key frames: detect every K frames.")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--against", metavar="REV", help="Also time the scan pipeline of this git commit.")
    parser.add_argument("--only-against", action="store_true", help="With --against: that comparison only.")
    parser.add_argument(
        "--compiled", action="store_true", help="The model and RetinaFace as compiled graphs (OpenCV), as a CPU scan"
    )
    args = parser.parse_args()
    video = args.video or next(iter(sorted(VIDEO.glob("*.mp4"))), None)
    if video is None or not video.is_file():
        sys.exit(f"no video: pass --video (looked in {VIDEO})")

    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        model = build_model(get_config(args.config))
        path = save_checkpoint(model, Path(tmp) / "model.safetensors")
        del model
        if args.against and args.only_against:
            against(args, video, path, Path(tmp))
            return
        model, _, _ = load_weights(str(path), precision=args.precision)
        detector, _ = load_detector("retinaface", SHARED / "weights")
        if args.compiled:
            model, detector = compiled(model, detector, Path(tmp))
        options = EngineOptions(Sampling(frames=args.frames), batch_size=args.batch, keep_crops=0, detect_every=1)
        keyed = EngineOptions(
            Sampling(frames=args.frames), batch_size=args.batch, keep_crops=0, detect_every=args.detect_every
        )
        item = MediaItem(video, "video")

        crops = []
        engine = Engine(model, detector, options)
        original_flush = engine._flush

        def recording_flush() -> None:  # keep the exact crops the pipeline scored, for the model-only runs
            crops.extend(p.crop for p in engine.queue)
            original_flush()

        engine._flush = recording_flush  # type: ignore[method-assign]
        list(engine.run([item]))  # warm-up, and the crops
        faces = len(crops)
        keyed_faces = sum(r.faces_found for r in Engine(model, detector, keyed).run([item]))  # warm-up
        if keyed_faces != faces:
            sys.exit(f"key frames found {keyed_faces} faces, every frame {faces}")

        def pipeline() -> None:
            list(Engine(model, detector, options).run([item]))

        def pipeline_keyed() -> None:
            list(Engine(model, detector, keyed).run([item]))

        def model_only() -> None:  # as the scan calls it (GMDF.score: at most CPU_CHUNK images a pass on a CPU)
            with torch.inference_mode():
                for start in range(0, faces, args.batch):
                    batch = model_input(crops[start : start + args.batch])
                    model.score(batch if args.compiled else torch.from_numpy(batch))

        key_name = f"pipeline, detect every {args.detect_every}"
        runs = (("pipeline, detect every 1", pipeline), (key_name, pipeline_keyed), ("model only", model_only))
        times: dict[str, list[float]] = {name: [] for name, _ in runs}
        for _ in range(args.rounds):
            for name, run in runs:
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
        rates = {name: faces / min(ts) for name, ts in times.items()}
        print(
            f"video {video.name}: {args.frames} sampled frames, {faces} faces, config {args.config}, "
            f"batch {args.batch}, {args.precision}, {torch.get_num_threads()} threads, "
            f"{'compiled (OpenCV)' if args.compiled else 'torch'}, "
            f"best of {args.rounds} interleaved rounds"
        )
        for name, rate in rates.items():
            print(f"  {name:26s} {rate:6.2f} faces/s")
        for name in rates:
            if name != "model only":
                print(f"  ratio {name} / model only: {rates[name] / rates['model only']:.3f}  (target >= 0.85)")

        cmd = [
            sys.executable,
            "-c",
            SCAN,
            "scan",
            str(video),
            "--weights",
            str(path),
            "--detector-weights",
            str(SHARED / "weights"),
            "--frames",
            str(args.frames),
            "--batch-size",
            str(args.batch),
            "--precision",
            args.precision,
            "--detect-every",
            str(args.detect_every),
        ]
        way = {"GMDF_COMPILED_DIR": tmp, "GMDF_COMPILED": "1" if args.compiled else "0"}
        subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **way})  # compiles, if it does
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **way})
        wall = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(done.stderr)
        peak_mb = _peak_mb(done.stderr)
        print(
            f"  `gmdf scan` ({args.config}) as a user runs it (a second time): {wall:.1f} s wall, "
            f"peak RSS {peak_mb:.0f} MB (target <= 1200 MB)"
        )
        if not args.compiled:  # a compiled scan imports no torch: its whole peak is below this
            imports = subprocess.run([sys.executable, "-c", IMPORTS_ONLY], capture_output=True, text=True)
            base_mb = _peak_mb(imports.stderr)
            print(
                f"  of which importing the libraries alone (torch {torch.__version__}, cv2, gmdf's modules): "
                f"{base_mb:.0f} MB; gmdf's own share (weights, activations, frames): "
                f"{peak_mb - base_mb:.0f} MB"
            )
        if args.against:
            against(args, video, path, Path(tmp))


def compiled(model: GMDF, detector: RetinaFaceDetector, folder: Path) -> tuple[CompiledModel, CompiledRetinaFace]:
    """The model and RetinaFace compiled into ``folder``, as a CPU scan runs them (``gmdf_cli.runtime``)."""
    graph, det_graph = folder / "gmdf.onnx", folder / "retinaface.onnx"
    if not (compile_model(model, graph) and compile_retinaface(detector.net, det_graph)):
        sys.exit("OpenCV's run of a compiled graph differs from torch's")
    return CompiledModel(model.config, graph), CompiledRetinaFace(det_graph, dict(detector.info), detector.max_side)


# One timing driver per side, each in a fresh process with its own package on the path: the same checkpoint, face
# detector, video, sampling and batch; a warm-up run, then the best of ROUNDS.
DRIVER_HEAD = (
    "import sys, time\n"
    "import torch\n"
    "torch.set_num_threads(int(sys.argv[6]))\n"
    "from gmdf_cli.data.faces import load_detector\n"
    "from gmdf_cli.data.media import MediaItem, Sampling\n"
    "from gmdf_cli.weights import load_weights\n"
    "weights, det_dir, video, frames, batch, threads, rounds = sys.argv[1:8]\n"
    "model, _, _ = load_weights(weights)\n"
    "detector, _ = load_detector('retinaface', det_dir)\n"
    "item = MediaItem(__import__('pathlib').Path(video), 'video')\n"
)
DRIVER_NEW = DRIVER_HEAD + (
    "from gmdf_cli.engine import Engine, EngineOptions\n"
    "options = EngineOptions(Sampling(frames=int(frames)), batch_size=int(batch), keep_crops=0)\n"
    "run = lambda: list(Engine(model, detector, options).run([item]))\n"
)
DRIVER_OLD = DRIVER_HEAD + (
    "from gmdf_cli.analysis.scan import Scanner, ScanOptions\n"
    "options = ScanOptions(Sampling(frames=int(frames)), batch_size=int(batch), keep_crops=0)\n"
    "run = lambda: list(Scanner(model, detector, options).scan([item]))\n"
)
DRIVER_TAIL = (
    "faces = sum(r.faces_found for r in run())\n"
    "best = float('inf')\n"
    "for _ in range(int(rounds)):\n"
    "    start = time.perf_counter(); run(); best = min(best, time.perf_counter() - start)\n"
    "print('RESULT', faces, best)\n"
)


def _time_side(driver: str, package_root: Path, argv: list[str]) -> tuple[int, float]:
    # -S: no site processing, so the editable install's import hook cannot put this checkout's gmdf_cli in front of
    # the commit's; the packages themselves come from site-packages, named on the path after the side's own root.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(package_root), *site.getsitepackages()])}
    command = [sys.executable, "-S", "-c", driver + DRIVER_TAIL, *argv]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=package_root)  # cwd leads sys.path
    if done.returncode != 0:
        sys.exit(done.stderr)
    _, faces, best = next(line for line in done.stdout.splitlines() if line.startswith("RESULT")).split()
    return int(faces), float(best)


def against(args: argparse.Namespace, video: Path, weights: Path, tmp: Path) -> None:
    """The engine against the scan pipeline of commit ``args.against``, interleaved, each side in its own process."""
    old_root = tmp / "old"
    old_root.mkdir()
    archive = subprocess.run(["git", "archive", args.against, "gmdf_cli"], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(old_root)], input=archive.stdout, check=True)
    argv = [str(weights), str(SHARED / "weights"), str(video), str(args.frames), str(args.batch)]
    argv += [str(torch.get_num_threads()), str(args.rounds)]
    best: dict[str, float] = {"engine": float("inf"), args.against: float("inf")}
    faces: dict[str, int] = {}
    old_driver = DRIVER_NEW if (old_root / "gmdf_cli" / "engine").is_dir() else DRIVER_OLD  # before the one engine
    sides = [("engine", DRIVER_NEW, ROOT), (args.against, old_driver, old_root)]
    for round_ in range(4):  # the order alternates, so neither side always runs second
        for name, driver, root in sides if round_ % 2 == 0 else sides[::-1]:
            faces[name], seconds = _time_side(driver, root, argv)
            best[name] = min(best[name], seconds)
    if faces["engine"] != faces[args.against]:
        sys.exit(f"the two pipelines found different faces: {faces}")
    rate = {name: faces[name] / seconds for name, seconds in best.items()}
    how = f"{faces['engine']} faces, best of 4 x {args.rounds} runs, the order alternating"
    print(f"  the engine against the pipeline of {args.against} ({how}):")
    for name, value in rate.items():
        print(f"    {name:11s} {value:6.2f} faces/s")
    print(f"  ratio engine / {args.against}: {rate['engine'] / rate[args.against]:.3f}  (target >= 1, no slowdown)")


if __name__ == "__main__":
    main()
