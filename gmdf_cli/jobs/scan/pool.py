"""``gmdf scan --workers N``: N processes on this machine share the files, each with its own detector (the whole
engine: decoding, face detection, the model), the model's CPU threads shared out between them. The parent hands out
small chunks of files as workers become free and writes every output itself, so the rows are those of one process.

A worker that dies (killed, out of memory) costs only the files of its chunk not yet finished: they become error
rows (a rerun tries them again) and a fresh worker takes its place. Workers die with the parent, even when it is
killed with SIGKILL (Linux: ``PR_SET_PDEATHSIG``; elsewhere they notice within seconds)."""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import math
import multiprocessing as mp
import os
import pickle
import queue
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

from rich.console import Console

from ...data.media import MediaItem
from ...errors import EXIT_USAGE, GMDFError, UsageError, one_line
from ...report.results import FileResult
from ...terminal import plain
from .request import RunInfo, ScanRequest, open_detector, use_threads
from .scanner import Done, Indexed, cam_model, faces_for

CHUNK_MAX = 8
"""Files handed to a worker at a time, at most (fewer near the end, so that workers finish together)."""
POLL_SECONDS = 0.5


def worker_threads(request: ScanRequest) -> int:
    """CPU threads for each worker's model: ``--threads``, else the cores shared out between the workers."""
    return request.threads or max(1, (os.cpu_count() or 1) // max(1, request.workers))


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _worker(wid: int, request: ScanRequest, threads: int, inbox: Queue[Any], outbox: Connection) -> None:
    """One worker: load the detector, say ready (or why not), then scan the chunks it is given until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _die_with_parent()
    try:
        detector = open_detector(request, Console(stderr=True), warn=lambda text: outbox.send(("warn", text)))
    except GMDFError as exc:
        outbox.send(("failed", str(exc), exc.exit_code))
        return
    use_threads(threads)
    outbox.send(("ready", RunInfo.of(detector)))
    try:
        _serve(request, detector, inbox, outbox)
    except Exception as exc:  # a bug, not a bad file (the engine turns those into error rows): say it in one line
        outbox.send(("crash", one_line(exc)))


def _serve(request: ScanRequest, detector: Any, inbox: Queue[Any], outbox: Connection) -> None:
    cam = cam_model(request, detector)
    parent = mp.parent_process()
    while True:
        try:
            chunk = inbox.get(timeout=2.0)
        except queue.Empty:
            if parent is not None and not parent.is_alive():
                return
            continue
        if chunk is None:
            return
        items = [MediaItem(Path(path), kind) for _, path, kind in chunk]
        for (index, _, _), result in zip(chunk, detector.engine().run(items), strict=True):
            faces = faces_for(cam, result, request.report_faces, request.heatmaps)
            result.suspicious = []  # the crops travel inside ``faces`` when the report wants them
            outbox.send(("done", index, result, faces))


@dataclass
class _Worker:
    """A worker process, the queue it reads chunks from, and its own pipe back: a worker killed while it writes
    can only break its own pipe (a shared queue's lock would be lost with it, and every other worker would hang)."""

    process: BaseProcess
    inbox: Queue[Any]
    outbox: Connection
    chunk: dict[int, MediaItem] = field(default_factory=dict)
    crash: str | None = None


class PoolScanner:
    """The scanner of ``--workers N`` (N >= 2): see the module's docstring."""

    def __init__(self, request: ScanRequest, console: Console) -> None:
        self.console = console
        self.context = mp.get_context("spawn")  # fresh interpreters: no forked torch or OpenCV threads
        self.request = dataclasses.replace(request, paths=[], listed=[])  # each worker needs the settings only
        self.threads = worker_threads(request)
        self.workers: dict[int, _Worker] = {}
        self.restarts = 2 * request.workers
        self.warned: set[str] = set()
        try:
            for wid in range(request.workers):
                self._start(wid)
            ready = [self._wait_ready(wid) for wid in range(request.workers)]
        except BaseException:
            self.close()
            raise
        self.info: RunInfo = ready[0]

    def _start(self, wid: int) -> None:
        inbox: Queue[Any] = self.context.Queue()
        reader, writer = self.context.Pipe(duplex=False)
        args = (wid, self.request, self.threads, inbox, writer)
        process = self.context.Process(target=_worker, args=args, name=f"gmdf-worker-{wid}", daemon=True)
        process.start()
        writer.close()  # the worker holds the only write end: its death reads as the end of the pipe
        self.workers[wid] = _Worker(process, inbox, reader)

    def _receive(self, worker: _Worker) -> tuple[Any, ...] | None:
        """The worker's next message, or None when its pipe ended (it died, or was killed while writing)."""
        try:
            message: tuple[Any, ...] = worker.outbox.recv()
            return message
        except (EOFError, OSError, pickle.UnpicklingError):
            return None

    def _wait_ready(self, wid: int) -> RunInfo:
        worker = self.workers[wid]
        while True:
            message = self._receive(worker)
            if message is None:
                code = worker.process.exitcode
                raise GMDFError(f"a scan worker stopped while loading (exit code {code})")
            if message[0] == "warn":
                self._warn(message[1])
            elif message[0] == "failed":
                raise (UsageError if message[2] == EXIT_USAGE else GMDFError)(message[1])
            elif message[0] == "ready":
                info: RunInfo = message[1]
                return info

    def _warn(self, text: str) -> None:
        if text not in self.warned:
            self.warned.add(text)
            self.console.print(f"[yellow]warning:[/] {plain(text)}", soft_wrap=True)

    def _give(self, worker: _Worker, chunks: deque[list[Indexed]]) -> None:
        if chunks:
            chunk = chunks.popleft()
            worker.chunk = {i.index: i.item for i in chunk}
            worker.inbox.put([(i.index, str(i.item.path), i.item.kind) for i in chunk])

    def results(
        self, items: list[Indexed], on_file: Callable[[FileResult], None], on_frame: Callable[[], None]
    ) -> Iterator[Done]:
        size = max(1, min(CHUNK_MAX, math.ceil(len(items) / (4 * len(self.workers)))))
        chunks = deque(items[i : i + size] for i in range(0, len(items), size))
        for worker in self.workers.values():
            self._give(worker, chunks)
        while busy := {w.outbox: w for w in self.workers.values() if w.chunk}:
            for ready in wait(list(busy), timeout=POLL_SECONDS):
                worker = busy[ready]  # type: ignore[index]
                message = self._receive(worker)
                if message is None:
                    worker.process.join(timeout=5)
                    yield from self._replace(worker, chunks)
                elif message[0] == "warn":
                    self._warn(message[1])
                elif message[0] == "crash":
                    worker.crash = message[1]
                elif message[0] == "done":
                    _, index, result, faces = message
                    worker.chunk.pop(index, None)
                    yield Done(index, result, faces)
                    if not worker.chunk:
                        self._give(worker, chunks)

    def _replace(self, worker: _Worker, chunks: deque[list[Indexed]]) -> Iterator[Done]:
        """Error rows for the unfinished files of a worker that died, and a fresh worker in its place."""
        why = worker.crash or f"exit code {worker.process.exitcode}"
        reason = f"the worker process scanning it stopped ({why}); rerun to retry"
        for index, item in worker.chunk.items():
            yield Done(index, FileResult(item.path, kind=item.kind, error=reason, threshold=self.info.threshold))
        worker.chunk = {}
        if self.restarts <= 0:
            raise GMDFError("scan workers keep stopping; rerun with the same --out to finish the rest")
        self.restarts -= 1
        wid = next(w for w, x in self.workers.items() if x is worker)
        self._start(wid)
        self._wait_ready(wid)
        self._give(self.workers[wid], chunks)

    def close(self) -> None:
        """Idle workers are told to stop; busy ones (an interrupt) are killed: their files are not finished."""
        for worker in self.workers.values():
            if worker.chunk:
                worker.process.kill()
            with contextlib.suppress(OSError, ValueError):
                worker.inbox.put(None)
        for worker in self.workers.values():
            worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(timeout=5)
            worker.outbox.close()
        self.workers.clear()
