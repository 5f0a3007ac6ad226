"""The `gmdf scan` job: inputs (paths, folders, a file list), a scanner (this process, ``--workers N`` processes, or a
Ray cluster), a progress bar, and every requested output written as files finish. Whatever happens (a bad file,
Ctrl-C, a kill), results already computed are kept, and a rerun into the same ``--out`` finishes only the rest.

Outputs in ``--out``: ``results.jsonl`` (one row per file, the archive format, always), ``scan.json`` (the manifest:
the settings every row was made with), ``summary.json`` (counts and speed, at the end), ``results.parquet`` (with
``--parquet``), and for scans of up to ``REPORT_MAX_FILES`` files ``report.json``, ``report.html`` and per-file images.

One idea per module, each importing only those above it in this list (no cycle; ``tests/test_import_graph.py``):

- ``request``: ``ScanRequest`` (the settings), ``RunInfo`` (what runs), opening the detector.
- ``scanner``: what every scanner shares: ``Indexed`` in, ``Done`` out, the ``Scanner`` protocol, report images.
- ``local``, ``pool``, ``ray``: the scanners: this process, ``--workers N`` processes, ``--engine ray``.
- ``outputs``: the files of ``--out`` and the ``--csv`` table, written as files finish.
- ``journal``: resuming: the files an earlier run into the same ``--out`` finished, taken over.
- ``run``: ``run_scan``, the job: usage checks, the scanner asked for, the progress bar, interrupts.
"""

from __future__ import annotations

from .outputs import HTML_IMAGES_MAX, PARQUET_FILE, RESULTS_FILE, SETTINGS_FILE, SUMMARY_FILE
from .request import RunInfo, ScanRequest
from .run import REPORT_MAX_FILES, ScanOutcome, read_list, run_scan
from .scanner import Done, Indexed, Scanner

__all__ = [
    "HTML_IMAGES_MAX",
    "PARQUET_FILE",
    "REPORT_MAX_FILES",
    "RESULTS_FILE",
    "SETTINGS_FILE",
    "SUMMARY_FILE",
    "Done",
    "Indexed",
    "RunInfo",
    "ScanOutcome",
    "ScanRequest",
    "Scanner",
    "read_list",
    "run_scan",
]
