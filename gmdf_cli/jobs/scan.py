"""The `gmdf scan` job: the detector from the API, a progress bar, and every requested output written as files
finish. Whatever happens (a bad file, Ctrl-C), results already computed are written."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console

from .. import __version__
from ..api import Detector
from ..data.faces import DetectorOptions
from ..data.media import MediaItem, Sampling, discover
from ..errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_TERMINATED, Terminated, UsageError
from ..fileio import append_line, sha256_file, write_text_atomic
from ..progress import progress_bar
from ..report.render import CsvWriter, FaceImages, FileImages, html_report, plain, write_artifacts, write_json
from ..report.results import FileResult, ScanReport
from ..report.schema import dumps, from_jsonable
from ..weights import DEFAULT_WEIGHTS
from .common import environment, now, record_settings, warner

T = TypeVar("T")
SETTINGS_FILE = "scan.json"
RESULTS_FILE = "results.jsonl"


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

    def settings(self, detector: Detector) -> dict[str, Any]:
        """Everything that changes a file's result: a rerun into the same ``out`` takes finished files over only
        when these are the same, and is refused otherwise."""
        info = detector.detector_info()
        return {
            "gmdf": __version__,
            "model_sha256": detector.weights.sha256,
            "detector": [info.name, info.sha256, info.max_side],
            "sampling": asdict(self.sampling),
            "max_faces": self.max_faces,
            "threshold": detector.threshold,
            "band": list(detector.options.band) if detector.options.band else None,
            "precision": self.precision,
        }

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
    """What a scan writes, as each file finishes: a line in ``results.jsonl`` (what a rerun takes over), CSV rows,
    the file's images, and ``report.json`` rewritten; ``report.html`` at the end. A failed write (a full disk, a
    folder that cannot be written) is said once per output and the scan goes on: nothing already computed is lost,
    and the exit code says that something failed."""

    def __init__(self, request: ScanRequest, detector: Detector, console: Console) -> None:
        self.request, self.console = request, console
        self.failed: set[str] = set()
        self.images: dict[int, FileImages] = {}
        csv_path = request.csv
        self.csv = self._try("the CSV", lambda: CsvWriter(csv_path)) if csv_path is not None else None
        self.cam_model = detector.model
        if request.heatmaps and request.precision != "fp32":  # Grad-CAM works in fp32: a float copy explains
            self.cam_model = copy.deepcopy(detector.model).float()

    def _try(self, what: str, action: Callable[[], T]) -> T | None:
        if what in self.failed:
            return None
        try:
            return action()
        except OSError as exc:
            self.failed.add(what)
            reason = plain(exc.strerror or str(exc))
            self.console.print(f"[red]error:[/] cannot write {what}: {reason}; the scan goes on", soft_wrap=True)
            return None

    def add(self, index: int, result: FileResult, report: ScanReport, scanned: bool = True) -> None:
        req = self.request
        if self.csv:
            self._try("the CSV", lambda: self.csv.add(result) if self.csv else None)
        if req.out is None:
            return
        out = req.out
        if scanned:  # first the journal: the result is safe before the slower images are made
            self._try("results.jsonl", lambda: append_line(out / RESULTS_FILE, dumps(result, indent=None)))
        faces = faces_for(self.cam_model, result, req.report_faces, req.heatmaps) if scanned else []
        images = self._try("the images", lambda: write_artifacts(out, index, result, faces))
        self.images[index] = images or FileImages()
        if scanned:  # a taken-over file is in report.json already: no rewrite per file taken over
            self._try("report.json", lambda: write_json(out / "report.json", report))

    def close(self, report: ScanReport) -> None:
        if self.csv:
            self._try("the CSV", self.csv.close)
        if self.request.out is not None:
            out = self.request.out
            self._try("report.json", lambda: write_json(out / "report.json", report))
            self._try("report.html", lambda: write_text_atomic(out / "report.html", html_report(report, self.images)))


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


def _check_outputs(request: ScanRequest, inputs: list[Path]) -> None:
    """Outputs never overwrite an input."""
    if request.csv is not None and request.csv.exists():
        target = request.csv.resolve()
        if any(p.resolve() == target for p in inputs):
            raise UsageError(f"--csv {request.csv} is one of the inputs: it would be overwritten")


def _finished(request: ScanRequest, detector: Detector) -> dict[str, FileResult]:
    """The files an earlier scan into the same ``out`` finished, when it ran with the same settings (refused
    otherwise); an empty dict for a new ``out``."""
    if request.out is None:
        return {}
    request.out.mkdir(parents=True, exist_ok=True)
    refusal = f"{request.out} holds a scan made with other settings; use another --out, or delete it to start again"
    record_settings(request.out / SETTINGS_FILE, request.settings(detector), refusal)
    done: dict[str, FileResult] = {}
    journal = request.out / RESULTS_FILE
    for line in journal.read_text(encoding="utf-8").splitlines() if journal.is_file() else []:
        try:
            result = from_jsonable(FileResult, json.loads(line))
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a kill
        done[str(result.path)] = result
    return done


def run_scan(request: ScanRequest, console: Console) -> ScanOutcome:
    found = discover(request.paths, exclude=[request.out] if request.out is not None else [])
    if not found.items and not found.missing:
        raise UsageError("no images or videos found in " + ", ".join(request.paths))
    _check_outputs(request, [i.path for i in found.items])
    for path in found.skipped:
        console.print(f"[dim]skipped {plain(str(path))}: not an image or video[/]", soft_wrap=True)
    detector = open_detector(request, console)
    finished = _finished(request, detector)
    report = ScanReport(
        version=__version__,
        started=now(),
        model=detector.model_info(),
        detector=detector.detector_info(),
        parameters=request.parameters(detector.threshold, detector.detector_info().name),
        environment=environment(),
        skipped=[str(p) for p in found.skipped],
    )
    outputs = _Outputs(request, detector, console)
    exit_code = EXIT_OK
    try:
        todo = _take_over(found.items, finished, report, outputs, console)
        _scan_files(detector, todo, report, outputs, console)
    except KeyboardInterrupt as exc:
        report.interrupted = True
        exit_code = EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
        console.print("[yellow]interrupted: writing the results of the files already finished[/]")
    finally:
        report.finished = now()
        outputs.close(report)
    if exit_code == EXIT_OK and (outputs.failed or any(r.verdict == "error" for r in report.files)):
        exit_code = EXIT_FAILURE
    return ScanOutcome(report, exit_code)


def _take_over(
    items: list[MediaItem], finished: dict[str, FileResult], report: ScanReport, outputs: _Outputs, console: Console
) -> list[Path]:
    """Put the files an earlier run finished (same path, same content) into the report; return the others."""
    todo: list[Path] = []
    for item in items:
        done = finished.get(str(item.path))
        if done is not None and done.sha256 == sha256_file(item.path):
            report.files.append(done)
            outputs.add(len(report.files) - 1, done, report, scanned=False)
        else:
            todo.append(item.path)
    if report.files:
        console.print(f"resuming: {len(report.files)} of {len(items)} files already done", soft_wrap=True)
    return todo


def _scan_files(detector: Detector, paths: list[Path], report: ScanReport, outputs: _Outputs, console: Console) -> None:
    """Every file through the detector, with two progress lines: files done of all (its ETA steady, one step a
    file) and the frames of the file being read."""
    progress = progress_bar(console, "")
    with progress:
        files = progress.add_task("files", total=len(paths))
        frames = progress.add_task("frames", total=None)
        for result in detector.scan_many(
            paths,
            on_file=lambda r: progress.reset(frames, total=r.frames_requested, description=plain(r.path.name[:40])),
            on_frame=lambda: progress.advance(frames),
        ):
            report.files.append(result)  # first: whatever happens next, this result is reported
            progress.advance(files)
            if result.error:
                console.print(f"[red]error:[/] {plain(str(result.path))}: {plain(result.error)}", soft_wrap=True)
            outputs.add(len(report.files) - 1, result, report)
