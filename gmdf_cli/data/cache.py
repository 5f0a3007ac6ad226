"""A prepared cache (made by `gmdf prepare`): its records and index written, its rows and crops read back.

Layout::

    CACHE/index.csv                         domain, split, video_id, label, frame, path, identity (all domains)
    CACHE/crops/<domain>/<video>/<frame>.png  224 px face crops (the scan pipeline's detector and crop)
    CACHE/records/<domain>/<video>.json     one per finished video: its rows, or why it was skipped
    CACHE/prepare-<domain>.json             the last run's summary
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from ..errors import UsageError
from ..fileio import atomic_path
from .datasets import Source
from .faces import InputFormat, to_model_input

INDEX_FIELDS = ("domain", "split", "video_id", "label", "frame", "path", "identity")


@dataclass(frozen=True)
class Crop:
    domain: str
    split: str
    video_id: str
    label: int
    frame: int
    path: Path
    identity: str = ""
    """The group prepare split by (``--group-by``): the person a real video shows, or the target of a fake."""


def read_index(cache: Path) -> list[Crop]:
    index = cache / "index.csv"
    if not cache.is_dir():
        raise UsageError(f"cache folder not found: {cache} (make it with `gmdf prepare`)")
    if not index.is_file():
        raise UsageError(f"no index.csv in {cache}: run `gmdf prepare --out {cache}` first")
    with index.open(newline="") as fh:
        rows = [
            Crop(
                r["domain"],
                r["split"],
                r["video_id"],
                int(r["label"]),
                int(r["frame"]),
                cache / r["path"],
                r.get("identity") or "",
            )
            for r in csv.DictReader(fh)
        ]
    if not rows:
        raise UsageError(f"{index} is empty: no face crops were prepared")
    return rows


def load_batch(
    crops: list[Crop],
    fmt: InputFormat,
    flip: torch.Tensor | None = None,
    transform: Callable[[int, np.ndarray], np.ndarray] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, list[Path]]:
    """Crops -> (images (B', 3, size, size) CLIP-normalised, labels (B',), unreadable paths). ``flip`` (B,) bool
    mirrors some; ``transform(i, crop)`` changes crop i as read (BGR uint8, cached size) before ``fmt`` brings it
    to the model's input (as scanning does).
    A corrupt crop is left out (B' < B) and reported, not fatal."""
    images, labels, bad = [], [], []
    for i, crop in enumerate(crops):
        image = cv2.imread(str(crop.path), cv2.IMREAD_COLOR)
        if image is None:
            bad.append(crop.path)
            continue
        if transform is not None:
            image = transform(i, image)
        image = fmt(image)
        if flip is not None and bool(flip[i]):
            image = image[:, ::-1]
        images.append(np.ascontiguousarray(image))
        labels.append(crop.label)
    if not images:
        raise UsageError(f"no readable crops in a batch (e.g. {bad[0]}): the cache is damaged; run prepare again")
    return to_model_input(images), torch.tensor(labels, dtype=torch.long), bad


def safe_name(video_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", video_id.replace("/", "__"))[:150]


def record_path(out: Path, source: Source) -> Path:
    return out / "records" / source.domain / f"{safe_name(source.video_id)}.json"


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
