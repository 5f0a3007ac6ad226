"""Scan results -> machine and human reports: JSON, CSV, the terminal table, timeline plots, heatmap sheets and a
self-contained HTML page, all rendered from the typed results."""

from __future__ import annotations

import base64
import csv
import html
import io
import re
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np
from rich.markup import escape
from rich.table import Table

from ..fileio import atomic_path, write_text_atomic
from .results import FileResult, LevelMetrics, RobustnessReport, ScanReport, WeightsRow
from .schema import dumps

CSV_FIELDS = ("path", "sha256", "frame", "time", "track", "x1", "y1", "x2", "y2", "detector_score", "score")


class CsvWriter:
    """One row per scored face, written as each file finishes, so an interrupted scan keeps what it did."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle: IO[str] = open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.writer = csv.writer(self.handle)
        self.writer.writerow(CSV_FIELDS)

    def add(self, result: FileResult) -> None:
        for frame in result.frames:
            for face in frame.faces:
                self.writer.writerow(
                    [
                        str(result.path),
                        result.sha256,
                        frame.index,
                        f"{frame.time:.4f}",
                        face.track,
                        *(f"{v:.1f}" for v in face.box),
                        f"{face.detector_score:.4f}",
                        "" if face.score is None else f"{face.score:.6f}",
                    ]
                )
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def write_json(path: Path, report: Any) -> None:
    """Typed results (or plain data) as standard JSON, atomically."""
    write_text_atomic(path, dumps(report) + "\n")


def _png_bytes_from_figure(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def timeline_png(result: FileResult) -> bytes | None:
    """Score over time (per track, and the frame score) with the threshold; None for single images."""
    if result.kind != "video" or len(result.frames) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.2))
    times = [f.time for f in result.frames]
    tracks = sorted({face.track for f in result.frames for face in f.faces})
    for track in tracks:
        pts = [(f.time, face.score) for f in result.frames for face in f.faces if face.track == track]
        ax.plot(*zip(*pts, strict=True), marker="o", ms=3.5, lw=1.2, label=f"track {track}")
    no_face = [f.time for f in result.frames if not f.faces]
    if no_face:
        ax.plot(no_face, [0.0] * len(no_face), "|", color="grey", ms=10, label="no face")
    ax.axhline(result.threshold, color="crimson", ls="--", lw=1, label=f"threshold {result.threshold:.2f}")
    ax.set_xlim(min(times), max(times) if max(times) > min(times) else min(times) + 1)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("P(fake)")
    ax.set_title(f"{result.path.name}: {result.verdict} (mean {result.score if result.score is not None else 0:.3f})")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=7, ncol=min(4, len(tracks) + 2))
    data = _png_bytes_from_figure(fig)
    plt.close(fig)
    return data


def _encode_png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def file_folder(index: int, result: FileResult) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", result.path.stem)[:60] or "file"
    return f"{index:03d}-{stem}"


def write_artifacts(out: Path, index: int, result: FileResult, heatmaps: dict[str, Any] | None) -> dict[str, bytes]:
    """Per-file PNGs under ``out/NNN-name/``: timeline, heatmap overlays, contact sheet. Returns them by role."""
    folder = out / file_folder(index, result)
    made: dict[str, bytes] = {}
    timeline = timeline_png(result)
    if timeline:
        made["timeline"] = timeline
        _write_bytes(folder / "timeline.png", timeline)
    if heatmaps and heatmaps.get("sheet") is not None:
        for i, tile in enumerate(heatmaps["overlays"]):
            _write_bytes(folder / f"heatmap_{i:02d}.png", _encode_png(tile))
        made["sheet"] = _encode_png(heatmaps["sheet"])
        _write_bytes(folder / "contact_sheet.png", made["sheet"])
    return made


def _img(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _file_rows(report: ScanReport) -> str:
    esc = html.escape
    return "".join(
        f"<tr><td><a href='#f{i}'>{esc(f.path.name)}</a></td><td class='v {esc(f.verdict)}'>{esc(f.verdict)}</td>"
        f"<td>{_fmt(f.score)}</td><td>{_fmt(f.score_max)}</td><td>{f.faces_found}</td>"
        f"<td>{f.frames_with_faces}/{f.frames_scanned}</td><td>{f.seconds:.1f}s</td></tr>"
        for i, f in enumerate(report.files)
    )


def _file_section(i: int, f: FileResult, pics: dict[str, bytes]) -> str:
    esc = html.escape
    parts = [
        f"<h2 id='f{i}'>{esc(f.path.name)} <span class='v {esc(f.verdict)}'>{esc(f.verdict)}</span></h2>",
        f"<p class='meta'>{esc(str(f.path))}<br>sha256 {esc(f.sha256 or '-')}<br>{esc(f.kind)}, "
        f"{f.media.width}x{f.media.height}" + (f", {f.media.fps} fps" if f.kind == "video" else "") + "</p>",
    ]
    if f.error:
        parts.append(f"<p class='err'>error: {esc(f.error)}</p>")
    else:
        parts.append(
            f"<p>score (mean of frame scores) <b>{_fmt(f.score)}</b>, median {_fmt(f.score_median)}, "
            f"max {_fmt(f.score_max)}; threshold {f.threshold:.3f}</p>"
        )
    parts.extend(f"<p class='warn'>{esc(w)}</p>" for w in f.warnings)
    if f.tracks:
        trs = "".join(
            f"<tr><td>{t.track}</td><td class='v {t.verdict}'>{t.verdict}</td><td>{t.score:.3f}</td>"
            f"<td>{t.faces}</td></tr>"
            for t in f.tracks
        )
        parts.append(f"<table><tr><th>track</th><th>verdict</th><th>score</th><th>faces</th></tr>{trs}</table>")
    if "timeline" in pics:
        parts.append(_img(pics["timeline"], "score over time"))
    if "sheet" in pics:
        parts.append("<p>Most suspicious faces, with Grad-CAM toward <i>fake</i>:</p>")
        parts.append(_img(pics["sheet"], "heatmaps"))
    return "<section>" + "\n".join(parts) + "</section>"


def _provenance(report: ScanReport) -> str:
    esc = html.escape
    model, det = report.model, report.detector
    params = "".join(f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td></tr>" for k, v in report.parameters.items())
    return (
        f"<p>model <b>{esc(model.name)}</b> ({esc(model.config)}), sha256 {esc(model.sha256)}<br>detector "
        f"<b>{esc(det.name)}</b>, sha256 {esc(det.sha256)}"
        + (f"<br><span class='warn'>{esc(det.fallback_reason)}</span>" if det.fallback_reason else "")
        + f"<br>gmdf {esc(report.version)}; started {esc(report.started)}, finished {esc(str(report.finished))}</p>"
        f"<table class='params'>{params}</table>"
    )


STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:3px 9px;text-align:left}"
    ".v{font-weight:bold}.fake{color:#b3001b}.real{color:#137333}.no-face{color:#777}.error{color:#a15c00}"
    ".meta{color:#666;font-size:.85em}.warn{color:#a15c00}.err{color:#b3001b}img{max-width:100%}"
    "section{border-top:1px solid #ddd;margin-top:1.5em}.params{font-size:.8em}"
)


def html_report(report: ScanReport, images: dict[int, dict[str, bytes]]) -> str:
    """A self-contained page (images inline) a person can open and read."""
    sections = "".join(_file_section(i, f, images.get(i, {})) for i, f in enumerate(report.files))
    interrupted = (
        "<p class='err'>The scan was interrupted; files below are those finished.</p>" if report.interrupted else ""
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>gmdf scan report</title><style>{STYLE}</style>"
        f"</head><body><h1>gmdf scan report</h1>{interrupted}"
        "<table><tr><th>file</th><th>verdict</th><th>score</th><th>max</th><th>faces</th><th>frames with face</th>"
        f"<th>time</th></tr>{_file_rows(report)}</table>{_provenance(report)}{sections}</body></html>\n"
    )


VERDICT_STYLE = {"fake": "bold red", "real": "bold green", "no-face": "dim", "error": "yellow"}


def scan_table(files: list[FileResult]) -> Table:
    """The terminal summary of a scan: one row per file."""
    table = Table("file", "verdict", "fake score", "faces", "frames", "time", title="gmdf scan")
    for f in files:
        table.add_row(
            escape(f.path.name),
            f"[{VERDICT_STYLE[f.verdict]}]{f.verdict}[/]",
            _fmt(f.score),
            str(f.faces_found),
            f"{f.frames_with_faces}/{f.frames_scanned}",
            f"{f.seconds:.1f}s",
        )
    return table


def _f4(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def eval_table(report: LevelMetrics) -> Table:
    """`gmdf eval`: one row per target domain."""
    table = Table(
        "domain", "AUC", "ACC", "EER", "AP", "real", "fake", title=f"{report.level}-level, M_EER {_f4(report.m_eer)}"
    )
    for name, m in report.domains.items():
        table.add_row(escape(name), _f4(m.auc), _f4(m.acc), _f4(m.eer), _f4(m.ap), str(m.n_real), str(m.n_fake))
    return table


def robustness_table(summary: RobustnessReport, levels: list[int]) -> Table:
    """`gmdf robustness`: AUC per corruption, clean and at each level, and the average."""
    table = Table("corruption", "clean", *(f"level {x}" for x in levels), "average", title="gmdf robustness: AUC")
    clean = _fmt(summary.clean.auc)
    for name, per in summary.results.items():
        table.add_row(name, clean, *(_fmt(per[str(x)].auc) for x in levels), _fmt(summary.average[name]))
    return table


def protocol_table(summary: dict[str, Any], level: str = "video") -> Table:
    """`gmdf eval --protocol`: one row per (protocol part, target)."""
    table = Table(
        "protocol", "trained on", "target", "AUC", "EER", "M_EER", title=f"gmdf eval --protocol {summary['protocol']}"
    )
    for key, r in summary["results"].items():
        m = r[level]
        for i, target in enumerate(r["targets"]):
            d = m["domains"][target]
            first = i == 0
            table.add_row(
                key if first else "",
                ", ".join(r["sources"]) if first else "",
                target,
                _f4(d["auc"]),
                _f4(d["eer"]),
                _f4(m["m_eer"]) if first else "",
            )
    return table


def weights_table(rows: list[WeightsRow]) -> Table:
    table = Table("name", "config", "hub", "on this machine", "description")
    for r in rows:
        table.add_row(escape(r.name), r.config, escape(r.hub), escape(r.path or "-"), escape(r.description))
    return table


def key_value_table(title: str, rows: dict[str, str]) -> Table:
    """Two columns, no header: the summaries of info, prepare, synth and train."""
    table = Table(title=escape(title), show_header=False)
    for key, value in rows.items():
        table.add_row(escape(key), escape(value))
    return table
