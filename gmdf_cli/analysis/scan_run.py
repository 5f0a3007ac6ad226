"""The `gmdf scan` job: resolve weights and detector, scan with a progress bar, write every requested output.
Whatever happens (a bad file, Ctrl-C), results already computed are written."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from .. import __version__
from ..data.faces import DETECTION_SIDE, load_detector
from ..data.media import Sampling, discover
from ..device import resolve_device
from ..errors import EXIT_FAILURE, EXIT_OK, UsageError
from ..fileio import write_text_atomic
from ..progress import progress_bar
from ..weights import DEFAULT_WEIGHTS, load_weights
from .report import CsvWriter, html_report, write_artifacts, write_json
from .scan import DEFAULT_THRESHOLD, FileResult, Scanner, ScanOptions, environment, now

EXIT_INTERRUPTED = 130


@dataclass
class ScanRequest:
    paths: list[str]
    weights: str | None = None
    sampling: Sampling = field(default_factory=Sampling)
    batch_size: int = 16
    threshold: float | None = None
    detector: str = "retinaface"
    detector_weights: str | None = None
    det_size: int = DETECTION_SIDE
    max_faces: int = 8
    out: Path | None = None
    csv: Path | None = None
    heatmaps: bool = False
    heatmap_faces: int = 8
    precision: str = "fp32"
    device: str = "auto"

    def parameters(self) -> dict[str, Any]:
        params = asdict(self)
        params["sampling"] = asdict(self.sampling)
        return {k: str(v) if isinstance(v, Path) else v for k, v in params.items()}


@dataclass
class ScanOutcome:
    report: dict[str, Any]
    exit_code: int


def _heatmaps_for(model: Any, result: FileResult, faces: int) -> dict[str, Any] | None:
    from .heatmaps import contact_sheet, gradcam_maps, overlay

    chosen = result.suspicious[:faces]
    if not chosen:
        return None
    maps = gradcam_maps(model, [s.crop for s in chosen])  # Grad-CAM wants fp32 (see run_scan)
    overlays = [overlay(s.display, m) for s, m in zip(chosen, maps, strict=True)]
    captions = [f"{s.score:.2f} t{s.track} " + (f"{s.time:.1f}s" if result.kind == "video" else "") for s in chosen]
    return {"overlays": overlays, "sheet": contact_sheet(overlays, captions)}


def run_scan(request: ScanRequest, console: Console) -> ScanOutcome:
    spec = request.weights or DEFAULT_WEIGHTS
    found = discover(request.paths)
    if not found.items and not found.missing:
        raise UsageError("no images or videos found in " + ", ".join(request.paths))
    for path in found.skipped:
        console.print(f"[dim]skipped {path}: not an image or video[/]", soft_wrap=True)

    device = resolve_device(request.device)
    model, resolved, meta = load_weights(spec, device=device, precision=request.precision)
    cam_model = model
    if request.heatmaps and request.precision != "fp32":  # Grad-CAM works in fp32: a float copy explains
        cam_model = copy.deepcopy(model).float()
    threshold = request.threshold if request.threshold is not None else float(meta.get("threshold", DEFAULT_THRESHOLD))
    detector, fallback = load_detector(request.detector, request.detector_weights, request.det_size, device)
    if fallback:
        console.print(f"[yellow]warning:[/] {fallback}", soft_wrap=True)

    report: dict[str, Any] = {
        "version": __version__,
        "started": now(),
        "finished": None,
        "interrupted": False,
        "model": {
            "name": resolved.name,
            "sha256": resolved.sha256,
            "source": resolved.source,
            "path": str(resolved.path),
            "config": model.config.name,
            "domains": list(model.config.domains),
            "trained": meta.get("training"),
        },
        "detector": {**detector.info, "fallback_reason": fallback},
        "parameters": {**request.parameters(), "threshold": threshold},
        "environment": environment(),
        "files": [],
        "skipped": [str(p) for p in found.skipped],
    }
    results: list[FileResult] = [FileResult(path, error="no such file or directory") for path in found.missing]
    for r in results:
        r.finalise(threshold)
        console.print(f"[red]error:[/] {r.path}: {r.error}", soft_wrap=True, highlight=False)
    images: dict[int, dict[str, bytes]] = {}
    csv_writer = CsvWriter(request.csv) if request.csv else None
    options = ScanOptions(
        request.sampling,
        request.batch_size,
        threshold,
        request.max_faces,
        keep_crops=request.heatmap_faces if request.heatmaps else 0,
    )
    scanner = Scanner(model, detector, options)
    exit_code = EXIT_OK
    progress = progress_bar(console, "frames")
    try:
        with progress:
            task = progress.add_task("scanning", total=None)
            for result in scanner.scan(
                found.items,
                on_start=lambda total: progress.update(task, total=total),
                on_file=lambda path: progress.update(task, description=f"scanning {path.name[:40]}"),
                on_frame=lambda: progress.advance(task),
            ):
                results.append(result)  # first: whatever happens next, this result is reported
                if result.error:
                    console.print(f"[red]error:[/] {result.path}: {result.error}", soft_wrap=True, highlight=False)
                if csv_writer:
                    csv_writer.add(result)
                if request.out is not None:
                    index = len(results) - 1
                    heat = _heatmaps_for(cam_model, result, request.heatmap_faces) if request.heatmaps else None
                    images[index] = write_artifacts(request.out, index, result, heat)
    except KeyboardInterrupt:
        report["interrupted"] = True
        exit_code = EXIT_INTERRUPTED
        console.print("[yellow]interrupted: writing the results of the files already finished[/]")
    finally:
        if csv_writer:
            csv_writer.close()
        report["files"] = [r.as_dict() for r in results]
        report["finished"] = now()
        if request.out is not None:
            write_json(request.out / "report.json", report)
            write_text_atomic(request.out / "report.html", html_report(report, images))
    if exit_code == EXIT_OK and any(r.verdict == "error" for r in results):
        exit_code = EXIT_FAILURE
    return ScanOutcome(report, exit_code)
