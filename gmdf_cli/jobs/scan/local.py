"""The scanner of a plain ``gmdf scan``: the engine in this process."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from rich.console import Console

from ...report.results import FileResult
from .request import RunInfo, ScanRequest, open_detector, use_threads
from .scanner import Done, Indexed, cam_model, faces_for


class LocalScanner:
    """The engine in this process: one model, files in input order, frames reported as they are read."""

    def __init__(self, request: ScanRequest, console: Console) -> None:
        self.request = request
        self.detector = open_detector(request, console)
        use_threads(request.threads)
        self.info = RunInfo.of(self.detector)
        self.cam = cam_model(request, self.detector)

    def results(
        self, items: list[Indexed], on_file: Callable[[FileResult], None], on_frame: Callable[[], None]
    ) -> Iterator[Done]:
        run = self.detector.engine().run([i.item for i in items], on_file=on_file, on_frame=on_frame)
        for indexed, result in zip(items, run, strict=False):
            faces = faces_for(self.cam, result, self.request.report_faces, self.request.heatmaps)
            yield Done(indexed.index, result, faces)

    def close(self) -> None:
        pass
