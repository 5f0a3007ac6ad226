"""`gmdf robustness`: AUC and ACC of a detector on clean data and under each corruption and severity.

The sweep goes file by file: a file's sampled frames are decoded once and its faces found once on the clean
frames; then every (corruption, level) runs through the engine as one job with hooks (``--at frame``: the
corrupted frames replace the decoded ones and faces are detected on them, as a real pipeline meets them;
``--at crop``: the clean frames' faces, and the corruption applied to each face crop). The clean job is the plain
scan of the file with faces detected on every frame (``scan --detect-every 1``: no key frames, in any job). Video
compression re-encodes the whole file with H.264 at the level's CRF. Each file's scores are kept in
``OUT/records/`` as soon as they are known, so an interrupted sweep resumes where it stopped. A prepared cache
(crops only) is always corrupted at crop level.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rich.console import Console

from ..analysis.corruptions import CORRUPTIONS, corrupt_image, encode_h264
from ..analysis.metrics import detection_metrics, finite_or_none
from ..data.cache import read_index
from ..data.faces import DetectorOptions, Face, crop_face
from ..data.media import Frame, MediaError, MediaItem, OpenedMedia, Sampling, labelled_items, read_frames, read_image
from ..engine import Engine, EngineOptions, Job, rules, score_crops
from ..errors import UsageError
from ..fileio import write_text_atomic
from ..progress import progress_bar
from ..report.render import contact_sheet, write_json
from ..report.results import RobustnessReport, SweepMetrics
from ..terminal import plain
from ..weights import DEFAULT_WEIGHTS, load_weights
from .common import face_detector, record_settings

CLEAN = "clean/0"
DISPLAY = 160


def combo_key(name: str, level: int) -> str:
    return f"{name}/{level}"


def _parse(key: str) -> tuple[str, int]:
    name, level = key.split("/")
    return name, int(level)


@dataclass
class RobustnessRequest:
    data: Path
    corruptions: list[str]
    levels: list[int]
    out: Path
    weights: str | None = None
    at: str = "frame"
    frames: int = 32
    domains: list[str] | None = None
    split: str = "test"
    detector: DetectorOptions = field(default_factory=DetectorOptions)
    threshold: float = 0.5
    seed: int = 0
    batch_size: int = 32
    device: str = "auto"
    precision: str = "fp32"

    @property
    def combos(self) -> list[str]:
        return [CLEAN] + [combo_key(c, lv) for c in self.corruptions for lv in self.levels]


def _rng(*parts: object) -> np.random.Generator:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _record(path: Path, key: str, label: int) -> dict[str, Any]:
    if path.is_file():
        loaded: dict[str, Any] = json.loads(path.read_text())
        return loaded
    return {"path": key, "label": label, "scores": {}}


@dataclass
class Sweep:
    request: RobustnessRequest
    engine: Engine
    console: Console
    sheet: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.records = self.request.out / "records"

    # -- folders ---------------------------------------------------------------------------------------------------
    def run_folder(self, items: list[tuple[MediaItem, int]]) -> RobustnessReport:
        """The sweep over a labelled folder's ``items`` (``labelled_items``: found before anything loaded)."""
        req = self.request
        sample = next((i.path for i, label in items if label == 1), items[0][0].path)
        records: list[dict[str, Any]] = []
        with progress_bar(self.console, "steps") as progress, tempfile.TemporaryDirectory() as tmp:
            task = progress.add_task("robustness sweep", total=len(items) * len(req.combos))
            for item, label in items:
                path = self.records / f"{hashlib.sha256(str(item.path.resolve()).encode()).hexdigest()[:20]}.json"
                record = _record(path, str(item.path), label)
                todo = [c for c in req.combos if c not in record["scores"]]
                if item.path == sample and not (req.out / "sheet").is_dir():
                    todo = req.combos  # the contact sheet needs this file's crops under every combo
                progress.update(task, description=f"robustness: {plain(item.path.name[:30])}")
                progress.advance(task, len(req.combos) - len(todo))
                if todo:
                    try:
                        self._file(item, record, todo, Path(tmp), item.path == sample, lambda: progress.advance(task))
                    except (MediaError, OSError, cv2.error, RuntimeError) as exc:
                        record["error"] = str(exc).splitlines()[0]
                        self.console.print(f"[red]error:[/] {plain(str(item.path))}: {plain(record['error'])}")
                        progress.advance(task, len(todo))
                    write_text_atomic(path, json.dumps(record))
                records.append(record)
        if self.sheet:
            (req.out / "sheet").mkdir(parents=True, exist_ok=True)
            for key, img in self.sheet.items():
                cv2.imwrite(str(req.out / "sheet" / f"{key.replace('/', '_')}.png"), img)
        return self._summarise(records)

    def _file(
        self, item: MediaItem, record: dict[str, Any], todo: list[str], tmp: Path, sample: bool, tick: Any
    ) -> None:
        probed, media = self.engine.probe(item)
        if media is None:
            raise MediaError(probed.error or "cannot read")
        frames = list(read_frames(media))
        if not frames:
            raise MediaError("no frames could be decoded")
        clean = {f.index: self.engine.detect(f.image, media.kind == "image") for f in frames}
        jobs = [self._job(item, media, frames, clean, key, tmp, sample) for key in todo]
        for key, result in zip(todo, self.engine.run(jobs), strict=True):
            if result.error:
                raise MediaError(result.error)
            record["scores"][key] = {"score": result.score, "frames": [f.score for f in result.frames]}
            tick()

    def _job(
        self,
        item: MediaItem,
        media: OpenedMedia,
        frames: list[Frame],
        clean: dict[int, list[Face]],
        key: str,
        tmp: Path,
        sample: bool,
    ) -> Job:
        """The engine job of one (corruption, level): which frames, which faces, which crop change."""
        name, level = _parse(key)
        clean_faces: Callable[[Frame], list[Face]] = lambda f: clean[f.index]  # noqa: E731
        if name == "clean" or self.request.at == "crop":
            crop = None
            if name != "clean":

                def crop(frame: Frame, number: int, image: np.ndarray) -> np.ndarray:
                    return corrupt_image(image, name, level, _rng(item.path, key, frame.index, number))

            if sample:
                self._sheet_tile(key, frames, clean, crop)
            return Job(item, media, frames=lambda: frames, faces=clean_faces, crop=crop)

        def corrupted() -> Iterable[Frame]:
            shown = self._corrupted_frames(item, media, frames, name, level, tmp)
            if sample:
                self._sheet_tile(key, shown, clean, None)
            return shown

        return Job(item, media, frames=corrupted)

    def _sheet_tile(
        self,
        key: str,
        frames: list[Frame],
        clean: dict[int, list[Face]],
        crop: Callable[[Frame, int, np.ndarray], np.ndarray] | None,
    ) -> None:
        """The sample file's first clean face under ``key``, for the contact sheet."""
        first = next((f for f in frames if clean.get(f.index)), None)
        if first is None:
            return
        tile = crop_face(first.image, clean[first.index][0].box, DISPLAY)
        self.sheet[key] = crop(first, 0, tile) if crop is not None else tile

    def _corrupted_frames(
        self, item: MediaItem, media: OpenedMedia, frames: list[Frame], name: str, level: int, tmp: Path
    ) -> list[Frame]:
        if name == "compression" and media.kind == "video":
            encoded = encode_h264(item.path, tmp / f"crf{level}_{item.path.stem}.mp4", level)
            again, reopened = self.engine.probe(MediaItem(encoded, "video"))
            if reopened is None:
                raise MediaError(again.error or "cannot read the re-encoded video")
            wanted = {f.index for f in frames}
            return [f for f in read_frames(reopened) if f.index in wanted]
        return [
            Frame(f.index, f.time, corrupt_image(f.image, name, level, _rng(item.path, name, level, f.index)))
            for f in frames
        ]

    # -- caches ----------------------------------------------------------------------------------------------------
    def run_cache(self) -> RobustnessReport:
        req = self.request
        rows = [r for r in read_index(req.data) if req.split in (r.split, "all")]
        if req.domains:
            rows = [r for r in rows if r.domain in req.domains]
        if not rows:
            raise UsageError(f"no {req.split} crops in {req.data}" + (f" for {req.domains}" if req.domains else ""))
        videos: dict[str, list[Any]] = {}
        for r in rows:
            videos.setdefault(f"{r.domain}/{r.video_id}", []).append(r)
        records = []
        assert self.engine.model is not None
        with progress_bar(self.console, "steps") as progress:
            task = progress.add_task("robustness sweep", total=len(videos) * len(req.combos))
            for vid, crops in videos.items():
                path = self.records / f"{hashlib.sha256(vid.encode()).hexdigest()[:20]}.json"
                record = _record(path, vid, crops[0].label)
                images = [read_image(c.path) for c in crops]
                for key in req.combos:
                    if key not in record["scores"]:
                        name, level = _parse(key)
                        shown = [
                            img if name == "clean" else corrupt_image(img, name, level, _rng(vid, key, i))
                            for i, img in enumerate(images)
                        ]
                        if key not in self.sheet and crops[0].label == 1:
                            self.sheet[key] = cv2.resize(shown[0], (DISPLAY, DISPLAY))
                        scores = score_crops(self.engine.model, shown, batch_size=req.batch_size)
                        record["scores"][key] = {"score": rules.file_score(scores), "frames": scores}
                    progress.advance(task)
                write_text_atomic(path, json.dumps(record))
                records.append(record)
        return self._summarise(records)

    # -- results ---------------------------------------------------------------------------------------------------
    def _metrics(self, records: list[dict[str, Any]], key: str) -> SweepMetrics:
        pairs = [
            (r["label"], r["scores"][key]["score"])
            for r in records
            if key in r["scores"] and r["scores"][key]["score"] is not None
        ]
        if not pairs:
            return SweepMetrics(None, None, 0)
        m = detection_metrics([p[0] for p in pairs], [p[1] for p in pairs], self.request.threshold)
        return SweepMetrics(finite_or_none(m["auc"]), m["acc"], len(pairs))

    def _summarise(self, records: list[dict[str, Any]]) -> RobustnessReport:
        req = self.request
        results = {
            name: {str(lv): self._metrics(records, combo_key(name, lv)) for lv in req.levels}
            for name in req.corruptions
        }
        average: dict[str, float | None] = {}
        for name, per_level in results.items():
            aucs = [m.auc for m in per_level.values() if m.auc is not None]
            average[name] = float(np.mean(aucs)) if aucs else None
        every = [a for a in average.values() if a is not None]
        average["all"] = float(np.mean(every)) if every else None
        parameters = {**asdict(req), "data": str(req.data), "out": str(req.out)}
        return RobustnessReport(
            clean=self._metrics(records, CLEAN),
            results=results,
            average=average,
            files=len(records),
            errors={r["path"]: r["error"] for r in records if r.get("error")},
            parameters=parameters,
        )


def _settings(request: RobustnessRequest, weights_sha256: str, detector: Any) -> dict[str, Any]:
    """Everything that changes a record (the face detector that really ran included): a sweep folder holds records
    of these settings only."""
    fixed = {k: v for k, v in asdict(request).items() if k in ("at", "frames", "split", "seed")}
    fixed.update(data=str(request.data.resolve()), weights=weights_sha256, det_size=request.detector.det_size)
    fixed["detector"] = [detector.info["name"], detector.info["sha256"]] if detector is not None else None
    return fixed


def run_robustness(request: RobustnessRequest, console: Console) -> RobustnessReport:
    for name in request.corruptions:
        if name not in CORRUPTIONS:
            raise UsageError(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)} or all")
    is_cache = (request.data / "index.csv").is_file()
    items = [] if is_cache else labelled_items(request.data)  # an empty real/ or fake/: said before loading a model
    spec = request.weights or DEFAULT_WEIGHTS
    model, resolved, _ = load_weights(spec, device=request.device, precision=request.precision)
    if is_cache and request.at != "crop":
        console.print("a prepared cache holds crops only: corruptions apply to the crops (--at crop)")
        request.at = "crop"
    device = next(model.parameters()).device
    detector = face_detector(request.detector, device, console) if not is_cache else None
    request.out.mkdir(parents=True, exist_ok=True)
    refusal = f"{request.out} holds a sweep with other settings ({request.out / 'sweep.json'}); use another --out"
    record_settings(request.out / "sweep.json", _settings(request, resolved.sha256, detector), refusal)
    options = EngineOptions(
        Sampling(frames=request.frames), batch_size=request.batch_size, keep_crops=0, provenance=False
    )
    sweep = Sweep(request, Engine(model, detector, options), console)
    summary = sweep.run_cache() if is_cache else sweep.run_folder(items)
    write_outputs(request.out, summary, sweep.sheet, request)
    return summary


def to_markdown(summary: RobustnessReport) -> str:
    levels = list(next(iter(summary.results.values())).keys()) if summary.results else []
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    clean = summary.clean
    lines = [
        f"clean: AUC {fmt(clean.auc)}, ACC {fmt(clean.acc)} ({clean.n} files)",
        "",
        "| corruption | " + " | ".join(f"level {lv}" for lv in levels) + " | average |",
        "|---|" + "---|" * (len(levels) + 1),
    ]
    for name, per in summary.results.items():
        row = " | ".join(fmt(per[lv].auc) for lv in levels)
        lines.append(f"| {name} | {row} | {fmt(summary.average[name])} |")
    lines.append(f"\nAUC averaged over every corruption and level: {fmt(summary.average['all'])}")
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, summary: RobustnessReport, sheet: dict[str, np.ndarray], req: RobustnessRequest) -> None:
    from ..analysis.plots import auc_vs_severity_png

    write_json(out / "robustness.json", summary)
    write_text_atomic(out / "robustness.md", to_markdown(summary))
    auc_vs_severity_png(out / "auc_vs_severity.png", summary, req.levels)
    tiles = dict(sheet)
    if not tiles and (out / "sheet").is_dir():
        for png in (out / "sheet").glob("*.png"):
            tile = cv2.imread(str(png))
            if tile is not None:
                tiles[png.stem.replace("_", "/", 1)] = tile
    ordered, captions = [], []
    for name in req.corruptions:
        for key in [CLEAN] + [combo_key(name, lv) for lv in req.levels]:
            if key in tiles:
                ordered.append(tiles[key])
                captions.append("clean" if key == CLEAN else key.replace("/", " "))
    if ordered:
        sheet_png = contact_sheet(ordered, captions, columns=len(req.levels) + 1, tile=DISPLAY)
        cv2.imwrite(str(out / "contact_sheet.png"), sheet_png)
