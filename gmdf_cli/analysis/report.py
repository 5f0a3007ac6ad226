"""Scan results -> machine and human reports: JSON, CSV, timeline plots, heatmap sheets, a self-contained HTML page."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import re
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np

from ..fileio import atomic_path, write_text_atomic
from .scan import FileResult

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
                        f"{face.score:.6f}",
                    ]
                )
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def write_json(path: Path, report: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(report, indent=2, allow_nan=False) + "\n")


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


def html_report(report: dict[str, Any], images: dict[int, dict[str, bytes]]) -> str:
    """A self-contained page (images inline) a person can open and read."""
    esc = html.escape
    rows = []
    for f in report["files"]:
        rows.append(
            f"<tr><td>{esc(Path(f['path']).name)}</td><td class='v {esc(f['verdict'])}'>{esc(f['verdict'])}</td>"
            f"<td>{_fmt(f['score'])}</td><td>{_fmt(f.get('score_max'))}</td><td>{f['faces_found']}</td>"
            f"<td>{f['frames_with_faces']}/{f['frames_scanned']}</td><td>{f['seconds']:.1f}s</td></tr>"
        )
    sections = []
    for i, f in enumerate(report["files"]):
        pics = images.get(i, {})
        parts = [
            f"<h2 id='f{i}'>{esc(Path(f['path']).name)} <span class='v {esc(f['verdict'])}'>"
            f"{esc(f['verdict'])}</span></h2>",
            f"<p class='meta'>{esc(f['path'])}<br>sha256 {esc(f['sha256'] or '-')}<br>{esc(f['kind'])}, "
            f"{f['media']['width']}x{f['media']['height']}"
            + (f", {f['media']['fps']} fps" if f["kind"] == "video" else "")
            + "</p>",
        ]
        if f["error"]:
            parts.append(f"<p class='err'>error: {esc(f['error'])}</p>")
        else:
            parts.append(
                f"<p>score (mean of frame scores) <b>{_fmt(f['score'])}</b>, median {_fmt(f['score_median'])}, "
                f"max {_fmt(f['score_max'])}; threshold {f['threshold']:.3f}</p>"
            )
        for w in f["warnings"]:
            parts.append(f"<p class='warn'>{esc(w)}</p>")
        if f["tracks"]:
            trs = "".join(
                f"<tr><td>{t['track']}</td><td class='v {t['verdict']}'>{t['verdict']}</td>"
                f"<td>{t['score']:.3f}</td><td>{t['faces']}</td></tr>"
                for t in f["tracks"]
            )
            parts.append(f"<table><tr><th>track</th><th>verdict</th><th>score</th><th>faces</th></tr>{trs}</table>")
        if "timeline" in pics:
            parts.append(_img(pics["timeline"], "score over time"))
        if "sheet" in pics:
            parts.append("<p>Most suspicious faces, with Grad-CAM toward <i>fake</i>:</p>")
            parts.append(_img(pics["sheet"], "heatmaps"))
        sections.append("<section>" + "\n".join(parts) + "</section>")
    model, det, params = report["model"], report["detector"], report["parameters"]
    provenance = (
        f"<p>model <b>{esc(str(model['name']))}</b> ({esc(str(model['config']))}), sha256 "
        f"{esc(str(model['sha256']))}<br>detector <b>{esc(str(det['name']))}</b>, sha256 {esc(str(det['sha256']))}"
        + (f"<br><span class='warn'>{esc(det['fallback_reason'])}</span>" if det.get("fallback_reason") else "")
        + f"<br>gmdf {esc(report['version'])}; started {esc(report['started'])}, finished "
        f"{esc(str(report['finished']))}</p><pre>{esc(json.dumps(params, indent=1))}</pre>"
    )
    style = (
        "body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:3px 9px;text-align:left}"
        ".v{font-weight:bold}.fake{color:#b3001b}.real{color:#137333}.no-face{color:#777}.error{color:#a15c00}"
        ".meta{color:#666;font-size:.85em}.warn{color:#a15c00}.err{color:#b3001b}img{max-width:100%}"
        "section{border-top:1px solid #ddd;margin-top:1.5em}pre{background:#f5f5f5;padding:.6em;font-size:.8em}"
    )
    interrupted = (
        "<p class='err'>The scan was interrupted; files below are those finished.</p>"
        if report.get("interrupted")
        else ""
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>gmdf scan report</title><style>{style}</style>"
        f"</head><body><h1>gmdf scan report</h1>{interrupted}"
        "<table><tr><th>file</th><th>verdict</th><th>score</th><th>max</th><th>faces</th><th>frames with face</th>"
        f"<th>time</th></tr>{''.join(rows)}</table>{provenance}{''.join(sections)}</body></html>\n"
    )
