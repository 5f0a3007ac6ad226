"""The `gmdf scan` job: the detector from the API, a progress bar, and every requested output written as files
finish. Whatever happens (a bad file, Ctrl-C), results already computed are written."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from .. import __version__
from ..api import Detector
from ..data.faces import DetectorOptions
from ..data.media import Sampling, discover
from ..errors import EXIT_FAILURE, EXIT_OK, UsageError
from ..fileio import write_text_atomic
from ..progress import progress_bar
from ..report.render import CsvWriter, html_report, write_artifacts, write_json
from ..report.results import FileResult, ScanReport
from ..weights import DEFAULT_WEIGHTS
from .common import environment, now, warner

EXIT_INTERRUPTED = 130


@dataclass
class ScanRequest:
    paths: list[str]
    weights: str | None = None
    sampling: Sampling = field(default_factory=Sampling)
    batch_size: int = 16
    threshold: float | None = None
    detector: DetectorOptions = field(default_factory=DetectorOptions)
    max_faces: int = 8
    out: Path | None = None
    csv: Path | None = None
    heatmaps: bool = False
    heatmap_faces: int = 8
    precision: str = "fp32"
    device: str = "auto"

    def parameters(self, threshold: float) -> dict[str, Any]:
        params = asdict(self)
        params.update(sampling=asdict(self.sampling), threshold=threshold)
        detector = params.pop("detector")
        params.update(detector=detector["name"], detector_weights=detector["weights"], det_size=detector["det_size"])
        return {k: str(v) if isinstance(v, Path) else v for k, v in params.items()}


@dataclass
class ScanOutcome:
    report: ScanReport
    exit_code: int


def _heatmaps_for(model: Any, result: FileResult, faces: int) -> dict[str, Any] | None:
    from ..analysis.heatmaps import contact_sheet, gradcam_maps, overlay

    chosen = result.suspicious[:faces]
    if not chosen:
        return None
    maps = gradcam_maps(model, [s.crop for s in chosen])  # Grad-CAM wants fp32 (see _Outputs)
    overlays = [overlay(s.display, m) for s, m in zip(chosen, maps, strict=True)]
    captions = [f"{s.score:.2f} t{s.track} " + (f"{s.time:.1f}s" if result.kind == "video" else "") for s in chosen]
    return {"overlays": overlays, "sheet": contact_sheet(overlays, captions)}


class _Outputs:
    """The files a scan writes: CSV rows and per-file artifacts as each file finishes, report.json/html at the end."""

    def __init__(self, request: ScanRequest, detector: Detector) -> None:
        self.request = request
        self.csv = CsvWriter(request.csv) if request.csv else None
        self.images: dict[int, dict[str, bytes]] = {}
        self.cam_model = detector.model
        if request.heatmaps and request.precision != "fp32":  # Grad-CAM works in fp32: a float copy explains
            self.cam_model = copy.deepcopy(detector.model).float()

    def add(self, index: int, result: FileResult) -> None:
        if self.csv:
            self.csv.add(result)
        req = self.request
        if req.out is not None:
            heat = _heatmaps_for(self.cam_model, result, req.heatmap_faces) if req.heatmaps else None
            self.images[index] = write_artifacts(req.out, index, result, heat)

    def close(self, report: ScanReport) -> None:
        if self.csv:
            self.csv.close()
        if self.request.out is not None:
            write_json(self.request.out / "report.json", report)
            write_text_atomic(self.request.out / "report.html", html_report(report, self.images))


def open_detector(request: ScanRequest, console: Console) -> Detector:
    return Detector.from_pretrained(
        request.weights or DEFAULT_WEIGHTS,
        device=request.device,
        precision=request.precision,
        threshold=request.threshold,
        sampling=request.sampling,
        batch_size=request.batch_size,
        max_faces=request.max_faces,
        keep_crops=request.heatmap_faces if request.heatmaps else 0,
        face_detector=request.detector,
        warn=warner(console),
    )


def run_scan(request: ScanRequest, console: Console) -> ScanOutcome:
    found = discover(request.paths)
    if not found.items and not found.missing:
        raise UsageError("no images or videos found in " + ", ".join(request.paths))
    for path in found.skipped:
        console.print(f"[dim]skipped {escape(str(path))}: not an image or video[/]", soft_wrap=True)
    detector = open_detector(request, console)
    report = ScanReport(
        version=__version__,
        started=now(),
        model=detector.model_info(),
        detector=detector.detector_info(),
        parameters=request.parameters(detector.threshold),
        environment=environment(),
        skipped=[str(p) for p in found.skipped],
    )
    outputs = _Outputs(request, detector)
    exit_code = EXIT_OK
    try:
        _scan_files(detector, request.paths, report, outputs, console)
    except KeyboardInterrupt:
        report.interrupted = True
        exit_code = EXIT_INTERRUPTED
        console.print("[yellow]interrupted: writing the results of the files already finished[/]")
    finally:
        report.finished = now()
        outputs.close(report)
    if exit_code == EXIT_OK and any(r.verdict == "error" for r in report.files):
        exit_code = EXIT_FAILURE
    return ScanOutcome(report, exit_code)


def _scan_files(detector: Detector, paths: list[str], report: ScanReport, outputs: _Outputs, console: Console) -> None:
    progress = progress_bar(console, "frames")
    with progress:
        task = progress.add_task("scanning", total=None)
        for result in detector.scan_many(
            paths,
            on_start=lambda total: progress.update(task, total=total),
            on_file=lambda r: progress.update(task, description=f"scanning {escape(r.path.name[:40])}"),
            on_frame=lambda: progress.advance(task),
        ):
            report.files.append(result)  # first: whatever happens next, this result is reported
            if result.error:
                console.print(f"[red]error:[/] {escape(str(result.path))}: {escape(result.error)}", soft_wrap=True)
            outputs.add(len(report.files) - 1, result)
