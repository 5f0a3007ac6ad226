"""`gmdf eval`: score labelled data and report ACC / AUC / EER / AP per target domain and M_EER, frame- and
video-level, as the paper does. Data is a prepared cache (crops + index) or a folder with ``real/`` and ``fake/``
(scanned by the engine exactly as `gmdf scan` scans, with each file's label attached).

A known source domain is scored with its own domain embedding; any other target domain with the wildcard.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from ..analysis.metrics import detection_metrics, finite_or_none, m_eer, video_level
from ..data.cache import read_index
from ..data.faces import DetectorOptions
from ..data.media import Sampling, labelled_items
from ..engine import Engine, EngineOptions, score_cached
from ..engine.keyframes import DETECT_EVERY
from ..errors import UsageError
from ..fileio import write_text_atomic
from ..model import GMDF
from ..progress import progress_bar
from ..report.render import write_json
from ..report.results import BothLevels, DomainMetrics, EvalReport, LevelMetrics
from ..terminal import plain
from ..weights import DEFAULT_WEIGHTS, load_weights
from .common import face_detector

LEVELS = ("frame", "video")


@dataclass
class Scored:
    """Scored samples of one target domain: one entry per frame."""

    video_ids: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)

    def at(self, level: str) -> tuple[list[int], list[float]]:
        if level == "frame":
            return self.labels, self.scores
        _, labels, scores = video_level(self.video_ids, self.labels, self.scores)
        return labels, scores


@dataclass
class EvalRequest:
    weights: str | None = None
    folder: Path | None = None
    cache: Path | None = None
    domains: list[str] = field(default_factory=list)
    split: str = "test"
    level: str = "both"
    p_real: float | None = None
    threshold: float = 0.5
    frames: int = 32
    detector: DetectorOptions = field(default_factory=DetectorOptions)
    detect_every: int = DETECT_EVERY
    out: Path | None = None
    device: str = "auto"
    precision: str = "fp32"


def score_cache(
    model: GMDF, cache: Path, domains: list[str], split: str, console: Console, batch_size: int = 64
) -> dict[str, Scored]:
    rows = [r for r in read_index(cache) if split in (r.split, "all")]
    present = sorted({r.domain for r in rows})
    for d in domains:
        if d not in present:
            raise UsageError(f"domain {d!r} has no {split} crops in {cache} (it has: {', '.join(present) or 'none'})")
    out: dict[str, Scored] = {}
    with progress_bar(console, "crops") as progress:
        task = progress.add_task("scoring", total=sum(r.domain in domains for r in rows))
        for d in domains:
            mine = [r for r in rows if r.domain == d]
            scored = out.setdefault(d, Scored())
            for start in range(0, len(mine), batch_size):
                kept, scores = score_cached(model, mine[start : start + batch_size], model.domain_index(d), batch_size)
                scored.scores.extend(scores)
                scored.labels.extend(r.label for r in kept)
                scored.video_ids.extend(r.video_id for r in kept)
                progress.advance(task, min(batch_size, len(mine) - start))
    return out


def score_folder(model: GMDF, request: EvalRequest, console: Console) -> tuple[dict[str, Scored], list[str]]:
    """A folder with real/ and fake/ (videos or images), run through the engine as `gmdf scan` runs it, each
    file's frame scores kept with its label. Returns the scores and the files that could not be used."""
    assert request.folder is not None
    items = labelled_items(request.folder)
    device = next(model.parameters()).device
    engine = Engine(
        model,
        face_detector(request.detector, device, console),
        EngineOptions(Sampling(request.frames), keep_crops=0, detect_every=request.detect_every, provenance=False),
    )
    scored = Scored()
    unusable: list[str] = []
    with progress_bar(console, "frames") as progress:
        task = progress.add_task("scanning", total=None)
        results = engine.run(
            [i for i, _ in items],
            on_start=lambda n: progress.update(task, total=n),
            on_frame=lambda: progress.advance(task),
        )
        for (_, label), result in zip(items, results, strict=True):
            if result.verdict in ("error", "no-face"):
                unusable.append(f"{result.path}: {result.error or 'no face'}")
                continue
            for frame in result.frames:
                if frame.score is not None:
                    scored.video_ids.append(str(result.path))
                    scored.labels.append(label)
                    scored.scores.append(frame.score)
    return {request.folder.name: scored}, unusable


def metrics_report(scored: dict[str, Scored], level: str, p_real: float | None, threshold: float) -> LevelMetrics:
    """One level's metrics per target domain, and M_EER over the domains that hold both classes."""
    domains: dict[str, DomainMetrics] = {}
    usable: dict[str, tuple[list[int], list[float]]] = {}
    for name, s in scored.items():
        labels, scores = s.at(level)
        m = detection_metrics(labels, scores, threshold)
        domains[name] = DomainMetrics(
            int(m["n_real"]),
            int(m["n_fake"]),
            finite_or_none(m["acc"]),
            finite_or_none(m["auc"]),
            finite_or_none(m["ap"]),
            finite_or_none(m["eer"]),
        )
        if m["n_real"] and m["n_fake"]:
            usable[name] = (labels, scores)
    value = finite_or_none(m_eer(usable, p_real)) if usable else None
    return LevelMetrics(level, domains, value, p_real)  # type: ignore[arg-type]


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def to_markdown(report: LevelMetrics) -> str:
    lines = [
        f"**{report.level}-level**, M_EER {_fmt(report.m_eer)}",
        "",
        "| domain | AUC | ACC | EER | AP | real | fake |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in report.domains.items():
        lines.append(
            f"| {name} | {_fmt(m.auc)} | {_fmt(m.acc)} | {_fmt(m.eer)} | {_fmt(m.ap)} | {m.n_real} | {m.n_fake} |"
        )
    return "\n".join(lines) + "\n"


def as_report(levels: list[LevelMetrics]) -> EvalReport:
    return levels[0] if len(levels) == 1 else BothLevels(frame=levels[0], video=levels[1])


def write_outputs(out: Path, levels: list[LevelMetrics], scored: dict[str, Scored]) -> None:
    from ..analysis.plots import roc_png

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", as_report(levels))
    write_text_atomic(out / "metrics.md", "\n".join(to_markdown(r) for r in levels))
    for r in levels:
        roc_png({name: s.at(r.level) for name, s in scored.items()}, r.level, out / f"roc_{r.level}.png")


def run_eval(request: EvalRequest, console: Console) -> list[LevelMetrics]:
    """Score the cache's domains or the folder, then the metrics of each requested level (and the outputs)."""
    model, _, _ = load_weights(request.weights or DEFAULT_WEIGHTS, device=request.device, precision=request.precision)
    if request.cache is not None:
        if not request.domains:
            raise UsageError("--data needs --domains")
        scored = score_cache(model, request.cache, request.domains, request.split, console)
    else:
        scored, unusable = score_folder(model, request, console)
        for line in unusable:
            console.print(f"[yellow]left out:[/] {plain(line)}", soft_wrap=True, highlight=False)
    levels = list(LEVELS) if request.level == "both" else [request.level]
    reports = [metrics_report(scored, lv, request.p_real, request.threshold) for lv in levels]
    if request.out is not None:
        write_outputs(request.out, reports, scored)
    return reports
