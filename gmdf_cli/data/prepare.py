"""`gmdf prepare`: a dataset in its official layout -> face crops + an index (one row per crop).

Cache layout::

    CACHE/index.csv                         domain, split, video_id, label, frame, path, identity (all domains)
    CACHE/crops/<domain>/<video>/<frame>.png  224 px face crops (the scan pipeline's detector and crop)
    CACHE/records/<domain>/<video>.json     one per finished video: its rows, or why it was skipped
    CACHE/prepare-<domain>.json             the last run's summary

Resumable: a video with a record is not done again. Frames and faces come from the same code as `gmdf scan`.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rich.console import Console

from ..errors import UsageError
from ..fileio import atomic_path, write_text_atomic
from ..progress import progress_bar
from .datasets import LayoutOptions, Source, list_sources
from .faces import DETECTION_SIDE, Detector, crop_face, load_detector
from .media import MediaError, MediaItem, Sampling, open_media, read_frames, read_image

INDEX_FIELDS = ("domain", "split", "video_id", "label", "frame", "path", "identity")
CROP_SIZE = 224


@dataclass
class PrepareRequest:
    layout: str
    root: Path
    out: Path
    domain: str | None = None
    frames: int = 32
    workers: int = 1
    detector: str = "retinaface"
    detector_weights: str | None = None
    det_size: int = DETECTION_SIDE
    compression: str = "c23"
    group_by: str | None = None
    json_file: Path | None = None
    seed: int = 0
    device: str = "cpu"
    """The face detector's device (resolved by the caller)."""

    @property
    def domain_name(self) -> str:
        return self.domain or self.layout


def safe_name(video_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", video_id.replace("/", "__"))[:150]


def record_path(out: Path, source: Source) -> Path:
    return out / "records" / source.domain / f"{safe_name(source.video_id)}.json"


def _evenly(items: list[Any], count: int) -> list[Any]:
    if len(items) <= count:
        return items
    return [items[int(round(i))] for i in np.linspace(0, len(items) - 1, count)]


def source_frames(source: Source, frames: int) -> Iterator[tuple[int, np.ndarray]]:
    """(frame index, BGR image) for the frames to use from one source."""
    if source.kind == "video":
        media = open_media(MediaItem(source.path, "video"), Sampling(frames=frames))
        for frame in read_frames(media):
            yield frame.index, frame.image
    elif source.kind == "image":
        yield 0, read_image(source.path)
    else:
        if source.frames:
            paths = [source.path / f for f in source.frames]
        else:
            paths = sorted(p for p in source.path.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
        for i, path in _evenly(list(enumerate(paths)), frames):
            yield i, read_image(path)


def prepare_source(source: Source, detector: Detector, out: Path, frames: int) -> dict[str, Any]:
    """Detect, crop and save the faces of one source; the record says what was written or why nothing was."""
    rows: list[dict[str, Any]] = []
    no_face = 0
    record: dict[str, Any] = {"source": {**asdict(source), "path": str(source.path)}, "rows": rows}
    folder = out / "crops" / source.domain / safe_name(source.video_id)
    try:
        for index, image in source_frames(source, frames):
            faces = detector.detect(image)
            if not faces:
                no_face += 1
                continue
            best = max(faces, key=lambda f: f.score)
            crop = crop_face(image, best.box, CROP_SIZE)
            target = folder / f"{index:06d}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(target), crop):
                raise OSError(f"cannot write {target}")
            rows.append({"frame": index, "path": target.relative_to(out).as_posix()})
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


def _init_worker(detector: str, weights: str | None, det_size: int, out: Path, frames: int, device: str) -> None:
    import torch

    torch.set_num_threads(1)
    _worker.update(detector=load_detector(detector, weights, det_size, device)[0], out=out, frames=frames)


def _work(source: Source) -> tuple[Source, dict[str, Any]]:
    return source, prepare_source(source, _worker["detector"], _worker["out"], _worker["frames"])


def rebuild_index(out: Path) -> list[dict[str, Any]]:
    """Write CACHE/index.csv from every domain's records (atomically) and return its rows."""
    rows = []
    for path in sorted((out / "records").glob("*/*.json")):
        record = json.loads(path.read_text())
        if record.get("status") != "ok":
            continue
        src = record["source"]
        for row in record["rows"]:
            rows.append(
                {
                    "domain": src["domain"],
                    "split": src["split"],
                    "video_id": src["video_id"],
                    "label": src["label"],
                    "frame": row["frame"],
                    "path": row["path"],
                    "identity": src["identity"],
                }
            )
    with atomic_path(out / "index.csv") as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=INDEX_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return rows


def run_prepare(request: PrepareRequest, console: Console) -> dict[str, Any]:
    options = LayoutOptions(
        domain=request.domain_name,
        compression=request.compression,
        seed=request.seed,
        group_by=request.group_by,
        json_file=request.json_file,
    )
    sources = list_sources(request.layout, request.root, options)
    request.out.mkdir(parents=True, exist_ok=True)
    todo = [s for s in sources if not record_path(request.out, s).exists()]
    if len(todo) < len(sources):
        console.print(f"resuming: {len(sources) - len(todo)} of {len(sources)} sources already prepared")
    detector_args = (
        request.detector,
        request.detector_weights,
        request.det_size,
        request.out,
        request.frames,
        request.device,
    )
    progress = progress_bar(console, "videos")
    with progress:
        task = progress.add_task(f"preparing {request.domain_name}", total=len(todo))
        if request.workers > 1 and len(todo) > 1:
            with multiprocessing.get_context("spawn").Pool(request.workers, _init_worker, detector_args) as pool:
                for source, record in pool.imap_unordered(_work, todo):
                    write_text_atomic(record_path(request.out, source), json.dumps(record))
                    progress.advance(task)
        elif todo:
            detector, fallback = load_detector(
                request.detector, request.detector_weights, request.det_size, request.device
            )
            if fallback:
                console.print(f"[yellow]warning:[/] {fallback}", soft_wrap=True)
            for source in todo:
                record = prepare_source(source, detector, request.out, request.frames)
                write_text_atomic(record_path(request.out, source), json.dumps(record))
                progress.advance(task)
    rows = rebuild_index(request.out)
    records = [json.loads(record_path(request.out, s).read_text()) for s in sources]
    skipped = Counter(r["reason"].split(":")[0] for r in records if r["status"] != "ok")
    mine = [r for r in rows if r["domain"] == request.domain_name]
    counts = Counter((r["split"], "fake" if int(r["label"]) else "real") for r in mine)
    summary = {
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
    write_text_atomic(request.out / f"prepare-{request.domain_name}.json", json.dumps(summary, indent=2))
    if not mine:
        raise UsageError(f"no face crops could be made for domain {request.domain_name!r} (see the summary above)")
    return summary
