"""`gmdf eval`: score labelled data and report ACC / AUC / EER / AP per target domain and M_EER, frame- and
video-level, as the paper does. Data is a prepared cache (crops + index) or a folder with ``real/`` and ``fake/``
(scanned by the `gmdf scan` pipeline itself).

A known source domain is scored with its own domain embedding; any other target domain with the wildcard.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from ..data.cache import Crop, load_batch, read_index
from ..data.faces import load_detector
from ..data.media import Sampling, labelled_items
from ..errors import UsageError
from ..fileio import write_text_atomic
from ..model import GMDF
from ..progress import progress_bar
from .metrics import detection_metrics, m_eer, video_level
from .scan import Scanner, ScanOptions

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


@torch.inference_mode()
def score_crops(model: GMDF, rows: list[Crop], domain: int = 0, batch_size: int = 64) -> tuple[list[Crop], list[float]]:
    """P(fake) of prepared crops under one domain index (0: wildcard). A corrupt crop is left out: returns the rows
    actually scored and their scores, in order."""
    size = model.config.vision.image_size
    kept: list[Crop] = []
    scores: list[float] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        images, _, bad = load_batch(chunk, size)
        kept.extend(r for r in chunk if r.path not in bad)
        scores.extend(model.score(images, domain))
    return kept, scores


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
                kept, scores = score_crops(model, mine[start : start + batch_size], model.domain_index(d), batch_size)
                scored.scores.extend(scores)
                scored.labels.extend(r.label for r in kept)
                scored.video_ids.extend(r.video_id for r in kept)
                progress.advance(task, min(batch_size, len(mine) - start))
    return out


def score_folder(
    model: GMDF,
    folder: Path,
    console: Console,
    detector: str = "retinaface",
    detector_weights: str | None = None,
    frames: int = 32,
    device: str = "cpu",
) -> tuple[dict[str, Scored], list[str]]:
    """A folder with real/ and fake/ (videos or images), scanned exactly as `gmdf scan` does: a frame's score is its
    most suspicious face; a video's, the mean of its frames. Returns scores and the files that could not be used."""
    items = labelled_items(folder)
    det, fallback = load_detector(detector, detector_weights, device=device)
    if fallback:
        console.print(f"[yellow]warning:[/] {fallback}", soft_wrap=True)
    scanner = Scanner(model, det, ScanOptions(Sampling(frames=frames), keep_crops=0))
    label_of = {item.path: label for item, label in items}
    scored = Scored()
    unusable: list[str] = []
    with progress_bar(console, "frames") as progress:
        task = progress.add_task("scanning", total=None)
        for result in scanner.scan(
            [i for i, _ in items],
            on_start=lambda n: progress.update(task, total=n),
            on_frame=lambda: progress.advance(task),
        ):
            if result.verdict in ("error", "no-face"):
                unusable.append(f"{result.path}: {result.error or 'no face'}")
                continue
            for frame in result.frames:
                if frame.score is not None:
                    scored.video_ids.append(str(result.path))
                    scored.labels.append(label_of[result.path])
                    scored.scores.append(frame.score)
    return {folder.name: scored}, unusable


def metrics_report(scored: dict[str, Scored], level: str, p_real: float | None, threshold: float) -> dict[str, Any]:
    """The JSON contract: {"domains": {NAME: {auc, acc, eer, ap, n_real, n_fake}}, "m_eer", "level"}."""
    domains: dict[str, Any] = {}
    usable: dict[str, tuple[list[int], list[float]]] = {}
    for name, s in scored.items():
        labels, scores = s.at(level)
        domains[name] = detection_metrics(labels, scores, threshold)
        if domains[name]["n_real"] and domains[name]["n_fake"]:
            usable[name] = (labels, scores)
    value = m_eer(usable, p_real) if usable else float("nan")
    return {"level": level, "domains": domains, "m_eer": value, "p_real": p_real}


def to_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"**{report['level']}-level**, M_EER {report['m_eer']:.4f}",
        "",
        "| domain | AUC | ACC | EER | AP | real | fake |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in report["domains"].items():
        lines.append(
            f"| {name} | {m['auc']:.4f} | {m['acc']:.4f} | {m['eer']:.4f} | {m['ap']:.4f} | "
            f"{m['n_real']} | {m['n_fake']} |"
        )
    return "\n".join(lines) + "\n"


def roc_png(scored: dict[str, Scored], level: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    for name, s in scored.items():
        labels, scores = s.at(level)
        if len(set(labels)) < 2:
            continue
        fpr, tpr, _ = roc_curve(labels, scores)
        ax.plot(fpr, tpr, lw=1.6, label=f"{name} (AUC {roc_auc_score(labels, scores):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set_xlabel("false positive rate (reals flagged fake)")
    ax.set_ylabel("true positive rate (fakes caught)")
    ax.set_title(f"ROC, {level} level")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def write_outputs(out: Path, reports: list[dict[str, Any]], scored: dict[str, Scored]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "metrics.json", json.dumps(json_payload(reports), indent=2))
    write_text_atomic(out / "metrics.md", "\n".join(to_markdown(r) for r in reports))
    for r in reports:
        roc_png(scored, r["level"], out / f"roc_{r['level']}.png")


def _clean(value: Any) -> Any:
    """NaN -> None so the JSON is standard."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def json_payload(reports: list[dict[str, Any]]) -> dict[str, Any]:
    return _clean(reports[0] if len(reports) == 1 else {"level": "both", **{r["level"]: r for r in reports}})
