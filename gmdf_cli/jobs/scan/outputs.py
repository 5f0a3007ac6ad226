"""What a scan writes, file by file as each finishes, and what it writes at the end: the files of ``--out`` and
the ``--csv`` table. A failed write loses nothing already computed."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TypeVar

from rich.console import Console

from ...fileio import append_line, write_text_atomic
from ...report.render import CsvWriter, FileImages, html_report, write_artifacts, write_json
from ...report.results import FileResult, ScanReport
from ...report.schema import dumps
from ...terminal import plain
from .request import ScanRequest
from .scanner import Done

T = TypeVar("T")
SETTINGS_FILE = "scan.json"
RESULTS_FILE = "results.jsonl"
SUMMARY_FILE = "summary.json"
PARQUET_FILE = "results.parquet"
HTML_IMAGES_MAX = 200
"""The report shows the face images of at most this many files (the most suspicious); the others are on disk."""


class Outputs:
    """What a scan writes, as each file finishes: a line in ``results.jsonl`` (what a rerun takes over), CSV rows,
    the file's images, and ``report.json`` rewritten (at most as often as keeps rewriting under a tenth of the run);
    ``report.html``, ``summary.json`` and ``results.parquet`` at the end. A failed write (a full disk, a folder that
    cannot be written) is said once per output and the scan goes on: nothing already computed is lost, and the exit
    code says that something failed. With ``keep`` False (archives) no result is kept in memory."""

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
        self.csv = self.attempt("the CSV", lambda: CsvWriter(csv_path)) if csv_path is not None else None

    def attempt(self, what: str, action: Callable[[], T]) -> T | None:
        """``action``'s value, or None when writing ``what`` failed now or before (said once, on the console)."""
        if what in self.failed:
            return None
        try:
            return action()
        except OSError as exc:
            self.failed.add(what)
            reason = plain(exc.strerror or str(exc))
            self.console.print(f"[red]error:[/] cannot write {what}: {reason}; the scan goes on", soft_wrap=True)
            return None

    def add(self, done: Done, scanned: bool = True) -> None:
        """A finished file into every output; ``scanned`` False for a file an earlier run finished (its journal
        line is already written)."""
        req, index, result = self.request, done.index, done.result
        self.counts[result.verdict] = self.counts.get(result.verdict, 0) + 1
        self.scanned += scanned
        if self.keep:
            self.files[index] = result
        if self.csv:
            self.attempt("the CSV", lambda: self.csv.add(result) if self.csv else None)
        if req.out is not None:
            out = req.out
            if scanned:  # first the journal: the result is safe before the slower images are made
                self.attempt("results.jsonl", lambda: append_line(out / RESULTS_FILE, dumps(result, indent=None)))
            if self.keep:
                images = self.attempt("the images", lambda: write_artifacts(out, index, result, done.faces))
                self._keep_images(index, images or FileImages())
        result.suspicious = []  # the crops are drawn: free them
        due = time.monotonic() - self.written_at >= 10 * self.write_cost
        if scanned and self.keep and req.out is not None and due:
            self.write_report()

    def _keep_images(self, index: int, images: FileImages) -> None:
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
        self.attempt("report.json", lambda: write_json(out / "report.json", self.report))
        self.written_at = time.monotonic()
        self.write_cost = self.written_at - started

    def close(self, seconds: float) -> None:
        self.files_per_second = self.scanned / seconds if seconds > 0 else 0.0
        if self.csv:
            self.attempt("the CSV", self.csv.close)
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
            self.attempt("report.html", lambda: write_text_atomic(out / "report.html", page))
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
        self.attempt(SUMMARY_FILE, lambda: write_text_atomic(out / SUMMARY_FILE, json.dumps(summary, indent=2)))
        if self.request.parquet:
            from ...report.columnar import write_parquet

            self.attempt(PARQUET_FILE, lambda: write_parquet(out / RESULTS_FILE, out / PARQUET_FILE))
