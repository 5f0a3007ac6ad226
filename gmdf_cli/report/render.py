"""Scan results -> machine and human reports: JSON, CSV, the terminal table, timeline plots, heatmap sheets and a
self-contained HTML page, all rendered from the typed results."""

from __future__ import annotations

import base64
import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np
from rich.markup import escape
from rich.table import Table

from ..fileio import atomic_path, write_text_atomic
from ..terminal import plain
from .results import (
    FileResult,
    LevelMetrics,
    Provenance,
    RobustnessReport,
    ScanReport,
    SuspiciousFace,
    WeightsRow,
)
from .schema import dumps

CSV_FIELDS = (
    "path",
    "sha256",
    "frame",
    "time",
    "track",
    "x1",
    "y1",
    "x2",
    "y2",
    "detector_score",
    "score",
    "file_verdict",
    "provenance",
)


class CsvWriter:
    """One row per scored face (with its file's verdict), written as each file finishes, so an interrupted scan
    keeps what it did."""

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
                        result.verdict,
                        provenance_words(result),
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


def prepare_plots() -> None:
    """Load matplotlib (headless) ahead of the work whose plots it draws: its import takes a second and loads C
    extensions, which is better done once before a long loop than inside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot


def _padded(low: float, high: float, share: float = 0.03) -> tuple[float, float]:
    """Axis limits a little wider than the data's, so that the markers at either end are drawn whole."""
    span = high - low if high > low else 1.0
    return low - share * span, high + share * span


def timeline_figure(result: FileResult) -> Any:
    """The score-over-time figure of a video (per track, and the frame score) with the threshold; None for single
    images. Every point is drawn whole: the axes reach a little past the first and last frames and past 0 and 1."""
    if result.kind != "video" or len(result.frames) < 2:
        return None
    prepare_plots()
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
    ax.set_xlim(*_padded(min(times), max(times)))
    ax.set_ylim(*_padded(0.0, 1.0, 0.05))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("P(fake)")
    ax.set_title(f"{result.path.name}: {result.verdict} (mean {result.score if result.score is not None else 0:.3f})")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, fontsize=7)  # beside, over no point
    return fig


def timeline_png(result: FileResult) -> bytes | None:
    """The timeline (``timeline_figure``) as PNG bytes; None for single images."""
    fig = timeline_figure(result)
    if fig is None:
        return None
    import matplotlib.pyplot as plt

    data = _png_bytes_from_figure(fig)
    plt.close(fig)
    return data


def encode_png(image: np.ndarray) -> bytes:
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


@dataclass
class FaceImages:
    """One suspicious face as the report shows it: the plain crop, and with --heatmaps its Grad-CAM overlay and a
    note when the map is empty or lies mostly outside the face."""

    face: SuspiciousFace
    overlay: np.ndarray | None = None  # (224, 224, 3) BGR uint8
    note: str | None = None


@dataclass
class FileImages:
    timeline: bytes | None = None
    faces: list[FaceImages] = field(default_factory=list)


def write_artifacts(out: Path, index: int, result: FileResult, faces: list[FaceImages]) -> FileImages:
    """Per-file PNGs under ``out/NNN-name/``: timeline, face crops, heatmap overlays and their contact sheet."""
    folder = out / file_folder(index, result)
    made = FileImages(timeline_png(result), faces)
    if made.timeline:
        _write_bytes(folder / "timeline.png", made.timeline)
    for i, face in enumerate(faces):
        _write_bytes(folder / f"face_{i:02d}.png", encode_png(face.face.display))
        if face.overlay is not None:
            _write_bytes(folder / f"heatmap_{i:02d}.png", encode_png(face.overlay))
    tiles = [f.overlay for f in faces if f.overlay is not None]
    if tiles:
        captions = [f"frame {f.face.frame}  {f.face.score:.2f}" for f in faces if f.overlay is not None]
        _write_bytes(folder / "contact_sheet.png", encode_png(contact_sheet(tiles, captions)))
    return made


C2PA_WORDS = {
    "none": "none in this file",
    "present": "embedded manifest, read and validated offline",
    "remote": "the file points to a manifest on the web: not fetched (a scan makes no network request)",
    "unreadable": "a manifest is there but could not be read",
    "not-read": "not read",
}
SOURCE_MEANINGS = {
    "trainedAlgorithmicMedia": "made by a model trained on sampled content (generative AI)",
    "compositeWithTrainedAlgorithmicMedia": "edited or composited with generative AI",
    "compositeSynthetic": "a composite of several elements, at least one synthetic",
    "algorithmicMedia": "made purely by an algorithm, not from training data",
    "digitalCapture": "captured by a camera or recorder",
    "compositeCapture": "a composite of captures",
    "digitalCreation": "made by a person with software (not generative AI)",
}
"""The IPTC digital source types' meanings, in short (cv.iptc.org/newscodes/digitalsourcetype)."""
VALIDATION_MEANINGS = {
    "signingCredential.untrusted": "the signer is on no trust list gmdf holds (it loads none): nobody vouches for it",
    "claimSignature.mismatch": "the signature does not match the claim",
}


def validation_meaning(code: str) -> str | None:
    """What a C2PA validation code means, in a few words, where gmdf knows it."""
    if code in VALIDATION_MEANINGS:
        return VALIDATION_MEANINGS[code]
    changed = code.startswith("assertion.") and code.endswith(".mismatch")
    return "the file (or its manifest) changed after it was signed" if changed else None


def provenance_words(result: FileResult) -> str:
    """The file's provenance in a few words (``-`` where it was not read)."""
    return result.provenance.summary if result.provenance is not None else "-"


def _provenance_view(found: Provenance | None) -> dict[str, Any] | None:
    """The report's provenance panel: every value is the file's own text, escaped by the template."""
    if found is None:
        return None
    return {
        "summary": found.summary,
        "c2pa": C2PA_WORDS[found.c2pa],
        "claim_generator": found.claim_generator,
        "source_type": found.digital_source_type,
        "source_meaning": SOURCE_MEANINGS.get(found.digital_source_type or ""),
        "generated": bool(found.generated),
        "style": "tampered" if found.tampered() else "generated" if found.generated else "",
        "actions": found.actions,
        "validation": [(code, validation_meaning(code)) for code in found.validation],
        "traces": found.traces,
        "notes": found.notes,
    }


VERDICT_MEANINGS: dict[str, tuple[str, str]] = {
    "fake": (
        "The file's score reached the detector's threshold.",
        "Look at the faces and heatmaps below: is the most suspicious face really a face, and is the heat on it? "
        "Treat this as a lead to check, never as proof.",
    ),
    "real": (
        "The score stayed below the detector's uncertainty band (below its threshold where it has no band): the "
        "detector found nothing.",
        "A forgery from a generator it never saw can still pass; the model card lists what it was not trained on.",
    ),
    "uncertain": (
        "The score lies inside the uncertainty band, where on validation data this detector is wrong too often to "
        "call either way.",
        "Do not decide on this score: check the file's provenance, scan more of a video's frames (--frames 64), or "
        "use a detector trained on footage like this.",
    ),
    "no-face": (
        "No face was found in any sampled frame, and gmdf only judges faces.",
        "Scan every frame (--all) or detect at a larger size (--det-size).",
    ),
    "error": (
        "The file could not be read; the reason is above.",
        "Check that the file opens in a player or viewer; the other files were still scanned.",
    ),
}
"""What each verdict means and what to check next: the one place the report takes these sentences from."""


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _b64(data: bytes | None) -> str | None:
    return base64.b64encode(data).decode() if data else None


def _counts(files: list[FileResult]) -> list[tuple[str, int]]:
    order = ("fake", "uncertain", "real", "no-face", "error")
    return [(v, n) for v in order if (n := sum(f.verdict == v for f in files))]


def _face_view(kind: str, x: FaceImages) -> dict[str, Any]:
    return {
        "crop": _b64(encode_png(x.face.display)),
        "overlay": _b64(encode_png(x.overlay)) if x.overlay is not None else None,
        "note": x.note,
        "score": f"{x.face.score:.3f}",
        "frame": x.face.frame,
        "time": f"{x.face.time:.2f} s" if kind == "video" else None,
        "track": x.face.track,
        "box": ", ".join(f"{v:.0f}" for v in x.face.box),
    }


def _file_view(f: FileResult, pics: FileImages) -> dict[str, Any]:
    media = f"{f.kind}, {f.media.width}x{f.media.height}" + (f", {f.media.fps} fps" if f.kind == "video" else "")
    return {
        "name": f.path.name,
        "path": str(f.path),
        "sha256": f.sha256,
        "verdict": f.verdict,
        "meaning": VERDICT_MEANINGS[f.verdict],
        "score": _fmt(f.score),
        "score_median": _fmt(f.score_median),
        "score_max": _fmt(f.score_max),
        "threshold": f"{f.threshold:.3f}",
        "band": ", ".join(f"{v:.3f}" for v in f.band) if f.band else None,
        "faces_found": f.faces_found,
        "frames_with_faces": f.frames_with_faces,
        "frames_scanned": f.frames_scanned,
        "seconds": f"{f.seconds:.1f}s",
        "media": media,
        "error": f.error,
        "warnings": f.warnings,
        "tracks": f.tracks,
        "timeline": _b64(pics.timeline),
        "faces": [_face_view(f.kind, x) for x in pics.faces],
        "has_heatmaps": any(x.overlay is not None for x in pics.faces),
        "provenance": _provenance_view(f.provenance),
    }


HASH_SHOWN = 12
"""Hex digits of a hash shown in "How it ran" (the full value is in the cell's title and in report.json)."""


def _hash_view(digest: str | None) -> list[tuple[str, str]]:
    """A hash for people: each part of it (MTCNN's is three, joined by ``+``) shortened, with the full part beside
    it for a title attribute."""
    if not digest:
        return [("-", "")]
    return [(part[:HASH_SHOWN] + "\u2026" if len(part) > HASH_SHOWN else part, part) for part in digest.split("+")]


def readable(value: Any) -> str:
    """A setting's value as people read it: yes/no, lists joined with commas, floats to 4 significant digits, ``-``
    for none; never a Python repr."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(readable(v) for v in value) or "-"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {readable(v)}" for k, v in value.items()) or "-"
    return str(value)


def _unfinished_view(unfinished: list[str], shown: int = 20) -> dict[str, Any]:
    """The files an interrupted scan did not finish: the first ``shown`` in the banner, the others folded."""
    return {"count": len(unfinished), "shown": unfinished[:shown], "more": unfinished[shown:]}


def html_report(report: ScanReport, images: dict[int, FileImages], images_note: str | None = None) -> str:
    """A self-contained page (images inline), rendered from the typed report by the package's Jinja2 template with
    autoescaping: every path, name and text of the report is data, never markup. ``images``: by position in
    ``report.files`` (files without are shown without pictures, with ``images_note`` saying why)."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("gmdf_cli.report", "templates"), autoescape=select_autoescape(["j2"]))
    files = report.files
    return env.get_template("report.html.j2").render(
        model=report.model,
        card=report.model.card,
        detector=report.detector,
        version=report.version,
        started=report.started,
        finished=report.finished,
        interrupted=report.interrupted,
        unfinished=_unfinished_view(report.unfinished),
        parameters=[(k, readable(v)) for k, v in report.parameters.items()],
        environment=readable(report.environment),
        model_hash=_hash_view(report.model.sha256),
        detector_hash=_hash_view(report.detector.sha256),
        files=[_file_view(f, images.get(i, FileImages())) for i, f in enumerate(files)],
        counts=_counts(files),
        band=next((f.band for f in files if f.band), None),
        failed=[(str(f.path), f.error) for f in files if f.verdict == "error"],
        skipped=report.skipped,
        images_note=images_note,
    )


VERDICT_STYLE = {
    "fake": "bold red",
    "uncertain": "bold yellow",
    "real": "bold green",
    "no-face": "dim",
    "error": "yellow",
}


def _provenance_cell(result: FileResult) -> str:
    """The table's provenance cell: tampering in red, a manifest declaring generated media in magenta."""
    words = plain(provenance_words(result))
    found = result.provenance
    if found is not None and found.tampered():
        return f"[bold red]{words}[/]"
    if found is not None and found.generated:
        return f"[bold magenta]{words}[/]"
    return words


def scan_table(files: list[FileResult]) -> Table:
    """The terminal summary of a scan: one row per file, its provenance (content credentials, metadata) beside the
    score and never part of it."""
    table = Table("file", "verdict", "fake score", "provenance", "faces", "frames", "time", title="gmdf scan")
    table.columns[0].overflow = "fold"
    for f in files:
        table.add_row(
            plain(f.path.name),
            f"[{VERDICT_STYLE[f.verdict]}]{f.verdict}[/]",
            _fmt(f.score),
            _provenance_cell(f),
            str(f.faces_found),
            f"{f.frames_with_faces}/{f.frames_scanned}",
            f"{f.seconds:.1f}s",
        )
    return table


def closing_lines(
    report: ScanReport, default_model: str, counts: dict[str, int] | None = None, files_per_second: float = 0.0
) -> list[str]:
    """Under the table: the count of each verdict (of ``counts`` when the report holds no files: archives), the
    speed, and the model card's caveat when the default detector ran."""
    order = ("fake", "uncertain", "real", "no-face", "error")
    tally = counts if counts is not None else dict(_counts(report.files))
    total = sum(tally.values())
    text = ", ".join(f"{tally[v]} {v}" for v in order if tally.get(v))
    scored = sum(tally.get(v, 0) for v in ("fake", "uncertain", "real"))
    speed = ""
    if scored and files_per_second > 0:  # a speed of files that all failed says nothing
        speed = (
            f" at {files_per_second:.1f} files/s" if files_per_second >= 1 else f", {1 / files_per_second:.1f} s a file"
        )
    noun = "file" if total == 1 else "files"
    lines = [f"{total} {noun}: {text or 'none scanned'}{speed}" + (" (interrupted)" if report.interrupted else "")]
    card = report.model.card
    if scored and report.model.name == default_model and card is not None:  # a caveat on scores, when there are some
        lines.append(f"note: {card.caveat}")
    return lines


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
    table.columns[0].no_wrap = True
    for r in rows:
        table.add_row(escape(r.name), r.config, escape(r.hub), escape(r.path or "-"), escape(r.description))
    return table


def key_value_table(title: str, rows: dict[str, str]) -> Table:
    """Two columns, no header: the summaries of info, prepare, synth and train."""
    table = Table(title=escape(title), show_header=False)
    for key, value in rows.items():
        table.add_row(escape(key), escape(value))
    return table


def contact_sheet(tiles: list[np.ndarray], captions: list[str], columns: int = 4, tile: int = 224) -> np.ndarray:
    """Grid of BGR tiles with a caption under each -> one BGR image."""
    columns = max(1, min(columns, len(tiles)))
    rows = (len(tiles) + columns - 1) // columns
    band = 28
    sheet = np.full((rows * (tile + band), columns * tile, 3), 255, dtype=np.uint8)
    for i, (img, text) in enumerate(zip(tiles, captions, strict=True)):
        r, c = divmod(i, columns)
        y, x = r * (tile + band), c * tile
        sheet[y : y + tile, x : x + tile] = cv2.resize(img, (tile, tile), interpolation=cv2.INTER_AREA)
        cv2.putText(sheet, text, (x + 6, y + tile + 19), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (20, 20, 20), 1, cv2.LINE_AA)
    return sheet
