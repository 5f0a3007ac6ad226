"""Files/s of `gmdf scan --workers N` against one process on the same archive, in one run: each side a real `gmdf
scan` into a fresh --out, the order alternating over rounds; the rate is summary.json's (files scanned over the
time from the first file to the last: model loading is not in it), the wall time beside it (with loading).

    python benchmarks/archive_workers.py [--files 24] [--workers 2] [--config vit-b-16] [--rounds 2]

The archive: real videos and photos from ../shared/media (short videos, LFW photos) when present, else generated
clips; the model has random weights (speed does not depend on their values). On 2 cores expect less than 2x: the
one process already spreads the model's matrix products over both cores (torch threads), so a second worker gains
only the time that one process spends single-threaded (decoding, face detection's pre- and post-processing,
Python), and two models share the memory bandwidth.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from gmdf_cli.model import build_model, get_config
from gmdf_cli.weights import save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT.parent / "shared" / "media"
RETINAFACE = ROOT.parent / "shared" / "weights"


def archive(folder: Path, files: int) -> Path:
    """Half short videos, half photos, from the shared media (copied, so every run reads the same bytes)."""
    videos = sorted((MEDIA / "celebdf_hantschmann").rglob("*.mp4")) + sorted((MEDIA / "ffpp_icpr2020").rglob("*.mp4"))
    photos = sorted((MEDIA / "lfw_mmehdig").rglob("*.jpg"))
    if not videos or not photos:
        sys.exit(f"needs the shared media in {MEDIA}")
    picked = videos[: files // 2] + photos[: files - min(len(videos), files // 2)]
    for i, path in enumerate(picked):
        shutil.copy(path, folder / f"{i:03d}{path.suffix}")
    return folder


def scan(folder: Path, out: Path, weights: Path, workers: int, frames: int) -> tuple[float, float]:
    command = [sys.executable, "-m", "gmdf_cli", "scan", str(folder), "--weights", str(weights), "--out", str(out)]
    command += ["--frames", str(frames), "--detector-weights", str(RETINAFACE), "--workers", str(workers)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode not in (0, 1):
        sys.exit(done.stderr[-2000:])
    return json.loads((out / "summary.json").read_text())["files_per_second"], wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=24)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--config", default="vit-b-16")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "in").mkdir()
        folder = archive(root / "in", args.files)
        weights = save_checkpoint(build_model(get_config(args.config)), root / "w.safetensors")
        rates: dict[int, list[float]] = {1: [], args.workers: []}
        walls: dict[int, list[float]] = {1: [], args.workers: []}
        for r in range(args.rounds):
            for n in (1, args.workers) if r % 2 == 0 else (args.workers, 1):
                rate, wall = scan(folder, root / f"out-{r}-{n}", weights, n, args.frames)
                rates[n].append(rate)
                walls[n].append(wall)
                print(f"round {r}: {n} worker(s): {rate:.3f} files/s, {wall:.1f} s wall", flush=True)
    one, many = statistics.mean(rates[1]), statistics.mean(rates[args.workers])
    print(f"{args.files} files, {args.config}, {args.frames} frames, {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"1 worker: {one:.3f} files/s ({statistics.mean(walls[1]):.1f} s wall)")
    print(f"{args.workers} workers: {many:.3f} files/s ({statistics.mean(walls[args.workers]):.1f} s wall)")
    print(f"ratio {args.workers} workers / 1: {many / one:.2f}x")


if __name__ == "__main__":
    main()
