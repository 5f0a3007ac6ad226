from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gmdf_cli.data.faces import DetectorOptions
from gmdf_cli.model import GMDF, build_model, get_config

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MEDIA = SHARED / "media"
DETECTOR_WEIGHTS = SHARED / "weights"

HAVE_RETINAFACE = (DETECTOR_WEIGHTS / "detection_mobilenet0.25_Final.pth").is_file()

torch.set_num_threads(min(2, os.cpu_count() or 1))


def detector_options() -> DetectorOptions:
    """RetinaFace from the shared weights, or MTCNN (shipped inside facenet-pytorch) where they are absent."""
    return DetectorOptions("retinaface", str(DETECTOR_WEIGHTS)) if HAVE_RETINAFACE else DetectorOptions("mtcnn")


def perturbed(model: GMDF, std: float = 0.1, seed: int = 0) -> GMDF:
    """Give GM-DF's zero-initialised parts random values, as after training, so tests exercise them. The temperature
    slope phi stays 0: a random one can push tau_d to its floor, and scores of a random model to exactly 0 or 1."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.gmdf_parameters():
            noise = torch.randn(p.shape, generator=gen) * std  # drawn for phi too: the others' draws stay the same
            if name != "prompts.phi":
                p.add_(noise)
    return model


@pytest.fixture
def tiny_model() -> GMDF:
    torch.manual_seed(0)
    return perturbed(build_model(get_config("vit-tiny")))


def assert_schema(output: str, data: object) -> None:
    """``data`` (a parsed --json output) is valid against the published schema's definition of ``output``."""
    import jsonschema

    from gmdf_cli.report.schema import schema_for

    jsonschema.validate(data, schema_for(output))


def invoke_gmdf(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> subprocess.CompletedProcess:
    """Run the CLI in this process (click's runner: stdout and stderr apart, the exit code as the shell sees it).
    Cheaper than ``run_gmdf`` by the start-up of a fresh Python with torch; use ``run_gmdf`` where a real process
    matters (signals, FFmpeg's own output, what gets imported)."""
    from click.testing import CliRunner

    from gmdf_cli.cli import cli

    result = CliRunner().invoke(cli, list(args), env=env, input=input, catch_exceptions=False)
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr)


def run_gmdf(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the installed CLI as a user would, in a fresh process."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "gmdf_cli", *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=600
    )
