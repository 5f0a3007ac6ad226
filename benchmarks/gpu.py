"""GM-DF on the hardware at hand, all measured in one run on one device (a GPU where there is one):

1. ViT-B/16 GM-DF inference, faces/s at fp32, bf16 and (GPU) fp16, on a batch already on the device;
2. the scan pipeline (decode -> detect -> crop -> model) in faces/s against the model alone on the same crops at
   the same batch size (target >= 0.85x), with the background decode/detect thread on and off, and decode + detect
   alone (what bounds the pipeline when the model is fast);
3. one GM-DF meta step against one plain fine-tuning step on the same batch (target <= 1.6x), fp32 and bf16;
4. peak device memory of each part.

    python benchmarks/gpu.py [--device auto] [--json-out FILE] [--videos V1.mp4 V2.mp4 ...]

On a CPU it runs the same parts with smaller sizes (``--batch``, ``--train-batch``, ``--rounds`` override). The
models have random weights (none are trained for vit-b-16 here): speed and memory do not depend on their values.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gmdf_cli.data.faces import load_detector, to_model_input
from gmdf_cli.data.media import MediaItem, Sampling, discover, open_media, read_frames
from gmdf_cli.device import describe, resolve_device, synchronize
from gmdf_cli.engine import Engine, EngineOptions
from gmdf_cli.model import build_model, get_config, random_patch_mask
from gmdf_cli.train.loop import MetaObjective, TrainRequest, set_trainable, step_shares
from gmdf_cli.weights import load_weights, save_checkpoint

SHARED = Path(__file__).resolve().parents[2] / "shared"
DOMAINS = ["a", "b", "c"]


def _timed(device: torch.device, run: Callable[[], Any], rounds: int, warmup: int = 2) -> float:
    """Median seconds of ``rounds`` calls after ``warmup``, kernels waited for."""
    for _ in range(warmup):
        run()
    synchronize(device)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} MB"


def inference(
    path: Path, device: torch.device, precisions: list[str], batch: int, rounds: int
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for precision in precisions:
        _peak_reset(device)
        model, _, _ = load_weights(str(path), device=device, precision=precision)
        size = model.config.vision.image_size
        images = torch.randn(batch, 3, size, size, device=device).to(next(model.parameters()).dtype)
        with torch.inference_mode():
            seconds = _timed(device, lambda m=model, x=images: m.predict(x), rounds)
        out[precision] = {"faces_per_s": batch / seconds, "peak_mb": _peak_mb(device)}
        del model, images
    return out


def pipeline(
    path: Path, device: torch.device, videos: list[Path], frames: int, batch: int, rounds: int, precision: str
) -> dict[str, Any]:
    model, _, _ = load_weights(str(path), device=device, precision=precision)
    detector, _ = load_detector("retinaface", SHARED / "weights", device=device)
    items = [MediaItem(v, "video") for v in videos]
    crops: list[Any] = []

    def options(threads: int | None) -> EngineOptions:
        return EngineOptions(Sampling(frames=frames), batch_size=batch, keep_crops=0, decode_threads=threads)

    engine = Engine(model, detector, options(None))
    original = engine._flush

    def recording_flush() -> None:  # the exact crops the pipeline scored, for the model-only runs
        crops.extend(p.crop for p in engine.queue)
        original()

    engine._flush = recording_flush  # type: ignore[method-assign]
    list(engine.run(items))
    faces = len(crops)

    def model_only() -> None:
        with torch.inference_mode():
            for start in range(0, faces, batch):
                model.score(to_model_input(crops[start : start + batch]))

    def detect_only() -> None:
        quiet = Engine(None, detector, options(0))
        for item in items:
            for _ in quiet.detect_frames(read_frames(open_media(item, Sampling(frames=frames)))):
                pass

    def decode_only() -> None:
        for item in items:
            for _ in read_frames(open_media(item, Sampling(frames=frames))):
                pass

    _peak_reset(device)
    runs: dict[str, Callable[[], Any]] = {
        "pipeline, 8 decode/detect threads": lambda: list(Engine(model, detector, options(8)).run(items)),
        "pipeline, 4 threads (GPU default)": lambda: list(Engine(model, detector, options(None)).run(items)),
        "pipeline, no thread (CPU default)": lambda: list(Engine(model, detector, options(0)).run(items)),
        "decode + detect + crop, one thread": detect_only,
        "decode alone, one thread": decode_only,
        "model only, same crops": model_only,
    }
    times = {name: _timed(device, run, rounds, warmup=1) for name, run in runs.items()}
    return {
        "videos": len(videos),
        "frames_per_video": frames,
        "faces": faces,
        "batch": batch,
        "precision": precision,
        "faces_per_s": {name: faces / t for name, t in times.items()},
        "peak_mb": _peak_mb(device),
    }


def train_steps(config: str, device: torch.device, batch: int, rounds: int, precision: str) -> dict[str, Any]:
    torch.manual_seed(0)
    cfg = get_config(config).with_domains(DOMAINS)
    size, patches = cfg.vision.image_size, cfg.grid**2
    images = torch.randn(batch, 3, size, size, device=device)
    labels = (torch.arange(batch) % 2).to(device)
    masks = random_patch_mask(batch, patches, cfg.mim_ratio, torch.Generator().manual_seed(0)).to(device)
    # dealt as `gmdf train` deals a step (the meta-test domain half, by default); both steps see the same images
    share = TrainRequest(domains=DOMAINS, data="-", out="-").meta_test_share
    per, test = step_shares(batch, len(DOMAINS), share)
    images, labels, masks = images[: 2 * per + test], labels[: 2 * per + test], masks[: 2 * per + test]
    bounds = [0, per, 2 * per, 2 * per + test]
    parts = [(images[a:b], labels[a:b], masks[a:b]) for a, b in itertools.pairwise(bounds)]
    result: dict[str, Any] = {"batch": batch, "precision": precision}
    for kind in ("meta", "plain"):
        baseline = kind == "plain"
        _peak_reset(device)
        model = build_model(cfg).to(device)
        trainable = set_trainable(model, baseline)  # as `gmdf train` does: theta_O (meta) or the tower (plain)
        model.train(True)
        request = TrainRequest(
            domains=DOMAINS, data="-", out="-", config=config, baseline=baseline, precision=precision
        )
        objective = MetaObjective(model, request, device)
        optimizer = torch.optim.Adam(trainable, lr=1e-6)

        def step(objective: MetaObjective = objective, optimizer: torch.optim.Optimizer = optimizer) -> None:
            if objective.req.baseline:
                loss, _ = objective("baseline", images, labels)
            else:
                loss, _ = objective("meta", [(parts[0], 1), (parts[1], 2)], parts[2])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        result[kind] = {"seconds": _timed(device, step, rounds), "peak_mb": _peak_mb(device)}
        del model, objective, optimizer
    result["ratio"] = result["meta"]["seconds"] / result["plain"]["seconds"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--config", default="vit-b-16")
    parser.add_argument("--batch", type=int, help="inference batch (GPU 256, CPU 8)")
    parser.add_argument(
        "--train-batch",
        type=int,
        help="training batch over 3 domains, half of it meta-test (GPU 32 as the paper, CPU 6)",
    )
    parser.add_argument("--scan-batch", type=int, help="scan batch (GPU 64, CPU 16)")
    parser.add_argument("--frames", type=int, help="frames per video for the pipeline (GPU 64, CPU 8)")
    parser.add_argument("--rounds", type=int, help="timed rounds per measurement (GPU 5, CPU 1)")
    parser.add_argument("--videos", nargs="*", type=Path, help="videos for the pipeline (default: some in shared)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["inference", "pipeline", "train"])
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    batch = args.batch or (256 if gpu else 8)
    train_batch = args.train_batch or (32 if gpu else 6)
    scan_batch = args.scan_batch or (64 if gpu else 16)
    frames = args.frames or (64 if gpu else 8)
    rounds = args.rounds or (5 if gpu else 1)
    precisions = ["fp32", "bf16", "fp16"] if gpu else ["fp32", "bf16"]
    videos = args.videos or sorted((SHARED / "media/celebdf_hantschmann").glob("*/*.mp4"))[:4]
    videos = [v for v in discover([str(v) for v in videos]).items if v.kind == "video"]
    report: dict[str, Any] = {
        "device": describe(device),
        "torch": torch.__version__,
        "config": args.config,
        "threads": torch.get_num_threads(),
    }
    print(f"device {report['device']}, torch {torch.__version__}, {report['threads']} CPU threads, {args.config}")

    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        path = save_checkpoint(build_model(get_config(args.config)), Path(tmp) / "model.safetensors")
        if "inference" not in args.skip:
            report["inference"] = inf = inference(path, device, precisions, batch, rounds)
            print(f"1. inference, batch {batch} on the device:")
            for precision, row in inf.items():
                print(f"   {precision:5s} {row['faces_per_s']:9,.1f} faces/s   peak {_mb(row['peak_mb'])}")
            print(f"   bf16 / fp32: {inf['bf16']['faces_per_s'] / inf['fp32']['faces_per_s']:.2f}x")
        if "pipeline" not in args.skip:
            if not videos:
                print("2. scan pipeline: skipped (no videos: pass --videos)")
            else:
                precision = "bf16" if gpu else "fp32"
                report["pipeline"] = pipe = pipeline(
                    path, device, [v.path for v in videos], frames, scan_batch, rounds, precision
                )
                rates = pipe["faces_per_s"]
                model_rate = rates["model only, same crops"]
                print(
                    f"2. scan pipeline, {pipe['videos']} videos x {frames} frames = {pipe['faces']} faces, "
                    f"batch {scan_batch}, {precision}:"
                )
                for name, rate in rates.items():
                    print(f"   {name:36s} {rate:9,.1f} faces/s   {rate / model_rate:5.3f}x the model alone")
                print(f"   peak {_mb(pipe['peak_mb'])} (target: pipeline >= 0.85x the model alone)")
        if "train" not in args.skip:
            report["train"] = {}
            for precision in ("fp32", "bf16"):
                row = train_steps(args.config, device, train_batch, rounds, precision)
                report["train"][precision] = row
                print(
                    f"3. training step, batch {train_batch} (3 domains), {precision}: meta "
                    f"{row['meta']['seconds'] * 1000:,.1f} ms (peak {_mb(row['meta']['peak_mb'])}), plain "
                    f"{row['plain']['seconds'] * 1000:,.1f} ms (peak {_mb(row['plain']['peak_mb'])}), "
                    f"ratio {row['ratio']:.2f} (target <= 1.6)"
                )
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
