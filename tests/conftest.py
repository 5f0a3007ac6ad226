from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gmdf_cli.model import GMDF, build_model, get_config

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MEDIA = SHARED / "media"
DETECTOR_WEIGHTS = SHARED / "weights"

torch.set_num_threads(min(2, os.cpu_count() or 1))


def perturbed(model: GMDF, std: float = 0.1, seed: int = 0) -> GMDF:
    """Give GM-DF's zero-initialised parts random values, as after training, so tests exercise them."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.gmdf_parameters():
            p.add_(torch.randn(p.shape, generator=gen) * std)
    return model


@pytest.fixture
def tiny_model() -> GMDF:
    torch.manual_seed(0)
    return perturbed(build_model(get_config("vit-tiny")))


def run_gmdf(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the installed CLI as a user would, in a fresh process."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "gmdf_cli", *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=600
    )
