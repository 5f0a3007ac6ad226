"""Provenance beside the score: what a file says of its own origin, read from its bytes and never from its pixels.
C2PA content credentials (read and validated by c2pa-python, imported on first use: start-up stays fast) and the
traces generators and editors leave in metadata (EXIF Software, XMP, PNG text, a video's encoder tag).

Evidence apart from the detector's: nothing here reaches a score or a verdict. Everything read comes from the file,
which anyone can write: each text is made one printable line of at most ``MAX_TEXT`` characters, lists are capped,
and renderers treat them as data. Reading never fails a scan: what cannot be read becomes a short note.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..data.media import VIDEO_EXTENSIONS
from ..report.results import Provenance

MAX_TEXT = 200
"""Characters kept of any one text read from a file."""
MAX_ITEMS = 20
"""Actions, validation codes and traces kept per file."""
C2PA_SETTINGS = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}}
"""No network request for a scanned file: a remote manifest is reported, not fetched (fetching it would tell its
host which file is being examined, and make a scan depend on the network)."""
GENERATED = {
    "trainedAlgorithmicMedia": "AI-generated",
    "compositeWithTrainedAlgorithmicMedia": "AI-edited",
    "compositeSynthetic": "synthetic composite",
    "algorithmicMedia": "generated",
}
"""IPTC digital source types saying an algorithm made the media, most telling first, with their words in tables.
IPTC: trainedAlgorithmicMedia, made by a model trained on sampled content (generative AI);
compositeWithTrainedAlgorithmicMedia, edited with one; compositeSynthetic, a composite with synthetic parts;
algorithmicMedia, made purely by an algorithm, not from training data."""
PNG_GENERATOR_KEYS = ("parameters", "prompt", "workflow", "Dream", "sd-metadata", "invokeai_metadata")
"""PNG text that image generators write (Stable Diffusion web UIs, ComfyUI, InvokeAI): generation settings."""
PNG_SOFTWARE_KEYS = ("Software", "Source")
EXIF_SOFTWARE = 0x0131
VIDEO_TAGS = re.compile(r"^\s+(encoder|software)\s*:\s*(.+)$", re.IGNORECASE | re.MULTILINE)
"""FFmpeg's listing of container and stream metadata: the tags naming the software that wrote the file."""
FFMPEG_SECONDS = 20


def read_provenance(path: Path) -> Provenance:
    """The file's content credentials and metadata traces, with a few words for tables."""
    found = read_c2pa(path)
    traces, notes = video_traces(path) if path.suffix.lower() in VIDEO_EXTENSIONS else image_traces(path)
    found.traces = traces[:MAX_ITEMS]
    found.notes += notes
    found.summary = summarise(found)
    return found


def bounded(value: Any, limit: int = MAX_TEXT) -> str:
    """Text from a file as one printable line of at most ``limit`` characters (cut with an ellipsis)."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))[:MAX_ITEMS]


# -- C2PA ----------------------------------------------------------------------------------------------------------
def read_c2pa(path: Path) -> Provenance:
    """The active manifest's claim, actions, declared source type and validation codes. A remote manifest is said
    as such, not fetched; whatever else goes wrong becomes a note (the bytes are anyone's: the native reader may
    fail on them in any way)."""
    try:
        import c2pa
    except (ImportError, OSError) as exc:
        why = f"c2pa-python unavailable ({bounded(exc, 120)})"
        return Provenance("not-read", notes=[f"content credentials not read: {why}"])
    if path.suffix.lower().lstrip(".") not in c2pa.Reader.get_supported_mime_types():
        kind = path.suffix.lower() or "extensionless"
        return Provenance("not-read", notes=[f"content credentials not read: c2pa-python reads none from {kind} files"])
    try:
        store = _manifest_store(c2pa, path)
    except Exception as exc:
        return _failed(c2pa, exc)
    if store is None:
        return Provenance("none")
    try:
        return _from_store(store)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return Provenance("unreadable", notes=[f"unreadable manifest ({bounded(exc, 120)})"])


def _manifest_store(c2pa: Any, path: Path) -> dict[str, Any] | None:
    """The manifest store as c2pa-python's JSON (validation included), None when the file holds none."""
    settings = c2pa.Settings.from_dict(C2PA_SETTINGS)
    context = c2pa.Context(settings=settings)
    try:
        reader = c2pa.Reader.try_create(str(path), context=context)
        if reader is None:
            return None
        with reader:
            store: dict[str, Any] = json.loads(reader.json())
            return store
    finally:
        context.close()
        settings.close()


def _failed(c2pa: Any, exc: Exception) -> Provenance:
    message = bounded(exc, 300)
    if isinstance(exc, c2pa.C2paError.RemoteManifest) or message.startswith("Remote"):
        url = re.search(r"https?://\S+", message)
        where = f": {bounded(url.group(0), 120)}" if url else ""
        return Provenance("remote", notes=[f"remote manifest, not fetched{where}"])
    return Provenance("unreadable", notes=[f"unreadable manifest ({bounded(message, 120)})"])


def _dicts(value: Any) -> list[dict[str, Any]]:
    """The dictionaries of a JSON list (anything else in a manifest is skipped)."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _from_store(store: dict[str, Any]) -> Provenance:
    manifest = store["manifests"][store["active_manifest"]]
    actions = [
        action
        for assertion in _dicts(manifest.get("assertions"))
        if str(assertion.get("label", "")).startswith("c2pa.actions")
        for action in _dicts((assertion.get("data") or {}).get("actions"))
    ]
    source = source_type(str(a["digitalSourceType"]) for a in actions if a.get("digitalSourceType"))
    return Provenance(
        "present",
        claim_generator=_claim_generator(manifest),
        digital_source_type=source,
        generated=None if source is None else source in GENERATED,
        actions=_unique(bounded(a.get("action", "?"), 80) for a in actions),
        validation=_unique(bounded(s.get("code", "?"), 80) for s in _dicts(store.get("validation_status"))),
    )


def _claim_generator(manifest: dict[str, Any]) -> str | None:
    """The claim generator of a v1 claim, or the names and versions a v2 claim lists."""
    if manifest.get("claim_generator"):
        return bounded(manifest["claim_generator"])
    named = [
        " ".join(str(g[k]) for k in ("name", "version") if g.get(k))
        for g in _dicts(manifest.get("claim_generator_info"))
    ]
    return bounded(", ".join(named)) if any(named) else None


def source_type(urls: Iterable[str]) -> str | None:
    """The most telling IPTC digital source type of those declared (a generated one first), by its code's last part."""
    names = [bounded(url.rstrip("/").rsplit("/", 1)[-1], 80) for url in urls]
    return next((n for n in GENERATED if n in names), names[0] if names else None)


# -- metadata traces -----------------------------------------------------------------------------------------------
def image_traces(path: Path) -> tuple[list[str], list[str]]:
    """EXIF Software, XMP CreatorTool and DigitalSourceType, and PNG text chunks naming software or generation
    settings (those before the image data, read without decoding it), with notes on what could not be read."""
    from PIL import Image

    traces: list[str] = []
    notes: list[str] = []
    try:
        with Image.open(path) as image:
            for name, read in (("EXIF", _exif_traces), ("XMP", _xmp_traces), ("text", _text_traces)):
                traces += _quietly(name, read, image, notes)
    except Exception as exc:  # Pillow on anyone's bytes: any failure is a note
        notes.append(f"metadata not read ({bounded(exc, 120)})")
    return traces, notes


def _quietly(name: str, read: Callable[[Any], list[str]], image: Any, notes: list[str]) -> list[str]:
    """One metadata reader's traces; its failure (a malformed block) is a note and the others still run."""
    try:
        return read(image)
    except Exception as exc:
        notes.append(f"{name} metadata not read ({bounded(exc, 100)})")
        return []


def _exif_traces(image: Any) -> list[str]:
    software = image.getexif().get(EXIF_SOFTWARE)
    return [f"EXIF Software: {bounded(software)}"] if software else []


def _xmp_traces(image: Any) -> list[str]:
    found = dict(_xmp_fields(image.getxmp(), ("CreatorTool", "DigitalSourceType")))
    return [f"XMP {key}: {bounded(value)}" for key, value in found.items() if value]


def _xmp_fields(tree: Any, keys: tuple[str, ...], depth: int = 0) -> Iterable[tuple[str, Any]]:
    """``(key, value)`` for each of ``keys`` in Pillow's XMP dictionary, at any depth (bounded)."""
    if depth > 8:
        return
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else []
    for key, value in items:
        if key in keys and isinstance(value, str):
            yield key, value
        else:
            yield from _xmp_fields(value, keys, depth + 1)


def _text_traces(image: Any) -> list[str]:
    where = image.format or "image"
    keys = (*PNG_GENERATOR_KEYS, *PNG_SOFTWARE_KEYS)
    return [f"{where} {key}: {bounded(image.info[key])}" for key in keys if isinstance(image.info.get(key), str)]


def video_traces(path: Path) -> tuple[list[str], list[str]]:
    """The container's and streams' encoder (and software) tags, as the FFmpeg that ships with imageio-ffmpeg
    lists them, with a note when it could not run."""
    try:
        import imageio_ffmpeg

        listing = subprocess.run(
            [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=FFMPEG_SECONDS,
        ).stderr
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        return [], [f"video metadata not read ({bounded(exc, 120)})"]
    tags = (f"video {key.lower()}: {bounded(value)}" for key, value in VIDEO_TAGS.findall(listing))
    return _unique(tags), []


# -- a few words -------------------------------------------------------------------------------------------------
def summarise(found: Provenance) -> str:
    """A few words for tables: the credentials' claim and tampering, else their absence, followed by what the
    metadata says of a generator when it does (plain software names are in ``traces`` only: most files have one)."""
    if found.c2pa == "present":
        words = [GENERATED[found.digital_source_type]] if found.digital_source_type in GENERATED else []
        if found.tampered():
            words.append("tampered")
        return "C2PA: " + (", ".join(words) or "present")
    base = {"none": "none", "not-read": "not read"}.get(found.c2pa, f"C2PA: {found.c2pa}")
    said = _generator_words(found.traces)
    return f"{base}; {said}" if said else base


def _generator_words(traces: list[str]) -> str | None:
    """What metadata says of a generator: an XMP digital source type that says so, or generation settings."""
    declared = source_type(t.split(": ", 1)[-1] for t in traces if t.startswith("XMP DigitalSourceType:"))
    if declared in GENERATED:
        return f"XMP: {GENERATED[declared]}"
    if any(t.split(":", 1)[0].rsplit(" ", 1)[-1] in PNG_GENERATOR_KEYS for t in traces):
        return "generator settings"
    return None
