"""Weights I/O: safetensors only (never unpickled), the model config in the metadata, loading for inference."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..device import PRECISIONS, configure, resolve_device
from ..errors import WeightsError
from ..fileio import atomic_path, sha256_file
from ..model import GMDF, GMDFConfig, build_model
from ..version import __version__
from .card import read_card, read_decision, read_training
from .header import FORMAT, read_config, read_metadata
from .registry import ResolvedWeights, resolve_weights

META_BUILD_BYTES = 64 << 20
"""Above this file size a model is built on the meta device before its tensors are assigned in: no memory for
random weights overwritten at once (a ViT-B's 350 MB). Below it, building them costs less than the meta device's
first arithmetic, which imports torch._dynamo (2 s of a start-up on 2 cores)."""


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


def load_checkpoint(
    path: str | os.PathLike[str],
    expect: GMDFConfig | None = None,
    device: str | torch.device = "cpu",
    inference: bool = False,
    dtype: torch.dtype = torch.float32,
) -> tuple[GMDF, dict[str, str]]:
    """Rebuild the model from the config stored in the file and load its tensors (no unpickling, ever).

    ``expect``: raise a clear error when the file holds a different architecture than this config.
    ``inference``: build the image tower alone when the file carries cached prompt features (no text tower, no
    tokenizer), on the meta device for a large file so no memory is spent on random weights overwritten at once.
    """
    meta = read_metadata(path)
    cfg = read_config(path, meta)
    if expect is not None and _shape_fields(cfg) != _shape_fields(expect):
        raise WeightsError(
            f"{path} holds a {cfg.name!r} model with domains {list(cfg.domains)}, "
            f"not the expected {expect.name!r} with domains {list(expect.domains)}"
        )
    with safe_open(str(path), framework="pt") as fh:
        keys = set(fh.keys())
        cached = "text_cached" in keys and bool(fh.get_tensor("text_cached"))
    lean = inference and cached  # the image tower alone; the file's tensors are assigned in
    if lean and Path(path).stat().st_size > META_BUILD_BYTES:
        with torch.device("meta"):
            model = build_model(cfg, text=False)
    else:
        model = build_model(cfg, text=not lean)
    if meta.get("text_tower") == "0":  # a lean build has no text tower to drop
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
    bad = next((k for k, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())), None)
    if bad is not None:
        raise WeightsError(f"{path}: tensor {bad} holds values that are not finite (NaN or infinity)")
    model.load_state_dict(state, assign=lean)
    model.to(device=device, dtype=dtype)
    model.train(False)
    return model, meta


def _shape_fields(cfg: GMDFConfig) -> str:
    return cfg.replace(name="-").to_json()


def load_weights(
    spec: str | ResolvedWeights, device: str | torch.device = "cpu", precision: str = "fp32"
) -> tuple[GMDF, ResolvedWeights, dict[str, str]]:
    """Resolve a ``--weights`` value (or take one resolved already: resolving hashes the whole file) and load the
    model ready for inference (no text tower), with the file's metadata (which may carry a calibrated decision
    ``threshold``). ``device``: ``auto``, ``cpu``, ``cuda:1``, ... ``precision`` ``bf16``/``fp16`` loads the weights
    straight into that type: half the memory, and much faster on GPUs and on CPUs with native bf16 (AVX512-BF16,
    AMX)."""
    resolved = spec if isinstance(spec, ResolvedWeights) else resolve_weights(spec)
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
    band: list[float] | None = None,
    card: dict[str, Any] | None = None,
) -> ResolvedWeights:
    """Re-save a checkpoint for shipping: fp16 and without the text tower by default (the prompt features it would
    compute are cached in the file), optionally with a decision ``threshold``, an uncertainty ``band`` around it and
    a model ``card`` in the metadata (each checked as a reader checks it). The training record and any threshold,
    band or card already there are kept unless replaced."""
    resolved = resolve_weights(source)
    model, meta = load_checkpoint(resolved.path)
    extra = {k: v for k, v in meta.items() if k not in ("format", "gmdf_version", "config", "text_tower")}
    if threshold is not None:
        extra["threshold"] = repr(float(threshold))
    if band is not None:
        extra["band"] = json.dumps([float(v) for v in band])
    if card is not None:
        extra["card"] = json.dumps(card)
    training = read_training(extra)
    if training is not None:  # shipped without the folders of the machine that trained it
        extra["training"] = json.dumps(training)
    read_decision(extra)
    read_card(extra)
    path = save_checkpoint(model, target, metadata=extra, half=half, text_tower=text_tower)
    return ResolvedWeights(path, path.name, sha256_file(path), "local")
