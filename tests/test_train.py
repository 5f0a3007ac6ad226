"""Training end to end: generated domains -> gmdf prepare -> gmdf train; exact resume after SIGKILL; 2-process DDP."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from rich.console import Console
from safetensors import safe_open
from safetensors.torch import load_file

from gmdf_cli.analysis.metrics import detection_metrics, video_level
from gmdf_cli.data.faces import InputFormat
from gmdf_cli.errors import UsageError
from gmdf_cli.jobs.prepare import PrepareRequest, run_prepare
from gmdf_cli.model import build_model, get_config
from gmdf_cli.train.augment import ONLINE_DOMAIN
from gmdf_cli.train.data import load_batch, read_index
from gmdf_cli.train.loader import load_part
from gmdf_cli.train.loop import Trainer, TrainRequest
from gmdf_cli.weights import load_weights

from .conftest import detector_options, invoke_gmdf
from .synthdata import write_domain

# Under pytest-xdist (-n 2), this file's tests run on one worker: the generated caches are built once, not on
# each (conftest.py starts the grouped tests first, the longest jobs of the suite)
pytestmark = pytest.mark.xdist_group("train-caches")

KINDS = ("blend", "noise", "blocks")
QUIET = Console(stderr=True, quiet=True)


def _detector() -> dict:
    return {"detector": detector_options()}


def make_cache(root: Path, cache: Path, kinds: tuple[str, ...], videos: int, frames: int, seed: int) -> Path:
    for i, kind in enumerate(kinds):
        write_domain(root / kind, kind, videos=videos, frames=frames, seed=seed + i)
        run_prepare(
            PrepareRequest(layout="folder", root=root / kind, out=cache, domain=kind, frames=frames, **_detector()),
            QUIET,
        )
    return cache


@pytest.fixture(scope="module")
def caches(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("synth")
    train = make_cache(base / "train", base / "cache", KINDS, videos=16, frames=4, seed=0)
    held = make_cache(base / "held", base / "held_cache", KINDS, videos=8, frames=4, seed=100)
    return train, held


def held_out_auc(weights: Path, cache: Path) -> tuple[float, float]:
    model, _, _ = load_weights(str(weights))
    rows = read_index(cache)
    scores: list[float] = []
    for start in range(0, len(rows), 64):
        images, _, _ = load_batch(rows[start : start + 64], InputFormat.of(model.config.vision))
        scores.extend(model.predict(images).tolist())
    labels = [r.label for r in rows]
    _, v_labels, v_scores = video_level([f"{r.domain}/{r.video_id}" for r in rows], labels, scores)
    return detection_metrics(labels, scores)["auc"], detection_metrics(v_labels, v_scores)["auc"]


@pytest.mark.slow
def test_meta_learning_detects_held_out_generated_videos(caches: tuple[Path, Path], tmp_path: Path) -> None:
    train, held = caches
    run = tmp_path / "run"
    out = invoke_gmdf(
        "train",
        "--domains",
        ",".join(KINDS),
        "--data",
        str(train),
        "--out",
        str(run),
        "--config",
        "vit-tiny",
        "--epochs",
        "24",
        "--batch-size",
        "24",
    )
    assert out.returncode == 0, out.stderr
    for name in ("last.safetensors", "best.safetensors", "resume.safetensors", "metrics.csv", "run.json"):
        assert (run / name).is_file(), name
    header = (run / "metrics.csv").read_text().splitlines()[0]
    assert "val_blend_video_auc" in header and "test_mim" in header and "align" in header
    # Held-out videos of the three kinds, scored through the wildcard domain. An untrained or frozen tower is at 0.5;
    # trained runs score 0.79-0.96 video AUC by seed (this recipe with seeds 0, 1 and the experts of gmdf 0.1: 0.963,
    # 0.789; with gmdf 0.2's: 0.806 at seed 0, 0.766 with the equal split), so the bar is set under that spread, not
    # at one seed's figure
    frame_auc, video_auc = held_out_auc(run / "last.safetensors", held)
    assert video_auc > 0.75, (frame_auc, video_auc)
    assert frame_auc > 0.7
    # Algorithm 1's signature, which joint training of all parameters on all losses would not leave: the domain
    # embeddings and prompt vectors (theta_E) move only in the meta-train phase, where only source domains appear,
    # so the wildcard's row (seen by the meta-test phase alone) keeps its initial value while the others moved
    torch.manual_seed(0)
    init = build_model(get_config("vit-tiny").with_domains(list(KINDS))).state_dict()
    trained = load_file(str(run / "last.safetensors"))
    for key in ("visual.domain_embedding.weight", "prompts.dom_ctx"):
        assert torch.equal(trained[key][0], init[key][0]), key
        assert all(not torch.equal(trained[key][d], init[key][d]) for d in range(1, len(KINDS) + 1)), key


def _resume_step(path: Path) -> int:
    try:
        with safe_open(str(path), framework="pt") as fh:
            return int(fh.metadata()["step"])
    except Exception:  # not written yet
        return -1


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_ends_with_the_same_weights(caches: tuple[Path, Path], tmp_path: Path) -> None:
    train, _ = caches
    args = [
        "--domains",
        "blend,noise",
        "--data",
        str(train),
        "--epochs",
        "4",
        "--steps-per-epoch",
        "10",
        "--batch-size",
        "12",
        "--save-every",
        "3",
        "--seed",
        "7",
        "--threads",
        "1",
        "--mim-weight",
        "0.5",
        "--align-weight",
        "0.2",
        "--config",
        "vit-tiny",
    ]
    full = invoke_gmdf("train", *args, "--out", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gmdf_cli", "train", *args, "--out", str(killed)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and _resume_step(killed / "resume.safetensors") < 13:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    step = _resume_step(killed / "resume.safetensors")
    assert 13 <= step < 40 and step % 10 != 0  # killed mid-epoch, with a mid-epoch resume point
    recorded = json.loads((killed / "run.json").read_text())
    assert (recorded["mim_weight"], recorded["align_weight"]) == (0.5, 0.2)  # the resume trains with the same losses
    resumed = invoke_gmdf("train", "--resume", str(killed))
    assert resumed.returncode == 0, resumed.stderr
    a, b = load_file(str(tmp_path / "full" / "last.safetensors")), load_file(str(killed / "last.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_gloo_ddp_equals_one_process_with_the_same_global_batch(
    caches: tuple[Path, Path], tmp_path: Path
) -> None:
    """torch DDP over gloo: both ranks end with identical weights, and those equal a one-process run of the same
    global batch within float tolerance (the inner-loop gradient and the Frechet statistics are global too; without
    that the two runs differ by ~4e-3 here)."""
    train, _ = caches
    run = tmp_path / "ddp"
    args = ["--domains", "blend,noise,blocks", "--data", str(train), "--epochs", "2", "--steps-per-epoch", "4",
            "--batch-size", "16", "--threads", "1", "--config", "vit-tiny"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                "--master_port", str(_free_port())]  # fmt: skip
    out = subprocess.run(
        [*launcher, "-m", "gmdf_cli", "train", *args, "--out", str(run)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    ranks = [json.loads((run / f"summary-rank{r}.json").read_text()) for r in (0, 1)]
    assert all(s["world_size"] == 2 and s["ranks_agree"] for s in ranks)
    assert ranks[0]["weights_digest"] == ranks[1]["weights_digest"]
    assert ranks[0]["steps"] == 8 and (run / "last.safetensors").is_file()
    single = invoke_gmdf("train", *args, "--out", str(tmp_path / "one"))
    assert single.returncode == 0, single.stderr
    two, one = load_file(str(run / "last.safetensors")), load_file(str(tmp_path / "one" / "last.safetensors"))
    assert two.keys() == one.keys()
    worst = max(float((two[k].float() - one[k].float()).abs().max()) for k in one)
    assert worst < 1e-3, worst


def test_bad_training_input_is_one_clear_error(caches: tuple[Path, Path], tmp_path: Path) -> None:
    train, _ = caches

    def trainer(**kw) -> Trainer:
        base = {"domains": ["blend"], "data": str(train), "out": str(tmp_path / "r"), "epochs": 1, "config": "vit-tiny"}
        return Trainer(TrainRequest(**{**base, **kw}), QUIET)

    with pytest.raises(UsageError, match="'dfdc' is not in the cache"):
        trainer(domains=["blend", "dfdc"])
    with pytest.raises(UsageError, match="cache folder not found"):
        trainer(data=str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match=r"no index\.csv"):
        trainer(data=str(tmp_path / "empty"))
    one_class = tmp_path / "one"
    one_class.mkdir()
    lines = (train / "index.csv").read_text().splitlines()
    (one_class / "index.csv").write_text("\n".join([lines[0]] + [ln for ln in lines[1:] if ",1," not in ln[:40]]))
    with pytest.raises(UsageError, match="only real samples"):
        trainer(data=str(one_class))
    out = invoke_gmdf("train", "--domains", "nope", "--data", str(train), "--out", str(tmp_path / "x"))
    assert out.returncode == 2 and "Traceback" not in out.stderr and "'nope' is not in the cache" in out.stderr


def test_a_corrupt_crop_is_skipped_and_reported(caches: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil

    train, _ = caches
    copy = tmp_path / "cache"
    shutil.copytree(train, copy)
    rows = read_index(copy)
    victim = next(r.path for r in rows if r.domain == "blend" and r.split == "train")
    victim.write_bytes(b"not a png")
    val_victim = next(r.path for r in rows if r.split == "val")  # validation must survive one too
    val_victim.write_bytes(b"not a png")
    trainer = Trainer(
        TrainRequest(
            domains=["blend", "noise"],
            config="vit-tiny",
            data=str(copy),
            out=str(tmp_path / "r"),
            epochs=1,
            steps_per_epoch=12,
            batch_size=24,
        ),
        QUIET,
    )
    summary = trainer.fit()
    assert summary["corrupt_crops_skipped"] == 1 and summary["steps"] == 12


def _request(train: Path, out: Path, **kw: object) -> TrainRequest:
    base: dict = {
        "domains": ["noise", "blocks"],
        "config": "vit-tiny",
        "data": str(train),
        "out": str(out),
        "epochs": 2,
        "steps_per_epoch": 3,
        "batch_size": 12,
        "online_blend": True,
        "augment": True,
        "threads": 1,
    }
    return TrainRequest(**{**base, **kw})


def test_online_blend_domain_trains_deterministically(caches: tuple[Path, Path], tmp_path: Path) -> None:
    train, _ = caches
    trainer = Trainer(_request(train, tmp_path / "check"), QUIET)
    assert trainer.domains == ["noise", "blocks", ONLINE_DOMAIN]
    assert list(trainer.cfg.domains) == ["noise", "blocks", ONLINE_DOMAIN]
    pool = trainer.train_sets[ONLINE_DOMAIN]
    reals = [r for d in ("noise", "blocks") for r in trainer.train_sets[d] if r.label == 0]
    assert len(pool) == 2 * len(reals) and {r.path for r in pool} == {r.path for r in reals}

    # the blend domain's fakes are the real crops, blended as they are loaded; its reals stay untouched
    trainer.planner.augment = False
    crops = trainer.sampler.draw(ONLINE_DOMAIN, 8)
    part = load_part(trainer.planner._part(crops, 0), trainer.input_format)
    images, labels = part.images, part.labels
    plain, _, _ = load_batch(crops, trainer.input_format, torch.zeros(len(crops), dtype=torch.bool))
    plain_flipped = plain.flip(-1)
    for i, label in enumerate(labels.tolist()):
        same = torch.equal(images[i], plain[i]) or torch.equal(images[i], plain_flipped[i])
        assert same == (label == 0)

    first = Trainer(_request(train, tmp_path / "a"), QUIET).fit()
    second = Trainer(_request(train, tmp_path / "b"), QUIET).fit()
    assert first["steps"] == second["steps"] == 6
    a = load_file(str(tmp_path / "a" / "last.safetensors"))
    b = load_file(str(tmp_path / "b" / "last.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_online_blend_refuses_a_cache_domain_of_the_same_name(
    caches: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    train, _ = caches
    with pytest.raises(UsageError, match="online-blend domain"):
        Trainer(_request(train, tmp_path / "r", domains=[ONLINE_DOMAIN, "noise"]), QUIET)


def test_the_mim_codebook_is_fitted_on_crops_of_every_training_domain(
    caches: tuple[Path, Path], tmp_path: Path
) -> None:
    train, _ = caches
    request = TrainRequest(domains=list(KINDS), data=str(train), out=str(tmp_path), config="vit-tiny", threads=1)
    sample = Trainer(request, QUIET).tokenizer_sample(30)
    assert Counter(c.domain for c in sample) == dict.fromkeys(KINDS, 10)
    assert len({c.path for c in sample}) == 30


def test_train_defaults_to_the_papers_setting() -> None:
    """`gmdf train --domains ff,celeb,dff` means the paper's ViT-B/16 from pretrained CLIP, not a random toy."""
    from gmdf_cli.cli import cli
    from gmdf_cli.model import get_config

    option = next(p for p in cli.commands["train"].params if p.name == "config")
    request = TrainRequest(domains=["ff"], data="-", out="-")
    assert option.default == request.config == "vit-b-16"
    assert request.pretrained == "default" and get_config("vit-b-16").clip_pretrained == "openai"
    assert request.align_weight == request.mim_weight == 1.0  # the paper sums its losses with weight 1


def test_a_config_registered_in_one_call_trains_at_its_own_rate() -> None:
    """A config added to the registry without a rate used to fall back to 1e-5 unnoticed (mnv2 trained 30x too
    slowly). ``register_config`` takes the config, its help line and its rate together, so a registered config
    always has its own rate; an unregistered name is a KeyError, not a guess; a name is registered once."""
    from gmdf_cli.model.config import CONFIG_HELP, CONFIGS, DEFAULT_LR, register_config

    assert set(DEFAULT_LR) == set(CONFIGS) == set(CONFIG_HELP)
    assert TrainRequest(domains=["ff"], data="-", out="-", config="mnv2").learning_rate == 3e-4
    added = get_config("vit-tiny").replace(name="vit-tiny-slow")
    register_config(added, "vit-tiny at a slow rate", 2e-5)
    try:
        assert TrainRequest(domains=["ff"], data="-", out="-", config="vit-tiny-slow").learning_rate == 2e-5
        assert get_config("vit-tiny-slow") == added and CONFIG_HELP["vit-tiny-slow"] == "vit-tiny at a slow rate"
        with pytest.raises(ValueError, match="already registered"):
            register_config(added, "again", 1e-3)
    finally:
        for registry in (CONFIGS, CONFIG_HELP, DEFAULT_LR):
            registry.pop("vit-tiny-slow", None)
    with pytest.raises(KeyError):
        _ = TrainRequest(domains=["ff"], data="-", out="-", config="not-registered").learning_rate


def test_the_meta_test_domain_gets_its_share_of_the_batch(caches: tuple[Path, Path], tmp_path: Path) -> None:
    """theta_O learns from the meta-test part alone: by default it is half the batch, not 1/N of it."""
    train, _ = caches
    request = TrainRequest(domains=list(KINDS), data=str(train), out=str(tmp_path), config="vit-tiny", batch_size=24)
    trainer = Trainer(request, QUIET)
    assert (trainer.per_domain, trainer.per_test) == (6, 12)
    for step in range(4):
        plan = trainer.planner.plan(step)
        assert plan.test is not None and len(plan.test.crops) == 12
        assert [len(p.crops) for p in plan.train] == [6, 6]
    equal = Trainer(TrainRequest(**{**dataclasses.asdict(request), "meta_test_share": 0.0}), QUIET)
    assert (equal.per_domain, equal.per_test) == (8, 8)


def test_meta_test_weights_draw_a_domain_as_meta_test_as_often_as_asked(
    caches: tuple[Path, Path], tmp_path: Path
) -> None:
    """--meta-test-weights blend=8: of three domains, blend is the meta-test domain 8 times in 10 (not 1 in 3)."""
    train, _ = caches
    request = TrainRequest(
        domains=list(KINDS), data=str(train), out=str(tmp_path), config="vit-tiny", meta_test_weights={"blend": 8.0}
    )
    planner = Trainer(request, QUIET).planner
    picked = Counter(plan.test.crops[0].domain for plan in map(planner.plan, range(300)) if plan.test is not None)
    assert 0.72 < picked["blend"] / 300 < 0.88 and picked["noise"] > 0 and picked["blocks"] > 0
    with pytest.raises(UsageError, match="names dfdc, not among the domains"):
        Trainer(dataclasses.replace(request, meta_test_weights={"dfdc": 2.0}), QUIET)
    out = invoke_gmdf(
        "train", "--domains", "blend,noise", "--data", str(train), "--out", str(tmp_path / "x"),
        "--meta-test-weights", "blend=-1",
    )  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr and "expected DOMAIN=WEIGHT" in out.stderr


def test_face_options_reach_the_trained_model_and_its_checkpoint(caches: tuple[Path, Path], tmp_path: Path) -> None:
    """--face-px / --face-jpeg change what the model is trained on and are stored, so scanning does the same."""
    train, _ = caches
    request = _request(train, tmp_path / "r", face_px=24, face_jpeg=70, epochs=1, steps_per_epoch=1)
    trainer = Trainer(request, QUIET)
    assert trainer.input_format == InputFormat(64, 24, 70)
    trainer.fit()
    model, _, _ = load_weights(str(tmp_path / "r" / "last.safetensors"))
    assert (model.config.vision.face_px, model.config.vision.face_jpeg) == (24, 70)


def test_export_puts_the_threshold_at_a_stated_false_alarm_rate(
    caches: tuple[Path, Path], tiny_weights: Path, tmp_path: Path
) -> None:
    """gmdf weights export --calibrate CACHE --max-fpr 0.25: at most a quarter of the split's real videos score at
    or above the stored threshold, and it is the lowest such threshold (scored with the file as shipped, fp16)."""
    from gmdf_cli.engine.batching import score_cached

    _, held = caches  # every crop of the held-out cache is a "test" crop
    target = tmp_path / "ship.safetensors"
    export = ["weights", "export", str(tiny_weights), str(target), "--calibrate", str(held), "--split", "test"]
    done = invoke_gmdf(*export, "--max-fpr", "0.25")
    assert done.returncode == 0, done.stderr
    model, _, meta = load_weights(str(target))
    threshold = float(meta["threshold"])
    rows = [r for r in read_index(held) if r.split == "test"]
    kept, scores = score_cached(model, rows)
    _, labels, videos = video_level([f"{r.domain}/{r.video_id}" for r in kept], [r.label for r in kept], scores)
    reals = sorted((s for s, y in zip(videos, labels, strict=True) if y == 0), reverse=True)
    allowed = int(0.25 * len(reals))
    assert allowed >= 1
    assert sum(s >= threshold for s in reals) <= allowed
    assert reals[allowed] < threshold <= reals[allowed] + 1e-3  # the lowest: one more real would pass

    before = target.read_bytes()  # a failed calibration leaves an existing target as it was
    failed = invoke_gmdf(*export[:-1], "val", "--max-fpr", "0.1")
    assert failed.returncode != 0 and "no val crops" in failed.stderr and target.read_bytes() == before

    alone = invoke_gmdf("weights", "export", str(tiny_weights), str(tmp_path / "x.safetensors"), "--max-fpr", "0.1")
    assert alone.returncode != 0 and "Traceback" not in alone.stderr and "--calibrate" in alone.stderr
