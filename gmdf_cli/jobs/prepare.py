"""`gmdf prepare`: a dataset in its official layout -> face crops + an index (one row per crop).

The cache layout is in ``gmdf_cli.data.cache``. Resumable: a video with a record is not done again. Frames and faces
come from the engine's detection stage, the same as `gmdf scan`'s; the best face of each frame is saved instead of
scored.
"""

from __future__ import annotations

import json
import multiprocessing
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rich.console import Console

from ..data.cache import rebuild_index, record_path, safe_name
from ..data.datasets import LayoutOptions, Source, list_sources
from ..data.faces import DetectorOptions, crop_face, open_face_detector
from ..data.media import Frame, MediaError, MediaItem, Sampling, open_media, read_frames, read_image
from ..engine import Engine, EngineOptions
from ..errors import GMDFError, UsageError
from ..fileio import write_text_atomic
from ..progress import progress_bar
from ..terminal import plain
from .common import face_detector, record_settings

CROP_SIZE = 224


@dataclass
class PrepareRequest:
    layout: str
    root: Path
    out: Path
    domain: str | None = None
    frames: int = 32
    workers: int = 1
    detector: DetectorOptions = field(default_factory=DetectorOptions)
    compression: str = "c23"
    group_by: str | None = None
    json_file: Path | None = None
    pairs: Path | None = None
    """Folder layout: a CSV (fake,real) naming the real each fake was made from (the pair shares a split)."""
    seed: int = 0
    device: str = "cpu"
    """The face detector's device (resolved by the caller)."""

    @property
    def domain_name(self) -> str:
        return self.domain or self.layout


def _evenly(items: list[Any], count: int) -> list[Any]:
    if len(items) <= count:
        return items
    return [items[int(round(i))] for i in np.linspace(0, len(items) - 1, count)]


def source_frames(source: Source, frames: int) -> Iterator[Frame]:
    """The frames to use from one source: a video's sampled frames, an image, or a folder of frame images."""
    if source.kind == "video":
        yield from read_frames(open_media(MediaItem(source.path, "video"), Sampling(frames=frames)))
    elif source.kind == "image":
        yield Frame(0, 0.0, read_image(source.path))
    else:
        if source.frames:
            paths = [source.path / f for f in source.frames]
        else:
            paths = sorted(p for p in source.path.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
        for i, path in _evenly(list(enumerate(paths)), frames):
            yield Frame(i, 0.0, read_image(path))


class CacheWriteError(GMDFError):
    """A crop could not be written (a full disk, a folder that cannot be written): the run stops, and the source is
    not recorded, so that a rerun prepares it once the cause is fixed (never recorded as a bad input)."""


def _write_crop(target: Path, crop: np.ndarray) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        written = cv2.imwrite(str(target), crop)
    except (OSError, cv2.error) as exc:
        raise CacheWriteError(f"cannot write crops to {target.parent}: {exc}") from None
    if not written:
        raise CacheWriteError(f"cannot write crops to {target.parent} (disk full or not writable?)")


def prepare_source(source: Source, engine: Engine, out: Path, frames: int) -> dict[str, Any]:
    """Detect, crop and save the best face of each frame of one source; the record says what was written or why
    nothing was."""
    rows: list[dict[str, Any]] = []
    no_face = 0
    record: dict[str, Any] = {"source": {**asdict(source), "path": str(source.path)}, "rows": rows}
    folder = out / "crops" / source.domain / safe_name(source.video_id)
    try:
        for found in engine.detect_frames(source_frames(source, frames), still=source.kind == "image"):
            if not found.faces:
                no_face += 1
                continue
            crop = crop_face(found.frame.image, found.faces[0].box, CROP_SIZE)
            target = folder / f"{found.frame.index:06d}.png"
            _write_crop(target, crop)
            rows.append({"frame": found.frame.index, "path": target.relative_to(out).as_posix()})
    except (MediaError, OSError, cv2.error, ValueError) as exc:
        record.update(status="skipped", reason=f"corrupt or unreadable: {str(exc).splitlines()[0]}")
        return record
    record["no_face_frames"] = no_face
    if not rows:
        record.update(status="skipped", reason="no face found" if no_face else "no frames could be decoded")
    else:
        record.update(status="ok", reason=None)
    return record


_worker: dict[str, Any] = {}


def _init_worker(options: DetectorOptions, out: Path, frames: int, device: str) -> None:
    import torch

    torch.set_num_threads(1)
    engine = Engine(None, open_face_detector(options, device, lambda text: None), EngineOptions(max_faces=1))
    _worker.update(engine=engine, out=out, frames=frames)


def _work(source: Source) -> tuple[Source, dict[str, Any]]:
    return source, prepare_source(source, _worker["engine"], _worker["out"], _worker["frames"])


def _prepare_all(request: PrepareRequest, todo: list[Source], console: Console) -> None:
    """Every source not yet done, in ``workers`` processes or here; each record is written as soon as it is done."""
    with progress_bar(console, "videos") as progress:
        task = progress.add_task(f"preparing {plain(request.domain_name)}", total=len(todo))
        if request.workers > 1 and len(todo) > 1:
            args = (request.detector, request.out, request.frames, request.device)
            with multiprocessing.get_context("spawn").Pool(request.workers, _init_worker, args) as pool:
                for source, record in pool.imap_unordered(_work, todo):
                    write_text_atomic(record_path(request.out, source), json.dumps(record))
                    progress.advance(task)
        elif todo:
            detector = face_detector(request.detector, request.device, console)
            engine = Engine(None, detector, EngineOptions(max_faces=1))
            for source in todo:
                record = prepare_source(source, engine, request.out, request.frames)
                write_text_atomic(record_path(request.out, source), json.dumps(record))
                progress.advance(task)


def _summary(request: PrepareRequest, sources: list[Source], rows: list[dict[str, Any]]) -> dict[str, Any]:
    records = [json.loads(record_path(request.out, s).read_text()) for s in sources]
    skipped = Counter(r["reason"].split(":")[0] for r in records if r["status"] != "ok")
    mine = [r for r in rows if r["domain"] == request.domain_name]
    counts = Counter((r["split"], "fake" if int(r["label"]) else "real") for r in mine)
    return {
        "domain": request.domain_name,
        "layout": request.layout,
        "root": str(request.root),
        "sources": len(sources),
        "prepared": sum(r["status"] == "ok" for r in records),
        "skipped": dict(skipped),
        "skipped_sources": [
            {"video_id": r["source"]["video_id"], "reason": r["reason"]} for r in records if r["status"] != "ok"
        ],
        "crops": len(mine),
        "crops_by_split": {f"{split}/{label}": n for (split, label), n in sorted(counts.items())},
        "index": str(request.out / "index.csv"),
    }


def _check_settings(request: PrepareRequest) -> None:
    """A cache keeps what one set of settings made: a rerun with other frames, detector, split or layout options
    would mix crops of two recipes, so it is refused (prepare into another folder)."""
    settings = {
        "layout": request.layout,
        "root": str(request.root.resolve()),
        "frames": request.frames,
        "detector": [request.detector.name, request.detector.det_size],
        "compression": request.compression,
        "group_by": request.group_by,
        "json_file": str(request.json_file) if request.json_file else None,
        **({"pairs": str(request.pairs.resolve())} if request.pairs else {}),
        "seed": request.seed,
    }
    path = request.out / f"prepare-settings-{safe_name(request.domain_name)}.json"
    refusal = f"{request.out} holds domain {request.domain_name!r} prepared with other settings; use another --out"
    record_settings(path, settings, refusal)


def run_prepare(request: PrepareRequest, console: Console) -> dict[str, Any]:
    if request.pairs is not None and request.layout != "folder":
        raise UsageError(f"--pairs is for the folder layout, not {request.layout!r}")
    options = LayoutOptions(
        domain=request.domain_name,
        compression=request.compression,
        seed=request.seed,
        group_by=request.group_by,
        json_file=request.json_file,
        pairs=request.pairs,
    )
    sources = list_sources(request.layout, request.root, options)
    request.out.mkdir(parents=True, exist_ok=True)
    _check_settings(request)
    todo = [s for s in sources if not record_path(request.out, s).exists()]
    if len(todo) < len(sources):
        console.print(f"resuming: {len(sources) - len(todo)} of {len(sources)} sources already prepared")
    _prepare_all(request, todo, console)
    summary = _summary(request, sources, rebuild_index(request.out))
    write_text_atomic(request.out / f"prepare-{request.domain_name}.json", json.dumps(summary, indent=2))
    if not summary["crops"]:
        raise UsageError(f"no face crops could be made for domain {request.domain_name!r} (see the summary above)")
    return summary
