"""The model zoo: names -> shipped files or Hub files, huggingface_hub downloads, sha256 checks.

A ``--weights`` value is one of: a local file path, ``hf-hub:org/repo[/path/in/repo.safetensors]``, or a zoo name.
Zoo entries are built in (``ZOO``) or added by a JSON file named in ``$GMDF_ZOO``:
``{"name": {"repo_id": "org/repo", "filename": "model.safetensors", "revision": "<commit>", "sha256": "<hex>",
"config": "vit-b-16", "description": "..."}}``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError, WeightsError
from ..fileio import sha256_file

SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"
"""Package data: the shipped default detector and its card (``CARD.md``), installed with gmdf (wheel or not)."""
DEFAULT_HUB_FILENAME = "model.safetensors"


@dataclass(frozen=True)
class ZooEntry:
    name: str
    config: str
    description: str
    sha256: str
    repo_id: str | None = None
    filename: str = DEFAULT_HUB_FILENAME
    revision: str = "main"
    local: str | None = None
    """File name inside ``SHIPPED_DIR``, when the entry ships with gmdf."""

    @property
    def hub_location(self) -> str:
        return f"{self.repo_id}/{self.filename}@{self.revision}" if self.repo_id else "-"


DEFAULT_WEIGHTS = "gmdf-mnv2-dev"
"""The detector `gmdf scan` uses without ``--weights``: GM-DF on the ImageNet MobileNetV2 tower, trained on the CPU
from the development media, shipped in the package (its card is gmdf_cli/weights/shipped/CARD.md)."""
ZOO: dict[str, ZooEntry] = {
    DEFAULT_WEIGHTS: ZooEntry(
        name=DEFAULT_WEIGHTS,
        config="mnv2",
        description="default: GM-DF on an ImageNet MobileNetV2, trained here on the dev media (research use only)",
        sha256="6e92f8b46278cbc8a964f11eef695cf25473fae6c24312cd5e611cc1d531d8e2",
        local="gmdf-mnv2-dev.safetensors",
    )
}
"""Built-in entries (``$GMDF_ZOO`` adds more)."""


SHA256 = re.compile(r"^[0-9a-f]{64}$")
ENTRY_TEXT = ("config", "description", "repo_id", "filename", "revision")


def _entry(name: Any, spec: Any, where: str) -> ZooEntry:
    """One ``$GMDF_ZOO`` entry, checked: a Hub file with a pinned sha256 (a zoo entry never names a local file, so
    it can never pass for the shipped detector), a repository and file name huggingface_hub accepts, every field
    text of sane length. Refused as usage errors (exit 2), as an unreadable zoo file is: the user wrote it."""
    if not isinstance(name, str) or not 0 < len(name) <= 100:
        raise UsageError(f"{where}: entry names must be text of 1-100 characters")
    if name in ZOO:
        raise UsageError(f"{where}: {name!r} is a built-in entry and cannot be redefined; choose another name")
    if not isinstance(spec, dict):
        raise UsageError(f"{where}: entry {name!r} must be an object")
    unknown = set(spec) - {"sha256", *ENTRY_TEXT}
    if unknown or not {"config", "repo_id", "sha256"} <= set(spec):
        raise UsageError(f"{where}: entry {name!r} needs repo_id, config and sha256 (and may have {ENTRY_TEXT})")
    sha = spec["sha256"]
    if not isinstance(sha, str) or not SHA256.match(sha.lower()):
        raise UsageError(f"{where}: entry {name!r} needs the sha256 of its file (64 hex digits): it is verified")
    for key in ENTRY_TEXT:
        if key in spec and (not isinstance(spec[key], str) or len(spec[key]) > 500):
            raise UsageError(f"{where}: entry {name!r}: {key} must be text")
    problem = hub_problem(spec["repo_id"], spec.get("filename", DEFAULT_HUB_FILENAME))
    if problem:
        raise UsageError(f"{where}: entry {name!r}: {problem}")
    return ZooEntry(name=name, **{"description": "", **spec, "sha256": sha.lower()})


def hub_problem(repo_id: str, filename: str) -> str | None:
    """Why ``repo_id`` and ``filename`` cannot name a Hub file (huggingface_hub's own repo-id rules; a file path
    inside the repository, never outside it), or None when they can."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        return (
            f"bad Hub repository {repo_id!r}: expected org/repo, letters, digits, '-', '_' and '.' "
            "(not first or last), at most 96 characters"
        )
    parts = filename.split("/")
    if filename.startswith("/") or "\\" in filename or not all(parts) or ".." in parts or "." in parts:
        return f"bad file name {filename!r} inside a Hub repository: a relative path without '..', '.' or '\\'"
    return None


def zoo() -> dict[str, ZooEntry]:
    """Built-in entries plus those of the ``$GMDF_ZOO`` JSON file (which may add entries, never replace one)."""
    entries = dict(ZOO)
    extra = os.environ.get("GMDF_ZOO")
    if extra:
        where = f"the zoo file GMDF_ZOO={extra}"
        try:
            raw = json.loads(Path(extra).read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:
            raise UsageError(f"cannot read {where}: {str(exc)[:200]}") from None
        if not isinstance(raw, dict):
            raise UsageError(f"{where} must hold one JSON object of entries")
        for name, spec in raw.items():
            entries[name] = _entry(name, spec, where)
    return entries


@dataclass(frozen=True)
class ResolvedWeights:
    """A weights file on disk and where it came from."""

    path: Path
    name: str
    sha256: str
    source: str  # "local" | "shipped" | "hub"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path)}


def _hub_download(repo_id: str, filename: str, revision: str) -> Path:
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{repo_id}/{filename}@{revision}"
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename, revision=revision))
    except LocalEntryNotFoundError:
        raise WeightsError(
            f"{where} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and the Hub cannot be reached"
            + (" (HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE else "")
            + "; download it where there is internet or pass --weights PATH"
        ) from None
    except RepositoryNotFoundError:
        raise WeightsError(f"Hub repository {repo_id!r} not found (or private)") from None
    except RevisionNotFoundError:
        raise WeightsError(f"revision {revision!r} not found in Hub repository {repo_id!r}") from None
    except EntryNotFoundError:
        raise WeightsError(f"file {filename!r} not found in Hub repository {repo_id!r} at {revision!r}") from None
    except (HfHubHTTPError, OSError) as exc:
        raise WeightsError(f"download of {where} failed: {str(exc).splitlines()[0]}") from None


def _verified(path: Path, expected: str, what: str) -> str:
    actual = sha256_file(path)
    if expected and actual != expected.lower():
        raise WeightsError(
            f"sha256 mismatch for {what} at {path}: expected {expected[:16]}..., got {actual[:16]}...; "
            "the file is corrupt or was altered, delete it and download again"
        )
    return actual


def resolve_weights(spec: str, download: bool = True) -> ResolvedWeights:
    """Turn a ``--weights`` value into a verified file on disk (downloading through huggingface_hub if needed)."""
    local = Path(spec).expanduser()
    if local.is_file():
        return ResolvedWeights(local, local.name, sha256_file(local), "local")
    if spec.startswith("hf-hub:"):
        repo_id, filename, revision = _hub_reference(spec, WeightsError)
        problem = hub_problem(repo_id, filename)
        if problem:
            raise WeightsError(f"{spec}: {problem}")
        path = _hub_download(repo_id, filename, revision)
        return ResolvedWeights(path, spec, sha256_file(path), "hub")
    entries = zoo()
    if spec in entries:
        entry = entries[spec]
        if entry.local and (SHIPPED_DIR / entry.local).is_file():
            path = SHIPPED_DIR / entry.local
            return ResolvedWeights(path, entry.name, _verified(path, entry.sha256, entry.name), "shipped")
        if not entry.repo_id:
            raise WeightsError(f"zoo entry {spec!r} has no shipped file at {SHIPPED_DIR} and no Hub location")
        if not download:
            found = cached_path(entry)
            if found is None:
                raise WeightsError(f"{spec!r} is not downloaded yet; run `gmdf weights download {spec}`")
            path = found
        else:
            path = _hub_download(entry.repo_id, entry.filename, entry.revision)
        return ResolvedWeights(path, entry.name, _verified(path, entry.sha256, entry.name), "hub")
    raise WeightsError(_unknown(spec, entries))


def _hub_reference(spec: str, error: type[Exception]) -> tuple[str, str, str]:
    """``hf-hub:org/repo[/path/file.safetensors][@revision]`` -> (repo_id, filename, revision); ``error`` else."""
    parts = spec[len("hf-hub:") :].strip("/").split("/")
    if len(parts) < 2 or not all(parts):
        raise error(f"bad Hub reference {spec!r}; expected hf-hub:org/repo[/file.safetensors]")
    repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:]) or DEFAULT_HUB_FILENAME
    revision = "main"
    if len(parts) == 2 and "@" in repo_id:  # hf-hub:org/repo@revision
        repo_id, revision = repo_id.split("@", 1)
    elif "@" in filename:
        filename, revision = filename.split("@", 1)
    return repo_id, filename, revision


def _unknown(spec: str, entries: dict[str, ZooEntry]) -> str:
    """Why a ``--weights`` value that is no file, no Hub reference and no zoo name cannot be used."""
    if any(sep in spec for sep in ("/", "\\")) or spec.endswith(".safetensors"):
        return f"weights file not found: {spec}"
    known = ", ".join(sorted(entries)) or "none registered"
    return f"unknown weights {spec!r}: not a file, not hf-hub:org/repo, not a zoo name ({known})"


def cached_path(entry: ZooEntry) -> Path | None:
    """Where a zoo entry lies on this machine (shipped folder or Hub cache), or None."""
    if entry.local and (SHIPPED_DIR / entry.local).is_file():
        return SHIPPED_DIR / entry.local
    if not entry.repo_id:
        return None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(entry.repo_id, entry.filename, revision=entry.revision)
    return Path(found) if isinstance(found, str) else None


def check_spec(spec: str) -> None:
    """Fail early, without torch and without any download, on a ``--weights`` value that cannot work: a file path
    that does not exist (or is a folder), a Hub reference that huggingface_hub would refuse, a name the zoo does not
    know; the zoo file's entries are checked on the way. ``resolve_weights`` says the same things, later, as weights
    errors."""
    entries = zoo()
    local = Path(spec).expanduser()
    if local.is_file() or spec in entries:
        return
    if local.is_dir():
        raise UsageError(f"--weights {spec}: a folder, not a .safetensors file")
    if spec.startswith("hf-hub:"):
        repo_id, filename, _ = _hub_reference(spec, UsageError)
        problem = hub_problem(repo_id, filename)
        if problem:
            raise UsageError(f"--weights {spec}: {problem}")
        return
    raise UsageError(_unknown(spec, entries))
