"""``gmdf scan --engine ray``: the engine as Ray Data batch inference, so that a cluster of machines scans one
archive. Stage one, as Ray tasks on CPUs: open, decode, detect, track and crop each file (``Engine.detect_file``).
Stage two, an actor pool (``--workers`` actors, or one per GPU of the cluster, each with ``num_gpus=1``): score the
crops in batches across files and aggregate (``Engine.score_files``: the batch loop and scoring rule of one process).
The driver (this process) receives the rows as they finish and writes every output, as a local scan does.

Every machine needs gmdf installed and the inputs at the same paths (a shared filesystem or object-store mount);
weights are resolved on each machine (a Hub name downloads once per machine). Start a cluster with ``ray start
--head`` on one machine and ``ray start --address HEAD:6379`` on the others, then run ``gmdf scan --engine ray
--address auto`` on the head; without ``--address`` a local Ray instance is started for the run and stopped after.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from ...data.media import MediaItem
from ...engine.pipeline import DetectedFile, Engine, EngineOptions
from ...errors import GMDFError, UsageError, one_line
from ...report.results import FileResult
from ...report.schema import dumps, from_jsonable
from .request import RunInfo, ScanRequest, open_detector
from .scanner import Done, Indexed

DECODE_MEMORY = 2**30
"""Memory a decoding task reserves (frames, RetinaFace, crops): it also keeps Ray from fusing the decoding tasks
into the scoring actors, which would leave decoding to the few actors instead of every free core."""
FILES_PER_BATCH = 4
"""Files a scoring actor takes at a time (their faces are batched together, ``--batch-size`` at a time)."""

_STAGE_ONE: dict[str, Engine] = {}
"""Per Ray worker process: the detection engine of each scan's settings, loaded once and kept between tasks."""


def _engine_options(request: ScanRequest, info: RunInfo) -> EngineOptions:
    band = (info.band[0], info.band[1]) if info.band else None
    return EngineOptions(
        request.sampling,
        request.batch_size,
        info.threshold,
        band,
        request.max_faces,
        detect_every=request.detect_every,
        keep_crops=0,
        crop_size=info.image_size,
    )


def detect_row(row: dict[str, Any], request: ScanRequest, info: RunInfo) -> dict[str, Any]:
    """Stage one (a Ray task): one file -> its unscored result (JSON) and its face crops (raw uint8 bytes)."""
    from ...data.faces import open_face_detector

    key = repr((request, info))
    if key not in _STAGE_ONE:
        faces = open_face_detector(request.detector, "cpu", lambda text: None)
        _STAGE_ONE[key] = Engine(None, faces, _engine_options(request, info))
    item = MediaItem(Path(row["path"]), row["kind"])
    done = _STAGE_ONE[key].detect_file(item)
    size = info.image_size
    crops = np.stack(done.crops) if done.crops else np.zeros((0, size, size, 3), np.uint8)
    return {
        "index": row["index"],
        "result": dumps(done.result, indent=None),
        "requested": done.result.frames_requested,
        "crops": crops.tobytes(),
    }


class ScoreActor:
    """Stage two (a Ray actor): the GM-DF model, loaded once, scoring batches of detected files. The settings come
    as class attributes (``scoring_actor``), which travel with the class rather than as object-store arguments."""

    settings: tuple[ScanRequest, RunInfo]

    def __init__(self) -> None:
        import torch

        request, info = self.settings

        from ...weights import DEFAULT_WEIGHTS, load_weights

        if request.threads:
            torch.set_num_threads(request.threads)
        model, _, _ = load_weights(request.weights or DEFAULT_WEIGHTS, request.device, request.precision)
        self.engine = Engine(model, None, _engine_options(request, info))
        self.size = info.image_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        files: list[DetectedFile] = []
        for text, requested, raw in zip(batch["result"], batch["requested"], batch["crops"], strict=True):
            result = from_jsonable(FileResult, json.loads(str(text)))
            result.frames_requested = int(requested)
            crops = np.frombuffer(bytes(raw), np.uint8).reshape(-1, self.size, self.size, 3)
            files.append(DetectedFile(result, list(crops)))
        rows = [dumps(r, indent=None) for r in self.engine.score_files(files)]
        return {"index": np.asarray(batch["index"]), "row": np.asarray(rows, dtype=object)}


def scoring_actor(request: ScanRequest, info: RunInfo) -> type[ScoreActor]:
    return type("ScoreActor", (ScoreActor,), {"settings": (request, info)})


def _quiet(context: Any) -> None:
    """Our progress bar and summary say what Ray Data's bars, plans and hints would (to stderr, between ours)."""
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    context.issue_detectors_config.detectors = []
    for name in [n for n in logging.root.manager.loggerDict if n.startswith("ray.data")] + ["ray.data"]:
        logging.getLogger(name).setLevel(logging.ERROR)


class RayScanner:
    """The scanner of ``--engine ray``: see the module's docstring."""

    def __init__(self, request: ScanRequest, console: Console) -> None:
        try:
            import ray
        except ImportError:
            raise UsageError("--engine ray needs Ray: pip install 'gmdf-cli[ray]'") from None
        if request.heatmaps:
            raise UsageError("--heatmaps is not available with --engine ray: scan the files it flags with --heatmaps")
        self.ray = ray
        self.request = dataclasses.replace(request, paths=[], listed=[])
        # the driver checks the weights and the face detector before any cluster work (one line if they fail)
        probe = open_detector(dataclasses.replace(self.request, device="cpu"), console)
        self.info = RunInfo.of(probe)
        self.info.detector.device = "cpu (Ray tasks)"
        del probe
        self.started_here = not ray.is_initialized()
        if self.started_here:
            try:
                ray.init(
                    address=request.address,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level=logging.ERROR,
                )
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = request.address or "a local instance"
                raise GMDFError(f"cannot start or reach Ray ({where}): {one_line(exc)}") from None
        _quiet(ray.data.DataContext.get_current())

    def _actors(self) -> tuple[int, float]:
        """How many scoring actors, and GPUs for each: one per GPU of the cluster (or ``--workers``) where the
        cluster has GPUs and the device allows them, else ``--workers`` on CPUs."""
        gpus = self.ray.cluster_resources().get("GPU", 0) if self.request.device != "cpu" else 0
        if gpus:
            return (self.request.workers if self.request.workers > 1 else int(gpus)), 1.0
        return self.request.workers, 0.0

    def results(
        self, items: list[Indexed], on_file: Callable[[FileResult], None], on_frame: Callable[[], None]
    ) -> Iterator[Done]:
        if not items:
            return
        ray = self.ray
        rows = [{"index": i.index, "path": str(i.item.path), "kind": i.item.kind} for i in items]
        actors, gpus = self._actors()
        dataset = (
            ray.data.from_items(rows)
            .map(detect_row, fn_kwargs={"request": self.request, "info": self.info}, num_cpus=1, memory=DECODE_MEMORY)
            .map_batches(
                scoring_actor(self.request, self.info),
                batch_size=FILES_PER_BATCH,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=actors),
                num_gpus=gpus,
                num_cpus=1,
            )
        )
        for row in dataset.iter_rows():
            result = from_jsonable(FileResult, json.loads(str(row["row"])))
            yield Done(int(row["index"]), result)

    def close(self) -> None:
        if self.started_here and self.ray.is_initialized():
            self.ray.shutdown()
