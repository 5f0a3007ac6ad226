"""`gmdf synth`: forgeries made from real faces (see ``gmdf_cli.data.synth`` for the kinds and the output layout).
Faces come from the engine's detection stage (the best face of each sampled frame)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rich.console import Console

from ..data.faces import DetectorOptions, Face
from ..data.landmarks import landmarks, load_landmark_net
from ..data.media import MediaError, Sampling, discover, open_media, read_frames
from ..data.synth import KINDS, MASKS, cross_blend, donor_groups, self_blend
from ..engine import Engine, EngineOptions
from ..errors import UsageError
from ..fileio import write_text_atomic
from ..progress import progress_bar
from .common import face_detector


@dataclass
class SynthRequest:
    root: Path
    out: Path
    kinds: tuple[str, ...] = KINDS
    frames: int = 8
    per_frame: int = 1
    seed: int = 0
    group_size: int = 2
    """Input files per donor group (the last group takes the remainder); cross blends stay inside a group."""
    detector: DetectorOptions = field(default_factory=DetectorOptions)
    device: str = "cpu"
    """The face detector's device (resolved by the caller)."""
    mask: str = "hull"
    """``hull``: blend inside the convex hull of the face's 68 landmarks (SBI's mask); ``ellipse``: over the box."""


def _source_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("").as_posix() if path.is_relative_to(root) else path.stem
    return re.sub(r"[^A-Za-z0-9._-]+", "_", rel.replace("/", "__"))[:120]


FoundFace = tuple[str, int, np.ndarray, Face]


def _find_faces(request: SynthRequest, console: Console) -> tuple[list[FoundFace], dict[str, str]]:
    """The best face of each sampled frame of every input file (source name, frame index, frame, face), and the
    files left out with the reason."""
    found = discover([request.root])
    if not found.items:
        raise UsageError(f"no images or videos under {request.root}")
    engine = Engine(None, face_detector(request.detector, request.device, console), EngineOptions(max_faces=1))
    faces: list[FoundFace] = []
    skipped: dict[str, str] = {}
    with progress_bar(console, "files") as progress:
        task = progress.add_task("finding faces", total=len(found.items))
        for item in found.items:
            name = _source_name(item.path, request.root)
            try:
                media = open_media(item, Sampling(frames=request.frames))
                before = len(faces)
                for detected in engine.detect_frames(read_frames(media), still=media.kind == "image"):
                    if detected.faces:
                        frame = detected.frame
                        faces.append((name, frame.index, frame.image, detected.faces[0]))
                if len(faces) == before:
                    skipped[str(item.path)] = "no face found"
            except (MediaError, OSError, cv2.error) as exc:
                skipped[str(item.path)] = str(exc).splitlines()[0]
            progress.advance(task)
    if not faces:
        raise UsageError(f"no faces found in {request.root}")
    return faces, skipped


def _write_forgeries(
    request: SynthRequest, faces: list[FoundFace], console: Console
) -> tuple[dict[str, str], dict[str, int]]:
    """Each real frame and its forgeries, written into its donor group; returns the groups and the counts."""
    rng = np.random.default_rng(request.seed)
    sources = sorted({name for name, *_ in faces})
    if "cross" in request.kinds and len(sources) < 2:
        raise UsageError("cross-identity blends need faces from at least two different files")
    groups = donor_groups(sources, request.group_size, rng)
    donors = {n: [f for f in faces if f[0] != n and groups[f[0]] == groups[n]] for n in sources}
    counts = {"real": 0, **{k: 0 for k in request.kinds}}
    net = load_landmark_net() if request.mask == "hull" else None
    with progress_bar(console, "frames") as progress:
        task = progress.add_task("synthesising", total=len(faces))
        for name, index, image, face in faces:
            real_path = request.out / "real" / groups[name] / name / f"{index:06d}.png"
            real_path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(real_path), image)
            counts["real"] += 1
            fake_dir = request.out / "fake" / groups[name] / name
            fake_dir.mkdir(parents=True, exist_ok=True)
            points = landmarks(net, image, face.box) if net is not None else None
            for k in range(request.per_frame):
                if "sbi" in request.kinds:
                    blend = self_blend(image, face.box, rng, points)
                    cv2.imwrite(str(fake_dir / f"{index:06d}_sbi{k}.png"), blend)
                    counts["sbi"] += 1
                if "cross" in request.kinds:
                    others = donors[name]
                    donor = others[int(rng.integers(len(others)))]
                    blend = cross_blend(image, face.box, donor[2], donor[3].box, rng, points)
                    cv2.imwrite(str(fake_dir / f"{index:06d}_cross{k}.png"), blend)
                    counts["cross"] += 1
            progress.advance(task)
    return groups, counts


def run_synth(request: SynthRequest, console: Console) -> dict[str, Any]:
    bad = [k for k in request.kinds if k not in KINDS]
    if bad:
        raise UsageError(f"unknown forgery kinds {bad}; choose from {', '.join(KINDS)}")
    if request.mask not in MASKS:
        raise UsageError(f"unknown mask {request.mask!r}; choose from {', '.join(MASKS)}")
    faces, skipped = _find_faces(request, console)
    groups, counts = _write_forgeries(request, faces, console)
    sources = sorted(groups)
    summary = {
        "sources": len(sources),
        "groups": {g: sorted(n for n in sources if groups[n] == g) for g in sorted(set(groups.values()))},
        "written": counts,
        "skipped": skipped,
        "request": {**asdict(request), "root": str(request.root), "out": str(request.out)},
        "prepare": f"gmdf prepare --domain folder --root {request.out} --group-by '^[^/]+' --out CACHE",
    }
    write_text_atomic(request.out / "synth.json", json.dumps(summary, indent=2))
    return summary
