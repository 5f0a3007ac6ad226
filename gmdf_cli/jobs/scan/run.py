"""``run_scan``: the job itself. Find the inputs and check every usage before torch loads, pick the scanner, take
over what an earlier run into the same ``--out`` finished, and send every other file through the scanner into the
outputs, with a progress bar; an interrupt keeps what is finished."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from ...data.media import MediaItem, discover
from ...errors import EXIT_FAILURE, EXIT_OK, UsageError, interrupt_exit_code
from ...progress import progress_bar
from ...report.render import prepare_plots
from ...report.results import FileResult, ScanReport
from ...runtime.plan import on_cpu
from ...terminal import plain
from ...version import __version__
from ..common import environment, now
from .journal import finished_rows, take_over
from .local import LocalScanner
from .outputs import RESULTS_FILE, Outputs
from .request import ScanRequest
from .scanner import Done, Indexed, Scanner

REPORT_MAX_FILES = 5000
"""Above this many inputs a scan keeps no results in memory and writes no report.json, report.html or images:
``results.jsonl`` (and ``results.parquet``) hold the rows, ``summary.json`` the counts."""


@dataclass
class ScanOutcome:
    report: ScanReport
    exit_code: int
    files_per_second: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)


def open_scanner(request: ScanRequest, console: Console) -> Scanner:
    """The scanner the request asks for; the pool and Ray (and what they import) load only when asked for."""
    if request.engine == "ray":
        from .ray import RayScanner

        return RayScanner(request, console)
    if request.workers > 1:
        from .pool import PoolScanner

        return PoolScanner(request, console)
    return LocalScanner(request, console)


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
    items = [Indexed(index, item) for index, item in enumerate([*found.items, *missing])]
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
    if on_cpu(request.device):  # cpu, or auto on a machine with no GPU driver: a compiled scan needs no torch
        request.device = "cpu"
    else:
        from ...device import resolve_device  # torch loads here: every usage check above has passed

        request.device = str(resolve_device(request.device))
    scanner = open_scanner(request, console)
    try:
        return _scan(request, scanner, items, {i.path for i in missing}, keep, found.skipped, console)
    finally:
        scanner.close()


def _scan(
    request: ScanRequest,
    scanner: Scanner,
    items: list[Indexed],
    missing: set[Path],
    keep: bool,
    skipped: list[Path],
    console: Console,
) -> ScanOutcome:
    info = scanner.info
    finished, lines = finished_rows(request, info)
    report = ScanReport(
        version=__version__,
        started=now(),
        model=info.model,
        detector=info.detector,
        parameters=request.parameters(info.threshold, info.detector.name),
        environment=environment(),
        skipped=[str(p) for p in skipped],
    )
    outputs = Outputs(request, report, keep, console)
    exit_code = EXIT_OK
    started = time.monotonic()
    try:
        if keep and request.out is not None and any(i.item.kind == "video" for i in items):
            prepare_plots()  # the timelines' matplotlib loads now, not half-way through the first video's images
        todo = take_over(items, finished, lines, outputs, console)
        for gone in [t for t in todo if t.item.path in missing]:
            path = gone.item.path
            console.print(f"[red]error:[/] {plain(str(path))}: no such file or directory", soft_wrap=True)
            outputs.add(Done(gone.index, FileResult(path, error="no such file or directory", threshold=info.threshold)))
        _scan_files(scanner, [t for t in todo if t.item.path not in missing], outputs, console)
    except BaseException as exc:
        code = interrupt_exit_code(exc)
        if code is None:
            raise
        report.interrupted = True
        report.unfinished = [str(i.item.path) for i in items if i.index not in outputs.files] if keep else []
        exit_code = code
        console.print("[yellow]interrupted: writing the results of the files already finished[/]")
    finally:
        report.finished = now()
        seconds = time.monotonic() - started
        outputs.close(seconds)
    if exit_code == EXIT_OK and (outputs.failed or outputs.counts.get("error")):
        exit_code = EXIT_FAILURE
    return ScanOutcome(report, exit_code, outputs.files_per_second, dict(outputs.counts))


def _scan_files(scanner: Scanner, todo: list[Indexed], outputs: Outputs, console: Console) -> None:
    """Every file through the scanner, with a progress line of files done of all (with files per second) and, where
    the scanner reads files itself, one of the frames of the file being read."""
    progress = progress_bar(console, "", rate=True)
    with progress:
        files = progress.add_task("files", total=len(todo), rate="files/s")
        frames = progress.add_task("frames", total=None, visible=isinstance(scanner, LocalScanner))

        def on_file(result: FileResult) -> None:
            progress.reset(frames, total=result.frames_requested, description=plain(result.path.name[:40]))

        for done in scanner.results(todo, on_file, lambda: progress.advance(frames)):
            progress.advance(files)
            path, error = done.result.path, done.result.error
            if error:
                console.print(f"[red]error:[/] {plain(str(path))}: {plain(error)}", soft_wrap=True)
            outputs.add(done)
