from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch

from gmdf_cli.data.faces import DetectorOptions
from gmdf_cli.model import GMDF, build_model, get_config
from gmdf_cli.weights import save_checkpoint

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MEDIA = SHARED / "media"
DETECTOR_WEIGHTS = SHARED / "weights"

HAVE_RETINAFACE = (DETECTOR_WEIGHTS / "detection_mobilenet0.25_Final.pth").is_file()

# Under pytest-xdist (`-n N`) the workers share the cores: each takes its share, and the gmdf processes a test
# starts inherit it, so that N workers never run more torch threads than there are cores (more would not only
# share them, OpenMP's waiting threads would slow every worker many times over)
_THREADS = max(1, min(2, os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
torch.set_num_threads(_THREADS)
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS", str(_THREADS))
# Compiled graphs (gmdf_cli.runtime) go to a folder of this test process, not the user's cache: every run starts cold
os.environ.setdefault("GMDF_COMPILED_DIR", tempfile.mkdtemp(prefix="gmdf-compiled-"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests of an ``xdist_group`` first: under ``-n 2 --dist loadgroup`` a group runs on one worker, and the
    groups are the suite's longest jobs (test_train.py's), so that starting them first lets both workers end
    together. Without xdist the order changes nothing a test may rely on."""
    items.sort(key=lambda item: item.get_closest_marker("xdist_group") is None)


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


def tiny_gmdf(seed: int = 0, std: float = 0.1, domains: Sequence[str] = ()) -> GMDF:
    """The toy ``vit-tiny`` GM-DF built after ``torch.manual_seed(seed)``, its GM-DF parts ``perturbed`` by ``std``;
    ``domains``: its source domains, where not the config's own."""
    torch.manual_seed(seed)
    config = get_config("vit-tiny")
    return perturbed(build_model(config.with_domains(list(domains)) if domains else config), std=std)


TinyWeights = Callable[..., Path]
"""``tiny_weights_factory(seed=0, std=0.1, domains=())``: the path of ``tiny_gmdf(seed, std, domains)`` saved."""


@pytest.fixture
def tiny_model() -> GMDF:
    return tiny_gmdf()


@pytest.fixture(scope="session")
def tiny_weights_factory(tmp_path_factory: pytest.TempPathFactory) -> TinyWeights:
    """Weights files of ``tiny_gmdf``, each variant saved once a session and shared by every test that asks for it:
    read them, never change them (copy first). Building one leaves the global RNG as it found it."""
    made: dict[tuple[int, float, tuple[str, ...]], Path] = {}

    def make(seed: int = 0, std: float = 0.1, domains: Sequence[str] = ()) -> Path:
        key = (seed, std, tuple(domains))
        if key not in made:
            with torch.random.fork_rng(devices=[]):
                model = tiny_gmdf(seed, std, domains)
            made[key] = save_checkpoint(model, tmp_path_factory.mktemp("w") / "tiny.safetensors")
        return made[key]

    return make


@pytest.fixture(scope="session")
def tiny_weights(tiny_weights_factory: TinyWeights) -> Path:
    """``tiny_model``'s weights (seed 0, std 0.1) as a file, for the CLI and ``Detector.from_pretrained``."""
    return tiny_weights_factory()


@pytest.fixture(autouse=True)
def _a_fresh_python_is_a_slow_test(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test that starts a fresh Python (gmdf, a ``python -c`` check, a DDP launcher) pays its start-up and torch's
    import each time: it belongs to the slow tier, so without ``@pytest.mark.slow`` it fails here, and says so."""
    if request.node.get_closest_marker("slow"):
        return
    start = subprocess.Popen.__init__

    def checked(self: subprocess.Popen, args: object, *rest: object, **kwargs: object) -> None:
        program = args[0] if isinstance(args, list | tuple) and args else args
        if str(program) == sys.executable:
            pytest.fail(f"{request.node.nodeid} starts a fresh Python: mark it @pytest.mark.slow (docs/testing.md)")
        start(self, args, *rest, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", checked)


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
