"""`gmdf robustness`: AUC and ACC of a detector on clean data and under each corruption and severity.

The sweep goes file by file: a file's sampled frames are decoded once, then every (corruption, level) is applied
to them (``--at frame``: to the whole frame before face detection, as a real pipeline meets it; ``--at crop``: to
the face crops, faces found on the clean frame). Video compression re-encodes the whole file with H.264 at the
level's CRF. Each file's scores are kept in ``OUT/records/`` as soon as they are known, so an interrupted sweep
resumes where it stopped. A prepared cache (crops only) is always corrupted at crop level.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from rich.console import Console

from ..data.cache import read_index
from ..data.faces import DETECTION_SIDE, crop_face, load_detector, to_model_input
from ..data.media import (
    MediaError,
    MediaItem,
    OpenedMedia,
    Sampling,
    labelled_items,
    open_media,
    read_frames,
    read_image,
)
from ..errors import UsageError
from ..fileio import write_text_atomic
from ..model import GMDF
from ..progress import progress_bar
from .corruptions import CORRUPTIONS, corrupt_image, encode_h264
from .heatmaps import contact_sheet
from .metrics import detection_metrics

CLEAN = "clean/0"
DISPLAY = 160


def combo_key(name: str, level: int) -> str:
    return f"{name}/{level}"


@dataclass
class RobustnessRequest:
    data: Path
    weights: str
    corruptions: list[str]
    levels: list[int]
    out: Path
    at: str = "frame"
    frames: int = 32
    domains: list[str] | None = None
    split: str = "test"
    detector: str = "retinaface"
    detector_weights: str | None = None
    det_size: int = DETECTION_SIDE
    threshold: float = 0.5
    seed: int = 0
    batch_size: int = 32
    device: str = "cpu"
    """The face detector's device (the model comes already on it)."""

    @property
    def combos(self) -> list[str]:
        return [CLEAN] + [combo_key(c, lv) for c in self.corruptions for lv in self.levels]


def _rng(*parts: object) -> np.random.Generator:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


@dataclass
class Sweep:
    request: RobustnessRequest
    model: GMDF
    console: Console
    sheet: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.size = self.model.config.vision.image_size
        self.records = self.request.out / "records"

    def _scores(self, crops: list[np.ndarray]) -> list[float]:
        out: list[float] = []
        for start in range(0, len(crops), self.request.batch_size):
            with torch.inference_mode():
                out.extend(self.model.score(to_model_input(crops[start : start + self.request.batch_size])))
        return out

    def _frame_scores(self, groups: list[list[np.ndarray]]) -> list[float | None]:
        """Crops grouped by frame -> each frame's score (its most suspicious face), None without a face."""
        flat = self._scores([c for g in groups for c in g])
        result: list[float | None] = []
        for g in groups:
            mine, flat = flat[: len(g)], flat[len(g) :]
            result.append(max(mine) if mine else None)
        return result

    # -- folders ---------------------------------------------------------------------------------------------------
    def run_folder(self) -> dict[str, Any]:
        req = self.request
        items = labelled_items(req.data)
        self.detector, fallback = load_detector(req.detector, req.detector_weights, req.det_size, req.device)
        if fallback:
            self.console.print(f"[yellow]warning:[/] {fallback}", soft_wrap=True)
        sample = next((i.path for i, label in items if label == 1), items[0][0].path)
        records: list[dict[str, Any]] = []
        with progress_bar(self.console, "steps") as progress, tempfile.TemporaryDirectory() as tmp:
            task = progress.add_task("robustness sweep", total=len(items) * len(req.combos))
            for item, label in items:
                path = self.records / f"{hashlib.sha256(str(item.path.resolve()).encode()).hexdigest()[:20]}.json"
                record: dict[str, Any] = (
                    json.loads(path.read_text())
                    if path.is_file()
                    else {"path": str(item.path), "label": label, "scores": {}}
                )
                todo = [c for c in req.combos if c not in record["scores"]]
                if item.path == sample and not (req.out / "sheet").is_dir():
                    todo = req.combos  # the contact sheet needs this file's crops under every combo
                progress.update(
                    task, description=f"robustness: {item.path.name[:30]}", advance=len(req.combos) - len(todo)
                )
                if todo:
                    try:
                        self._file(item, record, todo, Path(tmp), item.path == sample, lambda: progress.advance(task))
                    except (MediaError, OSError, cv2.error, RuntimeError) as exc:
                        record["error"] = str(exc).splitlines()[0]
                        self.console.print(f"[red]error:[/] {item.path}: {record['error']}", soft_wrap=True)
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
        req = self.request
        media = open_media(item, Sampling(frames=req.frames))
        frames = list(read_frames(media))
        if not frames:
            raise MediaError("no frames could be decoded")
        clean_boxes = [self._best_boxes(f.image) for f in frames]
        for key in todo:
            name, level = key.split("/")[0], int(key.split("/")[1])
            images = self._corrupted_frames(item, media, frames, name, level, tmp) if req.at == "frame" else None
            groups: list[list[np.ndarray]] = []
            for i, frame in enumerate(frames):
                if images is not None:  # corrupted before detection
                    image = images[i] if i < len(images) else None
                    boxes = self._best_boxes(image) if image is not None and name != "clean" else clean_boxes[i]
                    source = image
                else:  # faces from the clean frame, corruption on the crop
                    boxes, source = clean_boxes[i], frame.image
                crops = [crop_face(source, b, self.size) for b in boxes] if source is not None else []
                if req.at == "crop" and name != "clean":
                    rng = _rng(record["path"], key, frame.index)
                    crops = [corrupt_image(c, name, level, rng) for c in crops]
                groups.append(crops)
                if sample and i == 0 and clean_boxes[0]:
                    display_source = source if source is not None else frame.image
                    display = crop_face(display_source, clean_boxes[0][0], DISPLAY)
                    if req.at == "crop" and name != "clean":
                        display = corrupt_image(display, name, level, _rng(record["path"], key, "sheet"))
                    self.sheet[key] = display
            frame_scores = self._frame_scores(groups)
            usable = [s for s in frame_scores if s is not None]
            record["scores"][key] = {"score": float(np.mean(usable)) if usable else None, "frames": frame_scores}
            tick()

    def _best_boxes(self, image: np.ndarray) -> list[tuple[float, float, float, float]]:
        faces = sorted(self.detector.detect(image), key=lambda f: -f.score)
        return [f.box for f in faces[:4]]

    def _corrupted_frames(
        self, item: MediaItem, media: OpenedMedia, frames: list[Any], name: str, level: int, tmp: Path
    ) -> list[np.ndarray]:
        if name == "clean":
            return [f.image for f in frames]
        if name == "compression" and media.kind == "video":
            encoded = encode_h264(item.path, tmp / f"crf{level}_{item.path.stem}.mp4", level)
            again = open_media(MediaItem(encoded, "video"), Sampling(frames=self.request.frames))
            wanted = {f.index for f in frames}
            by_index = {f.index: f.image for f in read_frames(again) if f.index in wanted}
            return [by_index[f.index] for f in frames if f.index in by_index]
        return [corrupt_image(f.image, name, level, _rng(item.path, name, level, f.index)) for f in frames]

    # -- caches ----------------------------------------------------------------------------------------------------
    def run_cache(self) -> dict[str, Any]:
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
        with progress_bar(self.console, "steps") as progress:
            task = progress.add_task("robustness sweep", total=len(videos) * len(req.combos))
            for vid, crops in videos.items():
                path = self.records / f"{hashlib.sha256(vid.encode()).hexdigest()[:20]}.json"
                record = (
                    json.loads(path.read_text())
                    if path.is_file()
                    else {"path": vid, "label": crops[0].label, "scores": {}}
                )
                images = [read_image(c.path) for c in crops]
                for key in req.combos:
                    if key not in record["scores"]:
                        name, level = key.split("/")[0], int(key.split("/")[1])
                        shown = [
                            img if name == "clean" else corrupt_image(img, name, level, _rng(vid, key, i))
                            for i, img in enumerate(images)
                        ]
                        if key not in self.sheet and crops[0].label == 1:
                            self.sheet[key] = cv2.resize(shown[0], (DISPLAY, DISPLAY))
                        scores = self._scores(
                            [cv2.resize(s, (self.size, self.size), interpolation=cv2.INTER_AREA) for s in shown]
                        )
                        record["scores"][key] = {"score": float(np.mean(scores)), "frames": scores}
                    progress.advance(task)
                write_text_atomic(path, json.dumps(record))
                records.append(record)
        return self._summarise(records)

    # -- results ---------------------------------------------------------------------------------------------------
    def _summarise(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        req = self.request

        def metrics(key: str) -> dict[str, Any]:
            pairs = [
                (r["label"], r["scores"][key]["score"])
                for r in records
                if key in r["scores"] and r["scores"][key]["score"] is not None
            ]
            if not pairs:
                return {"auc": None, "acc": None, "n": 0}
            m = detection_metrics([p[0] for p in pairs], [p[1] for p in pairs], req.threshold)
            auc = None if m["auc"] != m["auc"] else m["auc"]
            return {"auc": auc, "acc": m["acc"], "n": len(pairs)}

        results: dict[str, dict[str, Any]] = {}
        for name in req.corruptions:
            results[name] = {str(lv): metrics(combo_key(name, lv)) for lv in req.levels}
        average = {}
        for name, per_level in results.items():
            aucs = [m["auc"] for m in per_level.values() if m["auc"] is not None]
            average[name] = float(np.mean(aucs)) if aucs else None
        every = [a for a in average.values() if a is not None]
        return {
            "clean": metrics(CLEAN),
            "results": results,
            "average": {**average, "all": float(np.mean(every)) if every else None},
            "files": len(records),
            "errors": {r["path"]: r["error"] for r in records if r.get("error")},
            "parameters": {**asdict(req), "data": str(req.data), "out": str(req.out)},
        }


def run_robustness(request: RobustnessRequest, model: GMDF, console: Console) -> dict[str, Any]:
    for name in request.corruptions:
        if name not in CORRUPTIONS:
            raise UsageError(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)} or all")
    settings = request.out / "sweep.json"
    fixed = {k: v for k, v in asdict(request).items() if k in ("at", "frames", "split", "det_size", "seed")}
    fixed.update(data=str(request.data.resolve()), weights=request.weights)
    if settings.is_file() and json.loads(settings.read_text()) != fixed:
        raise UsageError(f"{request.out} holds a sweep with other settings ({settings}); use another --out")
    request.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(settings, json.dumps(fixed, indent=2))
    sweep = Sweep(request, model, console)
    is_cache = (request.data / "index.csv").is_file()
    if is_cache and request.at != "crop":
        console.print("a prepared cache holds crops only: corruptions apply to the crops (--at crop)")
        request.at = "crop"
    summary = sweep.run_cache() if is_cache else sweep.run_folder()
    write_outputs(request.out, summary, sweep.sheet, request)
    return summary


def to_markdown(summary: dict[str, Any]) -> str:
    levels = list(next(iter(summary["results"].values())).keys()) if summary["results"] else []
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    clean = summary["clean"]
    lines = [
        f"clean: AUC {fmt(clean['auc'])}, ACC {fmt(clean['acc'])} ({clean['n']} files)",
        "",
        "| corruption | " + " | ".join(f"level {lv}" for lv in levels) + " | average |",
        "|---|" + "---|" * (len(levels) + 1),
    ]
    for name, per in summary["results"].items():
        lines.append(
            f"| {name} | " + " | ".join(fmt(per[lv]["auc"]) for lv in levels) + f" | {fmt(summary['average'][name])} |"
        )
    lines.append(f"\nAUC averaged over every corruption and level: {fmt(summary['average']['all'])}")
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, summary: dict[str, Any], sheet: dict[str, np.ndarray], req: RobustnessRequest) -> None:
    write_text_atomic(out / "robustness.json", json.dumps(summary, indent=2))
    write_text_atomic(out / "robustness.md", to_markdown(summary))
    _plot(out / "auc_vs_severity.png", summary, req.levels)
    tiles = dict(sheet)
    if not tiles and (out / "sheet").is_dir():
        for png in (out / "sheet").glob("*.png"):
            tile = cv2.imread(str(png))
            if tile is not None:
                tiles[png.stem.replace("_", "/", 1)] = tile
    if tiles:
        ordered, captions = [], []
        for name in req.corruptions:
            for key in [CLEAN] + [combo_key(name, lv) for lv in req.levels]:
                if key in tiles:
                    ordered.append(tiles[key])
                    captions.append("clean" if key == CLEAN else key.replace("/", " "))
        cv2.imwrite(
            str(out / "contact_sheet.png"), contact_sheet(ordered, captions, columns=len(req.levels) + 1, tile=DISPLAY)
        )


def _plot(path: Path, summary: dict[str, Any], levels: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    clean = summary["clean"]["auc"]
    xs = [0, *levels]
    per_level: dict[int, list[float]] = {lv: [] for lv in levels}
    for name, per in summary["results"].items():
        ys = [clean] + [per[str(lv)]["auc"] for lv in levels]
        ax.plot(xs, [np.nan if y is None else y for y in ys], marker="o", ms=4, lw=1.3, label=name)
        for lv in levels:
            if per[str(lv)]["auc"] is not None:
                per_level[lv].append(per[str(lv)]["auc"])
    mean = [clean] + [float(np.mean(v)) if v else np.nan for v in per_level.values()]
    ax.plot(xs, [np.nan if y is None else y for y in mean], color="black", lw=2.4, ls="--", label="average")
    ax.set_xticks(xs, ["clean", *map(str, levels)])
    ax.set_xlabel("severity level")
    ax.set_ylabel("AUC")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2, loc="lower left")
    ax.set_title("AUC under corruption")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
