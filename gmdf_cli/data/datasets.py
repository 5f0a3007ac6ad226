"""The standard deepfake datasets in their official layouts -> a list of labelled sources (videos, images, frame
folders) with a split. Splits go by video and identity, never by frame: a person's real video and the fakes made
from it always land in the same split.

Registry: ``LAYOUTS[name](root, options) -> list[Source]``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError
from .media import IMAGE_EXTENSIONS, MEDIA_EXTENSIONS, VIDEO_EXTENSIONS, walk_files

REAL, FAKE = 0, 1
SPLITS = ("train", "val", "test")
FRAME_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})


@dataclass(frozen=True)
class Source:
    domain: str
    video_id: str
    """Unique within the domain (a path, not a bare file name: different videos may share a name)."""
    label: int
    split: str
    kind: str  # "video" | "image" | "frames"
    path: Path
    identity: str
    frames: tuple[str, ...] = ()
    """For kind "frames" given as an explicit list (DeepfakeBench JSON)."""


@dataclass(frozen=True)
class LayoutOptions:
    domain: str
    compression: str = "c23"
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0
    group_by: str | None = None
    """Folder layout: a regex whose first match in the file's path below real/ or fake/ is the identity
    (default: the file's stem)."""
    json_file: Path | None = None
    methods: tuple[str, ...] = field(default_factory=tuple)
    pairs: Path | None = None
    """Folder layout: a CSV with columns ``fake,real`` (paths below fake/ and real/) naming the real each fake was
    made from; a listed fake takes its real's identity, so the two always land in the same split."""


def hashed_split(key: str, options: LayoutOptions, allowed: tuple[str, ...] = SPLITS) -> str:
    """Deterministic split of an identity key: train / val / test by its hash (seeded)."""
    value = int(hashlib.sha256(f"{options.seed}:{key}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    test = options.test_fraction if "test" in allowed else 0.0
    if value < test:
        return "test"
    if value < test + options.val_fraction and "val" in allowed:
        return "val"
    return "train"


def _media_under(folder: Path, extensions: frozenset[str] = MEDIA_EXTENSIONS) -> list[Path]:
    return [p for p in walk_files(folder) if p.suffix.lower() in extensions] if folder.is_dir() else []


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise UsageError(f"{what} not found: expected {path}")
    return path


def read_pairs(path: Path, root: Path) -> dict[str, str]:
    """A pairs file -> {fake path below fake/: real path below real/}; every named file must exist."""
    _require(path, "the pairs file")
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if not {"fake", "real"} <= set(reader.fieldnames or ()):
                raise UsageError(f"the pairs file {path} needs a header with the columns fake and real")
            pairs = {row["fake"].strip(): row["real"].strip() for row in reader}
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"cannot read the pairs file {path}: {exc}") from None
    missing = [f"fake/{f}" for f in pairs if not (root / "fake" / f).is_file()]
    missing += [f"real/{r}" for r in set(pairs.values()) if not (root / "real" / r).is_file()]
    if missing:
        raise UsageError(f"the pairs file {path} names {len(missing)} file(s) not under {root}, e.g. {missing[0]}")
    return pairs


def folder_layout(root: Path, options: LayoutOptions) -> list[Source]:
    """``ROOT/real/...`` and ``ROOT/fake/...``: videos, images, or folders of frames, at any depth (with a pairs
    file, a fake shares the split of the real it was made from)."""
    pattern = re.compile(options.group_by) if options.group_by else None

    def identity_of(below: str) -> str:
        match = pattern.search(below) if pattern else None
        return match.group(0) if match else Path(below).stem

    made_from = read_pairs(options.pairs, root) if options.pairs else {}
    sources = []
    for label, sub in ((REAL, "real"), (FAKE, "fake")):
        folder = _require(root / sub, f"the {sub}/ folder of {root}")
        for path in _media_under(folder):
            rel = path.relative_to(root).with_suffix("").as_posix()
            below = path.relative_to(folder).as_posix()
            identity = identity_of(made_from[below] if label == FAKE and below in made_from else below)
            kind = "video" if path.suffix.lower() in VIDEO_EXTENSIONS else "image"
            sources.append(Source(options.domain, rel, label, hashed_split(identity, options), kind, path, identity))
    return sources


def _ff_splits(root: Path) -> dict[str, str]:
    folder = root / "splits"
    split_of: dict[str, str] = {}
    for split in SPLITS:
        pairs = json.loads(_require(folder / f"{split}.json", "FaceForensics++ split file").read_text())
        for a, b in pairs:
            for key in (a, b, f"{a}_{b}", f"{b}_{a}"):
                split_of[key] = split
    return split_of


def ff_layout(root: Path, options: LayoutOptions) -> list[Source]:
    """FaceForensics++: ``original_sequences/youtube/<c>/videos/NNN.mp4`` (real) and
    ``manipulated_sequences/<method>/<c>/videos/NNN_MMM.mp4`` (fake), split by the official ``splits/*.json``."""
    split_of = _ff_splits(root)
    comp = options.compression
    sources = []
    reals = _require(root / "original_sequences" / "youtube" / comp / "videos", "FaceForensics++ real videos")
    for path in _media_under(reals, VIDEO_EXTENSIONS):
        if path.stem in split_of:
            sources.append(
                Source(options.domain, f"youtube/{path.stem}", REAL, split_of[path.stem], "video", path, path.stem)
            )
    manipulated = _require(root / "manipulated_sequences", "FaceForensics++ manipulated_sequences/")
    for method_dir in sorted(p for p in manipulated.iterdir() if p.is_dir()):
        if options.methods and method_dir.name not in options.methods:
            continue
        for path in _media_under(method_dir / comp / "videos", VIDEO_EXTENSIONS):
            if path.stem in split_of:
                target = path.stem.split("_")[0]
                sources.append(
                    Source(
                        options.domain,
                        f"{method_dir.name}/{path.stem}",
                        FAKE,
                        split_of[path.stem],
                        "video",
                        path,
                        target,
                    )
                )
    return sources


def celeb_layout(root: Path, options: LayoutOptions) -> list[Source]:
    """Celeb-DF v2: ``Celeb-real/``, ``YouTube-real/`` (real), ``Celeb-synthesis/`` (fake); the videos listed in
    ``List_of_testing_videos.txt`` are the test split, the rest is split into train/val by identity (``idN``)."""
    listing = _require(root / "List_of_testing_videos.txt", "Celeb-DF test list")
    test = {line.split()[1] for line in listing.read_text().splitlines() if len(line.split()) == 2}
    sources = []
    for sub, label in (("Celeb-real", REAL), ("YouTube-real", REAL), ("Celeb-synthesis", FAKE)):
        folder = root / sub
        if not folder.is_dir():
            if sub == "YouTube-real":
                continue
            _require(folder, f"Celeb-DF {sub}/")
        for path in _media_under(folder, VIDEO_EXTENSIONS):
            rel = f"{sub}/{path.name}"
            identity = path.stem.split("_")[0] if sub != "YouTube-real" else f"yt{path.stem}"
            split = "test" if rel in test else hashed_split(identity, options, ("train", "val"))
            sources.append(Source(options.domain, f"{sub}/{path.stem}", label, split, "video", path, identity))
    return sources


def dfdc_layout(root: Path, options: LayoutOptions) -> list[Source]:
    """DFDC: training parts with ``metadata.json`` ({file: {label: REAL|FAKE, original}}) and the test set's
    ``labels.csv`` (filename,label with 1 = fake) beside its videos."""
    sources = []
    metas = sorted(root.rglob("metadata.json"))
    tests = sorted(root.rglob("labels.csv"))
    if not metas and not tests:
        raise UsageError(f"no DFDC metadata.json or labels.csv under {root}")
    for meta in metas:
        entries = json.loads(meta.read_text())
        for name, info in sorted(entries.items()):
            path = meta.parent / name
            if not path.is_file():
                continue
            label = FAKE if str(info.get("label", "")).upper() == "FAKE" else REAL
            identity = Path(info.get("original") or name).stem
            video_id = f"{meta.parent.name}/{Path(name).stem}"
            sources.append(
                Source(
                    options.domain,
                    video_id,
                    label,
                    hashed_split(identity, options, ("train", "val")),
                    "video",
                    path,
                    identity,
                )
            )
    for labels in tests:
        with labels.open(newline="") as fh:
            for row in csv.DictReader(fh):
                path = labels.parent / row["filename"]
                if path.is_file():
                    video_id = f"test/{Path(row['filename']).stem}"
                    sources.append(
                        Source(options.domain, video_id, int(float(row["label"])), "test", "video", path, video_id)
                    )
    return sources


def _frame_folders(folder: Path) -> list[Path]:
    """Folders that directly hold frame images."""
    return sorted({p.parent for p in walk_files(folder) if p.suffix.lower() in FRAME_EXTENSIONS})


def wdf_layout(root: Path, options: LayoutOptions) -> list[Source]:
    """WildDeepfake: frame sequences in ``{real,fake}_{train,test}/<video>/...`` (or ``{real,fake}/{train,test}/``).
    Every folder holding frames is one sequence; the video id is its path."""
    sources = []
    for label, name in ((REAL, "real"), (FAKE, "fake")):
        for split in ("train", "test"):
            folder = next((f for f in (root / f"{name}_{split}", root / name / split) if f.is_dir()), None)
            if folder is None:
                raise UsageError(f"WildDeepfake folder not found: expected {root / f'{name}_{split}'}")
            for seq in _frame_folders(folder):
                rel = seq.relative_to(root).as_posix()
                video = seq.relative_to(folder).parts[0]
                chosen = split if split == "test" else hashed_split(f"{name}/{video}", options, ("train", "val"))
                sources.append(Source(options.domain, rel, label, chosen, "frames", seq, f"{name}/{video}"))
    return sources


DFF_FAKES = ("inpainting", "insight", "text2img")


def dff_layout(root: Path, options: LayoutOptions) -> list[Source]:
    """DeepFakeFace: real ``wiki/`` images and fakes in ``inpainting/``, ``insight/``, ``text2img/`` that mirror
    wiki's relative paths; a real image and its fakes share a split."""
    sources = []
    for sub, label in (("wiki", REAL), *((f, FAKE) for f in DFF_FAKES)):
        folder = root / sub
        if not folder.is_dir():
            if sub == "wiki":
                _require(folder, "DeepFakeFace wiki/")
            continue
        for path in _media_under(folder, IMAGE_EXTENSIONS):
            key = path.relative_to(folder).with_suffix("").as_posix()
            sources.append(
                Source(options.domain, f"{sub}/{key}", label, hashed_split(key, options), "image", path, key)
            )
    return sources


def deepfakebench_layout(root: Path, options: LayoutOptions) -> list[Source]:
    """DeepfakeBench's dataset JSON: ``{dataset: {label_name: {split: {video: {"label", "frames": [...]}}}}}``;
    frame paths are relative to ``root``. Label names containing "real" are real, all others fake."""
    if options.json_file is None:
        raise UsageError("the deepfakebench layout needs --json FILE (a DeepfakeBench dataset JSON)")
    data = json.loads(_require(options.json_file, "DeepfakeBench JSON").read_text())
    sources = []
    for dataset in data.values():
        for label_name, splits in dataset.items():
            label = REAL if "real" in label_name.lower() else FAKE
            for split, videos in splits.items():
                chosen = {"train": "train", "val": "val", "test": "test"}.get(split, "train")
                for video, info in sorted(videos.items()) if isinstance(videos, dict) else []:
                    frames = tuple(info.get("frames", []))
                    if frames:
                        sources.append(
                            Source(
                                options.domain, f"{label_name}/{video}", label, chosen, "frames", root, video, frames
                            )
                        )
    return sources


LAYOUTS: dict[str, Callable[[Path, LayoutOptions], list[Source]]] = {
    "ff": ff_layout,
    "celeb": celeb_layout,
    "dfdc": dfdc_layout,
    "wdf": wdf_layout,
    "dff": dff_layout,
    "folder": folder_layout,
    "deepfakebench": deepfakebench_layout,
}
"""Dataset layouts by name. The domain name defaults to the layout's; `folder` and `deepfakebench` take any."""


def list_sources(layout: str, root: Path, options: LayoutOptions) -> list[Source]:
    if layout not in LAYOUTS:
        raise UsageError(f"unknown dataset layout {layout!r}; known: {', '.join(LAYOUTS)}")
    if not root.is_dir():
        raise UsageError(f"dataset root is not a folder: {root}")
    sources = LAYOUTS[layout](root, options)
    if not sources:
        raise UsageError(f"no videos or images found for layout {layout!r} under {root}")
    return sources
