"""One --device and one --precision for every command; the training data loader; mixed precision; GPU checks that run
only where torch sees a CUDA GPU (the CPU tests run everywhere, in CI too)."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result
from rich.console import Console
from safetensors.torch import load_file

from gmdf_cli.cli import cli as cli_group
from gmdf_cli.data.faces import open_face_detector
from gmdf_cli.data.media import Sampling, discover
from gmdf_cli.device import autocast, resolve_device
from gmdf_cli.engine import Engine, EngineOptions, in_order_threads
from gmdf_cli.errors import UsageError
from gmdf_cli.model import build_model, domain_alignment_loss, get_config, random_patch_mask
from gmdf_cli.report.schema import dumps
from gmdf_cli.train.loop import MetaObjective, Trainer, TrainRequest
from gmdf_cli.weights import DEFAULT_WEIGHTS, load_weights

from .conftest import detector_options, invoke_gmdf, perturbed
from .test_scan import detector_args
from .test_train import KINDS, make_cache

ROOT = Path(__file__).resolve().parents[1]
ASTRONAUT = ROOT / "examples" / "astronaut.png"
CLIP = ROOT / "examples" / "astronaut.mp4"
QUIET = Console(stderr=True, quiet=True)
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")


def cli(*args: str) -> Result:
    """The real CLI in this process (no interpreter and torch start-up per call, which dominate these tests)."""
    return CliRunner().invoke(cli_group, list(args), catch_exceptions=False)


_det = detector_args


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("dev")
    return make_cache(base / "src", base / "cache", KINDS, videos=8, frames=3, seed=0)


# -- the option ------------------------------------------------------------------------------------------------------
def test_auto_picks_cuda_when_present_and_named_devices_are_checked() -> None:
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    assert resolve_device("auto").type == ("cuda" if CUDA else "mps" if mps else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(UsageError, match="unknown device"):
        resolve_device("tpu-please")
    with pytest.raises(UsageError, match="CUDA GPU"):
        resolve_device(f"cuda:{torch.cuda.device_count() + 3}")


def commands_with_a_device_option() -> list[str]:
    """Every command that takes --device, from the CLI itself: one that gains the option gets the test below."""
    return [name for name, command in cli_group.commands.items() if any(p.name == "device" for p in command.params)]


@pytest.mark.skipif(CUDA, reason="checks the error seen without a GPU")
@pytest.mark.parametrize("command", commands_with_a_device_option())
def test_device_cuda_without_a_gpu_is_one_clear_line_and_exit_2(command: str, tmp_path: Path) -> None:
    args = {
        "scan": ["scan", str(ASTRONAUT)],
        "eval": ["eval", str(tmp_path)],
        "robustness": ["robustness", str(tmp_path)],
        "prepare": ["prepare", "--domain", "folder", "--root", str(tmp_path), "--out", str(tmp_path / "c")],
        "synth": ["synth", "--root", str(tmp_path), "--out", str(tmp_path / "s")],
        "train": ["train", "--domains", "a,b", "--data", str(tmp_path), "--out", str(tmp_path / "r")],
    }[command]
    for label in ("real", "fake"):  # robustness checks its DATA layout first, before torch loads
        (tmp_path / label).mkdir()
    start = time.perf_counter()
    out = cli(*args, "--device", "cuda")
    assert out.exit_code == 2, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no CUDA GPU" in lines[0], out.stderr
    assert time.perf_counter() - start < 5  # before any model or data is loaded


# -- --device cpu is today's default, bit for bit ----------------------------------------------------------------------
def _md5_tree(root: Path, pattern: str = "*.png") -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(root.rglob(pattern))}


def test_scan_and_eval_with_device_cpu_equal_the_default(tiny_weights: Path, cache: Path, tmp_path: Path) -> None:
    for extra in ([], ["--device", "cpu"]):
        tag = "cpu" if extra else "default"
        scan = cli("scan", str(ASTRONAUT), str(CLIP), "--weights", str(tiny_weights), "--json", *_det(), *extra)
        assert scan.exit_code == 0, scan.stderr
        files = json.loads(scan.stdout)["files"]
        (tmp_path / f"scan-{tag}.json").write_text(json.dumps([[f["score"], f["frames"]] for f in files]))
        ev = cli("eval", "--weights", str(tiny_weights), "--data", str(cache), "--domains", "noise", "--json",
                 "--split", "all", *extra)  # fmt: skip
        assert ev.exit_code == 0, ev.stderr
        (tmp_path / f"eval-{tag}.json").write_text(ev.stdout)
    assert (tmp_path / "scan-cpu.json").read_text() == (tmp_path / "scan-default.json").read_text()
    assert (tmp_path / "eval-cpu.json").read_text() == (tmp_path / "eval-default.json").read_text()


def test_train_prepare_synth_with_device_cpu_equal_the_default(cache: Path, tmp_path: Path) -> None:
    common = ["--domains", "blend,noise", "--data", str(cache), "--epochs", "1", "--steps-per-epoch", "2",
              "--batch-size", "8", "--threads", "1", "--config", "vit-tiny"]  # fmt: skip
    for tag, extra in (("default", []), ("cpu", ["--device", "cpu"])):
        out = cli("train", *common, "--out", str(tmp_path / f"run-{tag}"), *extra)
        assert out.exit_code == 0, out.stderr
        out = cli("synth", "--root", str(CLIP.parent), "--out", str(tmp_path / f"synth-{tag}"), "--frames", "2",
                  "--kind", "sbi", *_det(), *extra)  # fmt: skip
        assert out.exit_code == 0, out.stderr
        out = cli("prepare", "--domain", "folder", "--root", str(tmp_path / f"synth-{tag}"), "--out",
                  str(tmp_path / f"cache-{tag}"), "--frames", "2", *_det(), *extra)  # fmt: skip
        assert out.exit_code == 0, out.stderr
    a, b = (load_file(str(tmp_path / f"run-{t}" / "last.safetensors")) for t in ("default", "cpu"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _md5_tree(tmp_path / "synth-default") == _md5_tree(tmp_path / "synth-cpu") != {}
    assert _md5_tree(tmp_path / "cache-default") == _md5_tree(tmp_path / "cache-cpu") != {}


# -- the data loader -------------------------------------------------------------------------------------------------
def _steps(trainer: Trainer, workers: int, count: int) -> list[tuple[torch.Tensor, ...]]:
    out = []
    for i, loaded in enumerate(trainer.loader(workers)):
        if i == count:
            break
        parts = [*loaded.train, *([loaded.test] if loaded.test else [])]
        out.append(tuple(t for p in parts for t in (p.images, p.labels, p.mask, torch.tensor(p.domain))))
    return out


def test_two_loader_workers_yield_the_batches_of_none(cache: Path, tmp_path: Path) -> None:
    def trainer() -> Trainer:
        request = TrainRequest(
            domains=list(KINDS),
            data=str(cache),
            out=str(tmp_path),
            batch_size=12,
            augment=True,
            threads=1,
            config="vit-tiny",
        )
        return Trainer(request, QUIET)

    plain, workers = _steps(trainer(), 0, 5), _steps(trainer(), 2, 5)
    assert len(plain) == len(workers) == 5
    for a, b in zip(plain, workers, strict=True):
        assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(plain[0][0], plain[1][0])  # successive steps differ: the planner moves on


def test_a_resume_state_is_the_state_after_the_last_step_run_not_the_read_ahead(cache: Path, tmp_path: Path) -> None:
    request = TrainRequest(
        domains=list(KINDS), data=str(cache), out=str(tmp_path), batch_size=12, threads=1, config="vit-tiny"
    )
    ahead = Trainer(request, QUIET)
    iterator = iter(ahead.loader(2))
    first = next(iterator)  # the workers have planned several steps beyond this one
    fresh = Trainer(request, QUIET)
    fresh.planner.load_state(first.state)
    second = next(iterator)
    replanned = next(iter(fresh.loader(0)))
    assert torch.equal(second.train[0].images, replanned.train[0].images)


# -- mixed precision -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_autocast_training_step_on_cpu_runs_and_keeps_the_frechet_term_finite(precision: str) -> None:
    torch.manual_seed(0)
    cfg = get_config("vit-tiny").with_domains(["a", "b", "c"])
    model = perturbed(build_model(cfg))
    model.train(True)
    for name, p in model.named_parameters():
        p.requires_grad_(not name.startswith("text."))
    request = TrainRequest(domains=["a", "b", "c"], data="-", out="-", precision=precision, config="vit-tiny")
    objective = MetaObjective(model, request, torch.device("cpu"))
    size, patches = cfg.vision.image_size, cfg.grid**2
    gen = torch.Generator().manual_seed(0)
    parts = [
        (torch.randn(4, 3, size, size, generator=gen), torch.tensor([0, 1, 0, 1]),
         random_patch_mask(4, patches, cfg.mim_ratio, gen))
        for _ in range(3)
    ]  # fmt: skip
    seen: list[torch.dtype] = []
    hook = model.visual.register_forward_hook(lambda m, i, o: seen.append(o[0].dtype))
    loss, logs = objective("meta", [(parts[0], 1), (parts[1], 2)], parts[2])
    hook.remove()
    assert seen and all(d == {"bf16": torch.bfloat16, "fp16": torch.float16}[precision] for d in seen)
    assert math.isfinite(logs["align"]) and logs["align"] > 0 and math.isfinite(loss.item())
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_fp16_training_skips_an_overflowed_inner_step_instead_of_writing_nan(cache: Path, tmp_path: Path) -> None:
    """The loss scaler starts at 2**16: the first meta steps' scaled inner gradients overflow. theta_E's update is
    skipped then (as the scaler skips theta_O's) and the scale falls, rather than NaN written into the model."""
    out = invoke_gmdf("train", "--domains", ",".join(KINDS), "--data", str(cache), "--out", str(tmp_path / "run"),
                   "--epochs", "1", "--steps-per-epoch", "8", "--batch-size", "12", "--device", "cpu",
                   "--precision", "fp16", "--config", "vit-tiny")  # fmt: skip
    assert out.returncode == 0, out.stderr
    summary = json.loads((tmp_path / "run" / "summary-rank0.json").read_text())
    assert math.isfinite(summary["weights_digest"]) and math.isfinite(summary["last"]["loss"])
    weights = load_file(str(tmp_path / "run" / "last.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())


def test_a_run_without_validation_says_so_instead_of_an_auc_of_minus_one(cache: Path, tmp_path: Path) -> None:
    out = invoke_gmdf("train", "--domains", ",".join(KINDS), "--data", str(cache), "--out", str(tmp_path / "run"),
                   "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "12", "--config", "vit-tiny")  # fmt: skip
    assert out.returncode == 0, out.stderr
    shown = out.stdout + out.stderr  # the closing table goes where the progress went
    assert "-1.000" not in shown and "no validation split holds both classes" in shown


def test_frechet_loss_is_computed_in_fp32_under_autocast() -> None:
    gen = torch.Generator().manual_seed(0)
    source, target = torch.randn(12, 16, generator=gen), torch.randn(10, 16, generator=gen) + 0.5
    reference = domain_alignment_loss(source, target)
    with autocast(torch.device("cpu"), "bf16"):
        mixed = domain_alignment_loss(source.bfloat16(), target.bfloat16())
    assert mixed.dtype == torch.float32
    # only the inputs' rounding to bf16 differs: a bf16 Cholesky/eigvalsh would be off by far more
    assert abs(mixed.item() - reference.item()) < 2e-2 * reference.item()


# -- scan: background decode/detect gives the same results ----------------------------------------------------------
def test_decoding_threads_score_exactly_as_one_thread(tiny_weights: Path) -> None:
    model, _, _ = load_weights(str(tiny_weights), device="cpu")
    detector = open_face_detector(detector_options(), "cpu", print)
    items = discover([str(CLIP), str(ASTRONAUT), str(ROOT / "examples" / "README.md")]).items
    results = {}
    for threads in (0, 1, 2, 3):
        options = EngineOptions(Sampling(frames=6), decode_threads=threads, prefetch_frames=2)
        scanned = list(Engine(model, detector, options).run(items))
        for r in scanned:
            r.seconds = 0
        results[threads] = [dumps(r) for r in scanned]
    assert results[1] == results[0] == results[2] == results[3]
    assert len(results[0]) == 3


# -- on a GPU (skipped without one) ------------------------------------------------------------------------------------
@needs_cuda
def test_scan_on_cuda_matches_the_cpu(tmp_path: Path) -> None:
    scores = {}
    for device, precision in (("cpu", "fp32"), ("cuda", "fp32"), ("cuda", "bf16"), ("cuda", "fp16")):
        out = invoke_gmdf("scan", str(ASTRONAUT), str(CLIP), "--json", "--device", device, "--precision", precision,
                       *_det())  # fmt: skip
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)
        assert report["detector"]["device"].startswith(device)
        scores[(device, precision)] = [f["score"] for f in report["files"]]
    cpu = scores[("cpu", "fp32")]
    for key, value in scores.items():
        tolerance = {"fp32": 1e-4, "fp16": 2e-2, "bf16": 6e-2}[key[1]]  # TF32 is off for fp32
        assert all(abs(a - b) < tolerance for a, b in zip(cpu, value, strict=True)), (key, cpu, value)
    (tmp_path / "scores.json").write_text(json.dumps({f"{d}-{p}": v for (d, p), v in scores.items()}))


@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_training_runs_on_cuda(cache: Path, tmp_path: Path, precision: str) -> None:
    out = invoke_gmdf("train", "--domains", ",".join(KINDS), "--data", str(cache), "--out", str(tmp_path / "run"),
                   "--epochs", "2", "--steps-per-epoch", "3", "--batch-size", "12", "--device", "cuda",
                   "--precision", precision, "--workers", "2", "--config", "vit-tiny")  # fmt: skip
    assert out.returncode == 0, out.stderr
    summary = json.loads((tmp_path / "run" / "summary-rank0.json").read_text())
    assert summary["device"].startswith("cuda") and summary["precision"] == precision
    assert math.isfinite(summary["weights_digest"])
    if precision != "fp16":  # fp16's first steps may overflow until the loss scaler settles (those are skipped)
        assert math.isfinite(summary["last"]["align"])


@needs_cuda
def test_default_detector_loads_on_cuda() -> None:
    model, _, _ = load_weights(DEFAULT_WEIGHTS, device="cuda", precision="bf16")
    assert next(model.parameters()).device.type == "cuda"


def test_frechet_of_overflowed_features_is_nan_not_an_error() -> None:
    """fp16 can overflow before the loss scaler settles; the loss must then be NaN (the scaler skips the step)."""
    features = torch.randn(6, 8)
    features[2, 3] = float("inf")
    loss = domain_alignment_loss(features, torch.randn(5, 8))
    assert torch.isnan(loss)


def test_closing_the_decoding_stream_stops_its_threads_and_errors_reach_the_reader() -> None:
    def forever() -> Iterator[int]:
        yield from itertools.count()

    def broken() -> Iterator[int]:
        yield 1
        raise OSError("disk gone")

    stream = in_order_threads([forever, forever, forever], threads=2, depth=2)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()  # as when the scan is interrupted
    assert not [t for t in threading.enumerate() if t.name.startswith("gmdf-decode-detect")]
    with pytest.raises(OSError, match="disk gone"):
        list(in_order_threads([broken, forever], threads=2))
    assert not [t for t in threading.enumerate() if t.name.startswith("gmdf-decode-detect")]
