"""The `gmdf scan` job: inputs (paths, folders, a file list), a scanner (this process, ``--workers N`` processes, or a
Ray cluster), a progress bar, and every requested output written as files finish. Whatever happens (a bad file,
Ctrl-C, a kill), results already computed are kept, and a rerun into the same ``--out`` finishes only the rest.

Outputs in ``--out``: ``results.jsonl`` (one row per file, the archive format, always), ``scan.json`` (the manifest:
the settings every row was made with), ``summary.json`` (counts and speed, at the end), ``results.parquet`` (with
``--parquet``), and for scans of up to ``REPORT_MAX_FILES`` files ``report.json``, ``report.html`` and per-file images.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, TypeVar

from rich.console import Console

from .. import __version__
from ..data.detectors import DetectorOptions
from ..data.media import MediaItem, Sampling, discover
from ..errors import EXIT_FAILURE, EXIT_OK, UsageError, interrupt_exit_code
from ..fileio import append_line, sha256_file, write_text_atomic
from ..progress import progress_bar
from ..report.render import (
    CsvWriter,
    FaceImages,
    FileImages,
    html_report,
    plain,
    prepare_plots,
    write_artifacts,
    write_json,
)
from ..report.results import DetectorInfo, FileResult, ModelInfo, ScanReport
from ..report.schema import dumps, from_jsonable
from ..weights import DEFAULT_WEIGHTS
from .common import environment, now, record_settings, warner

if TYPE_CHECKING:  # the model and its torch load when a scan starts, after every usage check
    from ..api import Detector

T = TypeVar("T")
SETTINGS_FILE = "scan.json"
RESULTS_FILE = "results.jsonl"
SUMMARY_FILE = "summary.json"
PARQUET_FILE = "results.parquet"
REPORT_MAX_FILES = 5000
"""Above this many inputs a scan keeps no results in memory and writes no report.json, report.html or images:
``results.jsonl`` (and ``results.parquet``) hold the rows, ``summary.json`` the counts."""
HTML_IMAGES_MAX = 200
"""The report shows the face images of at most this many files (the most suspicious); the others are on disk."""


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
    files_from: str | None = None
    """Where ``listed`` came from (a file name, ``-`` for stdin), for the record."""
    listed: list[str] = field(default_factory=list, repr=False)
    """Paths read from ``--files-from``, one per line; missing ones become error rows, never stop the scan."""
    workers: int = 1
    """Processes sharing the work on this machine (each with its own model), or scoring actors on Ray."""
    threads: int | None = None
    """CPU threads for the model in each process (None: the cores shared out between the workers)."""
    engine: str = "local"
    address: str | None = None
    """With ``engine="ray"``: the cluster (``auto``, ``ray://host:10001``); None starts a local Ray instance."""
    parquet: bool = False
    as_json: bool = False
    """The whole report is printed at the end (so kept in memory: up to ``REPORT_MAX_FILES`` files)."""

    def settings(self, info: RunInfo) -> dict[str, Any]:
        """Everything that changes a file's result: a rerun into the same ``out`` takes finished files over only
        when these are the same, and is refused otherwise. How the work is shared (workers, engine) is not here:
        it does not change a row."""
        det = info.detector
        return {
            "gmdf": __version__,
            "model_sha256": info.model.sha256,
            "detector": [det.name, det.sha256, det.max_side],
            "sampling": asdict(self.sampling),
            "max_faces": self.max_faces,
            "threshold": info.threshold,
            "band": info.band,
            "precision": self.precision,
        }

    def parameters(self, threshold: float, detector_ran: str) -> dict[str, Any]:
        """The settings as they took effect: the threshold used, and the face detector that really ran (with the
        one asked for beside it when a fallback replaced it)."""
        params = asdict(self)
        del params["listed"], params["as_json"]
        params.update(sampling=self.sampling.describe(), threshold=threshold)
        asked = params.pop("detector")
        params.update(detector=detector_ran, detector_weights=asked["weights"], det_size=asked["det_size"])
        if detector_ran != asked["name"]:
            params["detector_requested"] = asked["name"]
        return {k: str(v) if isinstance(v, Path) else v for k, v in params.items()}

    def keep_crops(self) -> int:
        return self.report_faces if self.out is not None else 0


@dataclass
class RunInfo:
    """What every scanner tells before the first file: the model and face detector that run, and the decision rule."""

    model: ModelInfo
    detector: DetectorInfo
    threshold: float
    band: list[float] | None
    image_size: int
    """The model's input side (face crops are cut to it)."""

    @classmethod
    def of(cls, detector: Detector) -> RunInfo:
        band = list(detector.options.band) if detector.options.band else None
        size = detector.model.config.vision.image_size
        return cls(detector.model_info(), detector.detector_info(), detector.threshold, band, size)


Indexed = tuple[int, MediaItem]
"""An input and its position in the input list (which names its image folder and orders the report)."""
Done = tuple[int, FileResult, list[FaceImages]]
"""A finished file: its position, its result, and its report images (crops, heatmaps) when asked."""


class Scanner(Protocol):
    """Runs the engine over inputs: in this process, in worker processes, or on Ray."""

    info: RunInfo

    def results(
        self, items: list[Indexed], on_file: Callable[[FileResult], None], on_frame: Callable[[], None]
    ) -> Iterator[Done]:
        """Each input's result exactly once, in any order, as it finishes; ``on_file``/``on_frame`` report the
        frames of the file being read where the scanner can see them."""
        ...

    def close(self) -> None: ...


@dataclass
class ScanOutcome:
    report: ScanReport
    exit_code: int
    files_per_second: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)


def faces_for(model: Any, result: FileResult, faces: int, heatmaps: bool) -> list[FaceImages]:
    """The file's most suspicious faces for the report, with their Grad-CAM overlays and notes when asked."""
    chosen = result.suspicious[:faces]
    if not heatmaps or not chosen:
        return [FaceImages(s) for s in chosen]
    from ..analysis.heatmaps import cam_note, gradcam_maps, overlay
    from ..data.faces import face_box_in_crop

    maps = gradcam_maps(model, [s.crop for s in chosen])  # Grad-CAM wants fp32 (see cam_model)
    return [
        FaceImages(s, overlay(s.display, m), cam_note(m, face_box_in_crop(s.box, m.shape[1])))
        for s, m in zip(chosen, maps, strict=True)
    ]


def cam_model(request: ScanRequest, detector: Detector) -> Any:
    """The model Grad-CAM explains: the detector's, or a float copy when it runs in half precision."""
    if request.heatmaps and request.precision != "fp32":
        return copy.deepcopy(detector.model).float()
    return detector.model


class LocalScanner:
    """The engine in this process: one model, files in input order, frames reported as they are read."""

    def __init__(self, request: ScanRequest, console: Console) -> None:
        self.request = request
        if request.threads:
            import torch

            torch.set_num_threads(request.threads)
        self.detector = open_detector(request, console)
        self.info = RunInfo.of(self.detector)
        self.cam = cam_model(request, self.detector)

    def results(
        self, items: list[Indexed], on_file: Callable[[FileResult], None], on_frame: Callable[[], None]
    ) -> Iterator[Done]:
        run = self.detector.engine().run([item for _, item in items], on_file=on_file, on_frame=on_frame)
        for (index, _), result in zip(items, run, strict=False):
            yield index, result, faces_for(self.cam, result, self.request.report_faces, self.request.heatmaps)

    def close(self) -> None:
        pass


def open_detector(request: ScanRequest, console: Console, warn: Callable[[str], None] | None = None) -> Detector:
    from ..api import Detector

    return Detector.from_pretrained(
        request.weights or DEFAULT_WEIGHTS,
        device=request.device,
        precision=request.precision,
        threshold=request.threshold,
        sampling=request.sampling,
        batch_size=request.batch_size,
        max_faces=request.max_faces,
        keep_crops=request.keep_crops(),
        face_detector=request.detector,
        warn=warn or warner(console),
    )


def open_scanner(request: ScanRequest, console: Console) -> Scanner:
    if request.engine == "ray":
        from .ray_engine import RayScanner

        return RayScanner(request, console)
    if request.workers > 1:
        from .pool import PoolScanner

        return PoolScanner(request, console)
    return LocalScanner(request, console)


class _Outputs:
    """What a scan writes, as each file finishes: a line in ``results.jsonl`` (what a rerun takes over), CSV rows,
    the file's images, and ``report.json`` rewritten (at most as often as keeps rewriting under a tenth of the run);
    ``report.html``, ``summary.json`` and ``results.parquet`` at the end. A failed write (a full disk, a folder that
    cannot be written) is said once per output and the scan goes on: nothing already computed is lost, and the exit
    code says that something failed. With ``report`` False (archives) no result is kept in memory."""

    def __init__(self, request: ScanRequest, report: ScanReport, keep: bool, console: Console) -> None:
        self.request, self.report, self.keep, self.console = request, report, keep, console
        self.failed: set[str] = set()
        self.files: dict[int, FileResult] = {}
        self.images: dict[int, FileImages] = {}
        self.counts: dict[str, int] = {}
        self.scanned = 0
        self.files_per_second = 0.0
        self.written_at = self.write_cost = 0.0
        csv_path = request.csv
        self.csv = self._try("the CSV", lambda: CsvWriter(csv_path)) if csv_path is not None else None

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

    def add(self, index: int, result: FileResult, faces: list[FaceImages], scanned: bool = True) -> None:
        req = self.request
        self.counts[result.verdict] = self.counts.get(result.verdict, 0) + 1
        self.scanned += scanned
        if self.keep:
            self.files[index] = result
        if self.csv:
            self._try("the CSV", lambda: self.csv.add(result) if self.csv else None)
        if req.out is not None:
            out = req.out
            if scanned:  # first the journal: the result is safe before the slower images are made
                self._try("results.jsonl", lambda: append_line(out / RESULTS_FILE, dumps(result, indent=None)))
            if self.keep:
                images = self._try("the images", lambda: write_artifacts(out, index, result, faces))
                self._keep_images(index, result, images or FileImages())
        result.suspicious = []  # the crops are drawn: free them
        due = time.monotonic() - self.written_at >= 10 * self.write_cost
        if scanned and self.keep and req.out is not None and due:
            self.write_report()

    def _keep_images(self, index: int, result: FileResult, images: FileImages) -> None:
        """Keep the report's images of the ``HTML_IMAGES_MAX`` most suspicious files only (memory stays bounded)."""
        self.images[index] = images
        if len(self.images) > HTML_IMAGES_MAX:

            def score(i: int) -> float:
                value = self.files[i].score
                return -1.0 if value is None else value

            del self.images[min(self.images, key=score)]

    def write_report(self) -> None:
        """Put the kept results into the report in input order, and rewrite report.json with them."""
        if not self.keep:
            return
        self.report.files = [self.files[i] for i in sorted(self.files)]
        out = self.request.out
        if out is None:
            return
        started = time.monotonic()
        self._try("report.json", lambda: write_json(out / "report.json", self.report))
        self.written_at = time.monotonic()
        self.write_cost = self.written_at - started

    def close(self, seconds: float) -> None:
        self.files_per_second = self.scanned / seconds if seconds > 0 else 0.0
        if self.csv:
            self._try("the CSV", self.csv.close)
        self.write_report()
        out = self.request.out
        if out is None:
            return
        if self.keep:
            order = sorted(self.files)
            images = {pos: self.images[i] for pos, i in enumerate(order) if i in self.images}
            note = None
            if len(order) > HTML_IMAGES_MAX:
                note = (
                    f"Face images and timelines are shown for the {HTML_IMAGES_MAX} most suspicious files; every "
                    "file's are in its folder beside this report."
                )
            page = html_report(self.report, images, note)
            self._try("report.html", lambda: write_text_atomic(out / "report.html", page))
        summary = {
            "finished": self.report.finished,
            "interrupted": self.report.interrupted,
            "files": sum(self.counts.values()),
            "verdicts": self.counts,
            "scanned_this_run": self.scanned,
            "seconds": round(seconds, 3),
            "files_per_second": round(self.files_per_second, 4) if seconds > 0 else None,
            "engine": self.request.engine,
            "workers": self.request.workers,
        }
        self._try(SUMMARY_FILE, lambda: write_text_atomic(out / SUMMARY_FILE, json.dumps(summary, indent=2)))
        if self.request.parquet:
            from ..report.columnar import write_parquet

            self._try(PARQUET_FILE, lambda: write_parquet(out / RESULTS_FILE, out / PARQUET_FILE))


def read_list(source: str) -> list[str]:
    """``--files-from``: one path per line (``-``: standard input); blank lines are left out, nothing is stripped
    but the line end (names may have spaces)."""
    import sys

    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_bytes().decode("utf-8", "surrogateescape")
    except OSError as exc:
        raise UsageError(f"cannot read --files-from {source}: {exc.strerror or exc}") from None
    return [line for line in text.splitlines() if line.strip()]


def _check_outputs(request: ScanRequest, inputs: list[MediaItem]) -> None:
    """Outputs never overwrite an input."""
    if request.csv is not None and request.csv.exists():
        target = request.csv.resolve()
        if any(i.path.resolve() == target for i in inputs):
            raise UsageError(f"--csv {request.csv} is one of the inputs: it would be overwritten")


@dataclass
class _Row:
    """A file an earlier run finished: where its line lies in the journal, and what decides whether it is taken
    over (only this is kept in memory, so an archive's rerun stays small; the row is read when it is needed)."""

    offset: int
    length: int
    verdict: str
    size: int | None
    mtime_ns: int | None
    sha256: str | None


def _finished(request: ScanRequest, info: RunInfo) -> tuple[dict[str, _Row], int]:
    """The files an earlier scan into the same ``out`` finished, when it ran with the same settings (refused
    otherwise), and the number of lines its journal holds; nothing for a new ``out``. A line cut short by a kill is
    left out (and counted: the journal is then rewritten without it)."""
    if request.out is None:
        return {}, 0
    request.out.mkdir(parents=True, exist_ok=True)
    refusal = f"{request.out} holds a scan made with other settings; use another --out, or delete it to start again"
    record_settings(request.out / SETTINGS_FILE, request.settings(info), refusal)
    done: dict[str, _Row] = {}
    journal = request.out / RESULTS_FILE
    if not journal.is_file():
        return done, 0
    offset = lines = 0
    with open(journal, "rb") as fh:
        for line in fh:
            lines += 1
            try:
                row = json.loads(line) if line.endswith(b"\n") else None
                if isinstance(row, dict) and isinstance(row.get("path"), str):
                    get = row.get
                    done[row["path"]] = _Row(
                        offset, len(line), str(get("verdict")), get("size"), get("mtime_ns"), get("sha256")
                    )
            except ValueError:
                pass
            offset += len(line)
    return done, lines


def _read_row(journal: BinaryIO, row: _Row) -> FileResult | None:
    try:
        journal.seek(row.offset)
        return from_jsonable(FileResult, json.loads(journal.read(row.length)))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _compact(journal: Path, keep: dict[str, _Row]) -> None:
    """Rewrite the journal with one row per finished file (no line cut short by a kill, no row of a file about to
    be scanned again), in one atomic step: after the rerun every file is in it exactly once."""
    from ..fileio import atomic_path

    with atomic_path(journal) as tmp, open(journal, "rb") as old, open(tmp, "wb") as new:
        for row in sorted(keep.values(), key=lambda r: r.offset):
            old.seek(row.offset)
            new.write(old.read(row.length))


def _take_over(
    items: list[Indexed], finished: dict[str, _Row], lines: int, outputs: _Outputs, console: Console
) -> list[Indexed]:
    """Put the files an earlier run finished (same path, same content, no error) into the outputs; return the
    others. Files that failed are tried again: a failure may have been the machine's (a worker killed). The journal
    (``lines`` long) is rewritten when a line of it is to go."""
    out = outputs.request.out
    todo: list[Indexed] = []
    taken = 0
    with contextlib.ExitStack() as stack:
        journal = stack.enter_context(open(out / RESULTS_FILE, "rb")) if out is not None and finished else None
        for index, item in items:
            row = finished.get(str(item.path))
            done = None
            if journal is not None and row is not None and row.verdict != "error" and _unchanged(item.path, row):
                done = _read_row(journal, row)
            if done is not None:
                outputs.add(index, done, [], scanned=False)
                taken += 1
            else:
                finished.pop(str(item.path), None)
                todo.append((index, item))
    if out is not None and len(finished) < lines:
        outputs._try("results.jsonl", lambda: _compact(out / RESULTS_FILE, finished))
    if taken:
        console.print(f"resuming: {taken} of {len(items)} files already done", soft_wrap=True)
    return todo


def _unchanged(path: Path, done: _Row) -> bool:
    """The file is the one an earlier run scanned: same size and modification time (no need to read it again: an
    archive's rerun would otherwise read every byte), else the same sha256."""
    try:
        stat = path.stat()
        if done.size == stat.st_size and done.mtime_ns == stat.st_mtime_ns:
            return True
        return done.sha256 == sha256_file(path)
    except OSError:
        return False


def run_scan(request: ScanRequest, console: Console) -> ScanOutcome:
    found = discover([*request.paths, *request.listed], exclude=[request.out] if request.out is not None else [])
    if not found.items and not found.missing:
        where = [*request.paths, *([f"--files-from {request.files_from}"] if request.files_from else [])]
        raise UsageError("no images or videos found in " + ", ".join(where))
    _check_outputs(request, found.items)
    if request.parquet:
        import importlib.util

        if importlib.util.find_spec("pyarrow") is None:
            raise UsageError("--parquet needs pyarrow: pip install 'gmdf-cli[ray]'")
    for path in found.skipped:
        console.print(f"[dim]skipped {plain(str(path))}: not an image or video[/]", soft_wrap=True)
    missing = [MediaItem(p, "unknown") for p in found.missing]
    items: list[Indexed] = list(enumerate([*found.items, *missing]))
    keep = len(items) <= REPORT_MAX_FILES
    if not keep and (request.out is None or request.as_json):
        raise UsageError(
            f"{len(items)} files: scans of more than {REPORT_MAX_FILES} files write their rows to --out DIR "
            f"({RESULTS_FILE}); --json and the table are for smaller ones"
        )
    if not keep:
        console.print(
            f"{len(items)} files: rows go to {RESULTS_FILE} only (report.json, report.html and images are made for "
            f"scans of up to {REPORT_MAX_FILES} files)",
            soft_wrap=True,
        )
    from ..device import resolve_device  # torch loads here: every usage check above has passed

    request.device = str(resolve_device(request.device))
    scanner = open_scanner(request, console)
    try:
        return _run(request, scanner, items, {i.path for i in missing}, keep, found.skipped, console)
    finally:
        scanner.close()


def _run(
    request: ScanRequest,
    scanner: Scanner,
    items: list[Indexed],
    missing: set[Path],
    keep: bool,
    skipped: list[Path],
    console: Console,
) -> ScanOutcome:
    info = scanner.info
    finished, lines = _finished(request, info)
    report = ScanReport(
        version=__version__,
        started=now(),
        model=info.model,
        detector=info.detector,
        parameters=request.parameters(info.threshold, info.detector.name),
        environment=environment(),
        skipped=[str(p) for p in skipped],
    )
    outputs = _Outputs(request, report, keep, console)
    exit_code = EXIT_OK
    started = time.monotonic()
    try:
        if keep and request.out is not None:
            prepare_plots()  # matplotlib's C parts load now, not half-way through the first file's images
        todo = _take_over(items, finished, lines, outputs, console)
        for index, item in [t for t in todo if t[1].path in missing]:
            gone = FileResult(item.path, error="no such file or directory", threshold=info.threshold)
            console.print(f"[red]error:[/] {plain(str(item.path))}: no such file or directory", soft_wrap=True)
            outputs.add(index, gone, [])
        _scan_files(scanner, [t for t in todo if t[1].path not in missing], outputs, console)
    except BaseException as exc:
        code = interrupt_exit_code(exc)
        if code is None:
            raise
        report.interrupted = True
        report.unfinished = [str(item.path) for index, item in items if index not in outputs.files] if keep else []
        exit_code = code
        console.print("[yellow]interrupted: writing the results of the files already finished[/]")
    finally:
        report.finished = now()
        seconds = time.monotonic() - started
        outputs.close(seconds)
    if exit_code == EXIT_OK and (outputs.failed or outputs.counts.get("error")):
        exit_code = EXIT_FAILURE
    return ScanOutcome(report, exit_code, outputs.files_per_second, dict(outputs.counts))


def _scan_files(scanner: Scanner, todo: list[Indexed], outputs: _Outputs, console: Console) -> None:
    """Every file through the scanner, with a progress line of files done of all (with files per second) and, where
    the scanner reads files itself, one of the frames of the file being read."""
    progress = progress_bar(console, "", rate=True)
    with progress:
        files = progress.add_task("files", total=len(todo), rate="files/s")
        frames = progress.add_task("frames", total=None, visible=isinstance(scanner, LocalScanner))

        def on_file(result: FileResult) -> None:
            progress.reset(frames, total=result.frames_requested, description=plain(result.path.name[:40]))

        for index, result, faces in scanner.results(todo, on_file, lambda: progress.advance(frames)):
            progress.advance(files)
            if result.error:
                console.print(f"[red]error:[/] {plain(str(result.path))}: {plain(result.error)}", soft_wrap=True)
            outputs.add(index, result, faces)


def worker_threads(request: ScanRequest) -> int:
    """CPU threads for each worker's model: ``--threads``, else the cores shared out between the workers."""
    return request.threads or max(1, (os.cpu_count() or 1) // max(1, request.workers))
