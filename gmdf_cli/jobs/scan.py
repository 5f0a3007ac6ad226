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
from ..report.render import CsvWriter, FaceImages, FileImages, html_report, write_artifacts, write_json
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
    report_faces: int = 8
    """With ``out``: the most suspicious faces per file shown in the report (with heatmaps if asked)."""
    precision: str = "fp32"
    device: str = "auto"

    def parameters(self, threshold: float, detector_ran: str) -> dict[str, Any]:
        """The settings as they took effect: the threshold used, and the face detector that really ran (with the
        one asked for beside it when a fallback replaced it)."""
        params = asdict(self)
        params.update(sampling=self.sampling.describe(), threshold=threshold)
        asked = params.pop("detector")
        params.update(detector=detector_ran, detector_weights=asked["weights"], det_size=asked["det_size"])
        if detector_ran != asked["name"]:
            params["detector_requested"] = asked["name"]
        return {k: str(v) if isinstance(v, Path) else v for k, v in params.items()}


@dataclass
class ScanOutcome:
    report: ScanReport
    exit_code: int


def faces_for(model: Any, result: FileResult, faces: int, heatmaps: bool) -> list[FaceImages]:
    """The file's most suspicious faces for the report, with their Grad-CAM overlays and notes when asked."""
    chosen = result.suspicious[:faces]
    if not heatmaps or not chosen:
        return [FaceImages(s) for s in chosen]
    from ..analysis.heatmaps import cam_note, gradcam_maps, overlay

    maps = gradcam_maps(model, [s.crop for s in chosen])  # Grad-CAM wants fp32 (see _Outputs)
    return [FaceImages(s, overlay(s.display, m), cam_note(m)) for s, m in zip(chosen, maps, strict=True)]


class _Outputs:
    """The files a scan writes: CSV rows and per-file artifacts as each file finishes, report.json/html at the end."""

    def __init__(self, request: ScanRequest, detector: Detector) -> None:
        self.request = request
        self.csv = CsvWriter(request.csv) if request.csv else None
        self.images: dict[int, FileImages] = {}
        self.cam_model = detector.model
        if request.heatmaps and request.precision != "fp32":  # Grad-CAM works in fp32: a float copy explains
            self.cam_model = copy.deepcopy(detector.model).float()

    def add(self, index: int, result: FileResult) -> None:
        if self.csv:
            self.csv.add(result)
        req = self.request
        if req.out is not None:
            faces = faces_for(self.cam_model, result, req.report_faces, req.heatmaps)
            self.images[index] = write_artifacts(req.out, index, result, faces)

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
        keep_crops=request.report_faces if request.out is not None else 0,
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
        parameters=request.parameters(detector.threshold, detector.detector_info().name),
        environment=environment(),
        skipped=[str(p) for p in found.skipped],
    )
    outputs = _Outputs(request, detector)
    exit_code = EXIT_OK
    try:
        _scan_files(detector, request, report, outputs, console)
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


def _scan_files(
    detector: Detector, request: ScanRequest, report: ScanReport, outputs: _Outputs, console: Console
) -> None:
    """Every file through the detector, with two progress lines: files done of all (its ETA steady, one step a
    file) and the frames of the file being read."""
    found = discover(request.paths)
    progress = progress_bar(console, "")
    with progress:
        files = progress.add_task("files", total=len(found.items) + len(found.missing))
        frames = progress.add_task("frames", total=None)
        for result in detector.scan_many(
            request.paths,
            on_file=lambda r: progress.reset(frames, total=r.frames_requested, description=escape(r.path.name[:40])),
            on_frame=lambda: progress.advance(frames),
        ):
            report.files.append(result)  # first: whatever happens next, this result is reported
            progress.advance(files)
            if result.error:
                console.print(f"[red]error:[/] {escape(str(result.path))}: {escape(result.error)}", soft_wrap=True)
            outputs.add(len(report.files) - 1, result)
