"""Model zoo and weights I/O: names -> Hub files, huggingface_hub downloads, sha256 checks, safetensors only.

A ``--weights`` value is one of: a local file path, ``hf-hub:org/repo[/path/in/repo.safetensors]``, or a zoo name.
Zoo entries are built in (``ZOO``) or added by a JSON file named in ``$GMDF_ZOO``:
``{"name": {"repo_id": "org/repo", "filename": "model.safetensors", "revision": "<commit>", "sha256": "<hex>",
"config": "vit-b-16", "description": "..."}}``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from . import __version__
from .device import PRECISIONS, configure, resolve_device
from .errors import WeightsError
from .fileio import atomic_path, sha256_file
from .model import GMDF, GMDFConfig, build_model

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "weights"
"""The repository's ``weights/`` folder, where the shipped default detector lives."""
DEFAULT_HUB_FILENAME = "model.safetensors"
FORMAT = "gmdf"


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
    """File name inside the shipped ``weights/`` folder, when the entry ships with gmdf."""

    @property
    def hub_location(self) -> str:
        return f"{self.repo_id}/{self.filename}@{self.revision}" if self.repo_id else "-"


DEFAULT_WEIGHTS = "gmdf-cnn-small-dev"
"""The detector `gmdf scan` uses without ``--weights``: trained on the CPU from the development media, shipped in
``weights/`` (its card is weights/README.md)."""
ZOO: dict[str, ZooEntry] = {
    DEFAULT_WEIGHTS: ZooEntry(
        name=DEFAULT_WEIGHTS,
        config="cnn-small",
        description="default: GM-DF on a small CLIP-ResNet tower, trained here on the dev media (research use only)",
        sha256="840ea73c7d5ed5f502ed70ea372c6c747a020693712e36f62ea01e6486371bff",
        local="gmdf-cnn-small-dev.safetensors",
    )
}
"""Built-in entries (``$GMDF_ZOO`` adds more)."""


def zoo() -> dict[str, ZooEntry]:
    """Built-in entries plus those of the ``$GMDF_ZOO`` JSON file (which win on a name clash)."""
    entries = dict(ZOO)
    extra = os.environ.get("GMDF_ZOO")
    if extra:
        try:
            raw = json.loads(Path(extra).read_text(encoding="utf-8"))
            for name, spec in raw.items():
                entries[name] = ZooEntry(name=name, **spec)
        except (OSError, ValueError, TypeError) as exc:
            raise WeightsError(f"cannot read the zoo file GMDF_ZOO={extra}: {exc}") from None
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
        parts = spec[len("hf-hub:") :].strip("/").split("/")
        if len(parts) < 2 or not all(parts):
            raise WeightsError(f"bad Hub reference {spec!r}; expected hf-hub:org/repo[/file.safetensors]")
        repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:]) or DEFAULT_HUB_FILENAME
        revision = "main"
        if "@" in filename:
            filename, revision = filename.split("@", 1)
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
    if any(sep in spec for sep in ("/", "\\")) or spec.endswith(".safetensors"):
        raise WeightsError(f"weights file not found: {spec}")
    known = ", ".join(sorted(entries)) or "none registered"
    raise WeightsError(f"unknown weights {spec!r}: not a file, not hf-hub:org/repo, not a zoo name ({known})")


def cached_path(entry: ZooEntry) -> Path | None:
    """Where a zoo entry lies on this machine (shipped folder or Hub cache), or None."""
    if entry.local and (SHIPPED_DIR / entry.local).is_file():
        return SHIPPED_DIR / entry.local
    if not entry.repo_id:
        return None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(entry.repo_id, entry.filename, revision=entry.revision)
    return Path(found) if isinstance(found, str) else None


# -- safetensors checkpoints ---------------------------------------------------------------------------------------


def save_checkpoint(
    model: GMDF,
    path: str | os.PathLike[str],
    metadata: dict[str, str] | None = None,
    half: bool = False,
    text_tower: bool = True,
) -> Path:
    """Write ``model`` as safetensors with its config in the metadata, atomically. Prompt features are cached
    first, so a file saved without its text tower (``text_tower=False``) still scores images."""
    model.cache_text_features()
    state = {}
    for key, value in model.state_dict().items():
        if not text_tower and key.startswith("text."):
            continue
        tensor = value.detach().to("cpu").contiguous()
        if half and tensor.is_floating_point():
            tensor = tensor.half()
        state[key] = tensor
    meta = {
        "format": FORMAT,
        "gmdf_version": __version__,
        "config": model.config.to_json(),
        "text_tower": "1" if text_tower and model.text is not None else "0",
        **(metadata or {}),
    }
    target = Path(path)
    with atomic_path(target) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return target


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise WeightsError(f"{path} is not a readable safetensors file ({str(exc).splitlines()[0]})") from None
    if meta.get("format") != FORMAT or "config" not in meta:
        raise WeightsError(f"{path} is a safetensors file but not a gmdf checkpoint (no gmdf model config inside)")
    return meta


def load_checkpoint(
    path: str | os.PathLike[str],
    expect: GMDFConfig | None = None,
    device: str | torch.device = "cpu",
    inference: bool = False,
    dtype: torch.dtype = torch.float32,
) -> tuple[GMDF, dict[str, str]]:
    """Rebuild the model from the config stored in the file and load its tensors (no unpickling, ever).

    ``expect``: raise a clear error when the file holds a different architecture than this config.
    ``inference``: skip the text tower when the file carries cached prompt features, and build on the meta device
    so no memory is spent on random weights that are overwritten at once.
    """
    meta = read_metadata(path)
    try:
        cfg = GMDFConfig.from_json(meta["config"])
    except (ValueError, TypeError, KeyError) as exc:
        raise WeightsError(f"{path}: unreadable model config in metadata ({exc})") from None
    if expect is not None and _shape_fields(cfg) != _shape_fields(expect):
        raise WeightsError(
            f"{path} holds a {cfg.name!r} model with domains {list(cfg.domains)}, "
            f"not the expected {expect.name!r} with domains {list(expect.domains)}"
        )
    with safe_open(str(path), framework="pt") as fh:
        keys = set(fh.keys())
        cached = "text_cached" in keys and bool(fh.get_tensor("text_cached"))
    lean = inference and cached
    if lean:
        with torch.device("meta"):
            model = build_model(cfg)
    else:
        model = build_model(cfg)
    if meta.get("text_tower") == "0" or lean:
        model.text = None
    own = model.state_dict()
    missing = sorted(set(own) - keys)
    unexpected = sorted(k for k in keys - set(own) if not (lean and k.startswith("text.")))
    if missing or unexpected:
        detail = (f"missing {missing[:3]}" if missing else "") + (f" unexpected {unexpected[:3]}" if unexpected else "")
        raise WeightsError(f"{path} does not match its own config {cfg.name!r}: {detail.strip()}")

    def checked(tensor: torch.Tensor, key: str) -> torch.Tensor:
        if tensor.shape != own[key].shape:
            raise WeightsError(
                f"{path}: tensor {key} has shape {tuple(tensor.shape)}, the config wants {tuple(own[key].shape)}"
            )
        return tensor

    state = {}
    if dtype == torch.float32:  # zero-copy views of one mapping: paged in lazily, shared with the page cache
        with safe_open(str(path), framework="pt") as fh:
            for key in own:
                state[key] = checked(fh.get_tensor(key), key).to(own[key].dtype)
    else:  # converting: one short-lived mapping per tensor and owned copies, so the file's pages never all sit
        for key in own:  # in memory beside the converted weights
            with safe_open(str(path), framework="pt") as fh:
                tensor = checked(fh.get_tensor(key), key)
            wanted = dtype if own[key].is_floating_point() else own[key].dtype
            state[key] = tensor.to(wanted) if tensor.dtype != wanted else tensor.clone()
            del tensor
    model.load_state_dict(state, assign=lean)
    model.to(device=device, dtype=dtype)
    model.train(False)
    return model, meta


def _shape_fields(cfg: GMDFConfig) -> str:
    return cfg.replace(name="-").to_json()


def load_weights(
    spec: str, device: str | torch.device = "cpu", precision: str = "fp32"
) -> tuple[GMDF, ResolvedWeights, dict[str, str]]:
    """Resolve a ``--weights`` value and load the model ready for inference (no text tower), with the file's
    metadata (which may carry a calibrated decision ``threshold``). ``device``: ``auto``, ``cpu``, ``cuda:1``, ...
    ``precision`` ``bf16``/``fp16`` loads the weights straight into that type: half the memory, and much faster on
    GPUs and on CPUs with native bf16 (AVX512-BF16, AMX)."""
    resolved = resolve_weights(spec)
    target = resolve_device(device)
    configure(target, precision)
    model, meta = load_checkpoint(resolved.path, device=target, inference=True, dtype=PRECISIONS[precision])
    model.drop_text_tower()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, resolved, meta


def export_weights(
    source: str,
    target: str | os.PathLike[str],
    half: bool = True,
    text_tower: bool = False,
    threshold: float | None = None,
) -> ResolvedWeights:
    """Re-save a checkpoint for shipping: fp16 and without the text tower by default (the prompt features it would
    compute are cached in the file), optionally with a decision ``threshold`` in the metadata. The training record
    in the metadata is kept."""
    resolved = resolve_weights(source)
    model, meta = load_checkpoint(resolved.path)
    extra = {k: v for k, v in meta.items() if k not in ("format", "gmdf_version", "config", "text_tower")}
    if threshold is not None:
        extra["threshold"] = repr(float(threshold))
    path = save_checkpoint(model, target, metadata=extra, half=half, text_tower=text_tower)
    return ResolvedWeights(path, path.name, sha256_file(path), "local")
