"""Resuming: ``results.jsonl`` is the journal of the files a scan finished, one line each, appended as each
finishes. A rerun into the same ``--out`` (with the same settings) takes those files over and scans only the rest."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from rich.console import Console

from ...fileio import sha256_file
from ...report.results import FileResult
from ...report.schema import from_jsonable
from ..common import record_settings
from .outputs import RESULTS_FILE, SETTINGS_FILE, Outputs
from .request import RunInfo, ScanRequest
from .scanner import Done, Indexed


@dataclass
class JournalRow:
    """A file an earlier run finished: where its line lies in the journal, and what decides whether it is taken
    over (only this is kept in memory, so an archive's rerun stays small; the row is read when it is needed)."""

    offset: int
    length: int
    verdict: str
    size: int | None
    mtime_ns: int | None
    sha256: str | None


def finished_rows(request: ScanRequest, info: RunInfo) -> tuple[dict[str, JournalRow], int]:
    """The files an earlier scan into the same ``out`` finished, when it ran with the same settings (refused
    otherwise), and the number of lines its journal holds; nothing for a new ``out``. A line cut short by a kill is
    left out (and counted: the journal is then rewritten without it)."""
    if request.out is None:
        return {}, 0
    request.out.mkdir(parents=True, exist_ok=True)
    refusal = f"{request.out} holds a scan made with other settings; use another --out, or delete it to start again"
    record_settings(request.out / SETTINGS_FILE, request.settings(info), refusal)
    done: dict[str, JournalRow] = {}
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
                    done[row["path"]] = JournalRow(
                        offset, len(line), str(get("verdict")), get("size"), get("mtime_ns"), get("sha256")
                    )
            except ValueError:
                pass
            offset += len(line)
    return done, lines


def _read_row(journal: BinaryIO, row: JournalRow) -> FileResult | None:
    try:
        journal.seek(row.offset)
        return from_jsonable(FileResult, json.loads(journal.read(row.length)))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _compact(journal: Path, keep: dict[str, JournalRow]) -> None:
    """Rewrite the journal with one row per finished file (no line cut short by a kill, no row of a file about to
    be scanned again), in one atomic step: after the rerun every file is in it exactly once."""
    from ...fileio import atomic_path

    with atomic_path(journal) as tmp, open(journal, "rb") as old, open(tmp, "wb") as new:
        for row in sorted(keep.values(), key=lambda r: r.offset):
            old.seek(row.offset)
            new.write(old.read(row.length))


def take_over(
    items: list[Indexed], finished: dict[str, JournalRow], lines: int, outputs: Outputs, console: Console
) -> list[Indexed]:
    """Put the files an earlier run finished (same path, same content, no error) into the outputs; return the
    others. Files that failed are tried again: a failure may have been the machine's (a worker killed). The journal
    (``lines`` long) is rewritten when a line of it is to go."""
    out = outputs.request.out
    todo: list[Indexed] = []
    taken = 0
    with contextlib.ExitStack() as stack:
        journal = stack.enter_context(open(out / RESULTS_FILE, "rb")) if out is not None and finished else None
        for indexed in items:
            path = indexed.item.path
            row = finished.get(str(path))
            result = None
            if journal is not None and row is not None and row.verdict != "error" and _unchanged(path, row):
                result = _read_row(journal, row)
            if result is not None:
                outputs.add(Done(indexed.index, result), scanned=False)
                taken += 1
            else:
                finished.pop(str(path), None)
                todo.append(indexed)
    if out is not None and len(finished) < lines:
        outputs.attempt("results.jsonl", lambda: _compact(out / RESULTS_FILE, finished))
    if taken:
        console.print(f"resuming: {taken} of {len(items)} files already done", soft_wrap=True)
    return todo


def _unchanged(path: Path, done: JournalRow) -> bool:
    """The file is the one an earlier run scanned: same size and modification time (no need to read it again: an
    archive's rerun would otherwise read every byte), else the same sha256."""
    try:
        stat = path.stat()
        if done.size == stat.st_size and done.mtime_ns == stat.st_mtime_ns:
            return True
        return done.sha256 == sha256_file(path)
    except OSError:
        return False
