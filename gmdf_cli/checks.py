"""Usage checks made before anything heavy loads: output paths that could never be written, dataset folders of the
wrong shape. Each failure is one ``UsageError`` line (exit 2). Nothing here creates, opens for writing or deletes a
file, and nothing imports more than the standard library: the CLI runs these while it parses its options."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import UsageError

VIRTUAL_FILESYSTEMS = frozenset(
    {"proc", "sysfs", "cgroup", "cgroup2", "devpts", "debugfs", "tracefs", "securityfs", "configfs", "pstore", "bpf"}
)
"""Kernel filesystems that take no new files whoever asks (root included, whom permission bits never stop)."""
MOUNTS = Path("/proc/self/mounts")


def _existing_ancestor(path: Path) -> Path:
    """``path`` itself or its nearest ancestor that exists (the current folder for a relative path's top)."""
    current = Path(os.path.abspath(path))
    while not os.path.exists(current) and current != current.parent:  # False, not an error, where a stat fails
        current = current.parent
    return current


def _filesystem_type(path: Path) -> str | None:
    """The type of the filesystem holding ``path``, from the longest mount point above it (Linux); None elsewhere."""
    try:
        lines = MOUNTS.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    real, best, kind = Path(os.path.realpath(path)), None, None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = Path(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[1]))  # \040 is a space
        if real.is_relative_to(point) and (best is None or len(point.parts) > len(best.parts)):
            best, kind = point, fields[2]
    return kind


def _why_not_writable(folder: Path) -> str | None:
    """Why no file can be made in the existing ``folder``, or None when one can."""
    if not os.path.isdir(folder):
        return f"{folder} is a file, not a folder"
    kind = _filesystem_type(folder)
    if kind in VIRTUAL_FILESYSTEMS:
        return f"{folder} is on the kernel's {kind} filesystem, which takes no files"
    try:
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False  # unknown: the permission bits below still speak
    if read_only:
        return f"{folder} is on a read-only filesystem"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{folder} is not writable"
    return None


def writable_folder(path: Path, option: str) -> Path:
    """An output folder (``--out``) that exists and can be written to, or that can be made: its nearest existing
    ancestor is a writable folder. Returns ``path``; raises a one-line ``UsageError`` naming ``option`` else."""
    found = _existing_ancestor(path)
    why = _why_not_writable(found)
    if why and found == Path(os.path.abspath(path)) and not os.path.isdir(found):
        why = "it is a file, not a folder"
    if why:
        raise UsageError(f"{option} {path}: {why}; choose another folder")
    return path


def writable_file(path: Path, option: str) -> Path:
    """An output file (``--csv``, an export target) that can be written: an existing file (or device, such as
    /dev/null) open to writing, or a new name in a folder that exists or can be made."""
    if os.path.isdir(path):
        raise UsageError(f"{option} {path}: it is a folder, not a file")
    if os.path.exists(path):
        if not os.access(path, os.W_OK):
            raise UsageError(f"{option} {path}: the file is not writable; choose another name")
        return path
    found = _existing_ancestor(path.parent)
    why = _why_not_writable(found)
    if why:
        raise UsageError(f"{option} {path}: {why}; choose another place")
    return path


def labelled_folder(data: Path) -> Path:
    """`gmdf robustness` DATA: a prepared cache (``index.csv``) or a folder with ``real/`` and ``fake/``."""
    if (data / "index.csv").is_file():
        return data
    missing = [sub for sub in ("real", "fake") if not (data / sub).is_dir()]
    if missing:
        lacks = " and ".join(f"{sub}/" for sub in missing)
        raise UsageError(f"{data} is neither a folder with real/ and fake/ (it lacks {lacks}) nor a prepared cache")
    return data
