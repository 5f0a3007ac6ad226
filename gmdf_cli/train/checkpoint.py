"""The resume file of a training run (``resume.safetensors``): everything needed to go on exactly where a run
stopped, written atomically, read without unpickling anything.

Tensors: ``model.<name>`` (the state dict), ``optim.<param index>.<name>`` (Adam's moments and step), the step
planner's ``rng.generator`` and torch's ``rng.torch``. The rest is string metadata, JSON where it is structured:
the step, the best validation AUC, the per-step crop shares and process count (a resume must split batches the
same way), the loss scaler, sampler, scheduler and optimiser param groups, Python's ``random`` state, the metrics
history and the request. ``Trainer`` gathers and applies the state; this module owns only the file format.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..fileio import atomic_path

RESUME_FILE = "resume.safetensors"


@dataclass
class ResumeState:
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    """``{"state": {param index: {name: tensor}}, "param_groups": [...]}``, as ``Optimizer.state_dict()``."""
    scheduler: dict[str, Any]
    planner: dict[str, Any]
    """``{"generator": uint8 tensor, "sampler": ...}``, as ``StepPlanner.state()`` after the last step run."""
    torch_rng: torch.Tensor
    python_random: tuple[Any, ...]
    grad_scaler: dict[str, Any] | None
    step: int
    best: float
    per_domain: int | None
    """Crops per meta-train domain in a step (None in files older than the field: assume the same)."""
    per_test: int | None
    world_size: int
    history: list[dict[str, Any]]
    request: dict[str, Any]


def save_resume(path: Path, state: ResumeState) -> None:
    """Write ``state`` to ``path`` atomically: a kill mid-write leaves the previous file whole."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in state.model.items()}
    for idx, params in state.optimizer["state"].items():
        for key, value in params.items():
            tensors[f"optim.{idx}.{key}"] = value.detach().cpu().clone().contiguous()
    tensors["rng.generator"] = state.planner["generator"]
    tensors["rng.torch"] = state.torch_rng
    meta = {
        "step": str(state.step),
        "best": repr(state.best),
        "per_domain": str(state.per_domain),
        "per_test": str(state.per_test),
        "world_size": str(state.world_size),
        "grad_scaler": json.dumps(state.grad_scaler or {}),
        "sampler": json.dumps(state.planner["sampler"]),
        "scheduler": json.dumps(state.scheduler),
        "param_groups": json.dumps(state.optimizer["param_groups"]),
        "python_random": json.dumps(state.python_random, default=list),
        "history": json.dumps(state.history),
        "request": json.dumps(state.request),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_resume(path: Path) -> ResumeState:
    """Read what ``save_resume`` wrote (tensors and JSON only)."""
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
        keys = list(fh.keys())
        model = {k[len("model.") :]: fh.get_tensor(k) for k in keys if k.startswith("model.")}
        optim: dict[int, dict[str, torch.Tensor]] = {}
        for k in keys:
            if k.startswith("optim."):
                _, idx, name = k.split(".", 2)
                optim.setdefault(int(idx), {})[name] = fh.get_tensor(k)
        generator = fh.get_tensor("rng.generator")
        torch_rng = fh.get_tensor("rng.torch")
    random_state = json.loads(meta["python_random"])
    per_domain = meta.get("per_domain")
    return ResumeState(
        model=model,
        optimizer={"state": optim, "param_groups": json.loads(meta["param_groups"])},
        scheduler=json.loads(meta["scheduler"]),
        planner={"generator": generator, "sampler": json.loads(meta["sampler"])},
        torch_rng=torch_rng,
        python_random=(random_state[0], tuple(random_state[1]), random_state[2]),
        grad_scaler=json.loads(meta["grad_scaler"]) if meta.get("grad_scaler") else None,
        step=int(meta["step"]),
        best=float(meta["best"]),
        per_domain=int(per_domain) if per_domain is not None else None,
        per_test=int(meta.get("per_test", per_domain)) if per_domain is not None else None,
        world_size=int(meta.get("world_size", "1")),
        history=json.loads(meta["history"]),
        request=json.loads(meta.get("request", "{}")),
    )
