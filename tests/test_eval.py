"""gmdf eval: cache and folder evaluation, the JSON contract, agreement with sklearn on scan scores, protocols."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from sklearn.metrics import roc_auc_score

from gmdf_cli.jobs.evaluate import score_cache
from gmdf_cli.jobs.prepare import PrepareRequest, run_prepare
from gmdf_cli.weights import load_weights

from .conftest import DETECTOR_WEIGHTS, MEDIA, TinyWeights, assert_schema, detector_options, invoke_gmdf
from .synthdata import write_domain

QUIET = Console(stderr=True, quiet=True)
HAVE_RETINAFACE = (DETECTOR_WEIGHTS / "detection_mobilenet0.25_Final.pth").is_file()
DET = ["--detector-weights", str(DETECTOR_WEIGHTS)] if HAVE_RETINAFACE else []


def _det() -> dict:
    return {"detector": detector_options()}


@pytest.fixture(scope="module")
def weights(tiny_weights_factory: TinyWeights) -> Path:
    return tiny_weights_factory(seed=3, std=0.3, domains=("blend", "noise"))


PAPER_DOMAINS = {
    "ff": ("blend", 10),
    "wdf": ("noise", 11),
    "celeb": ("blend", 12),
    "dff": ("noise", 13),
    "dfdc": ("blend", 14),
}
"""Generated domains named like the paper's datasets: name -> (kind of forgery, seed)."""


def _add_domains(base: Path, cache: Path, names: list[str]) -> Path:
    for name in names:
        kind, seed = PAPER_DOMAINS[name]
        write_domain(base / name, kind, videos=6, frames=2, seed=seed)
        run_prepare(
            PrepareRequest(layout="folder", root=base / name, out=cache, domain=name, frames=2, **_det()), QUIET
        )
    return cache


@pytest.fixture(scope="module")
def domains_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ff and dfdc: the domains the cache eval scores (the fast tier prepares no more)."""
    base = tmp_path_factory.mktemp("proto")
    return _add_domains(base, base / "cache", ["ff", "dfdc"])


@pytest.fixture(scope="module")
def protocol_cache(domains_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every domain the protocols name: a copy of ``domains_cache`` with wdf, celeb and dff prepared into it."""
    base = tmp_path_factory.mktemp("proto-all")
    shutil.copytree(domains_cache, base / "cache")
    return _add_domains(base, base / "cache", ["wdf", "celeb", "dff"])


def test_cache_eval_json_contract_markdown_and_roc(weights: Path, domains_cache: Path, tmp_path: Path) -> None:
    out = invoke_gmdf(
        "eval",
        "--weights",
        str(weights),
        "--data",
        str(domains_cache),
        "--domains",
        "ff,dfdc",
        "--split",
        "train",
        "--level",
        "video",
        "--json",
        "--out",
        str(tmp_path / "o"),
        "--p-real",
        "0.5",
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert_schema("EvalReport", report)
    assert report["level"] == "video" and set(report["domains"]) == {"ff", "dfdc"}
    for m in report["domains"].values():
        assert set(m) >= {"auc", "acc", "eer", "ap", "n_real", "n_fake"} and m["n_real"] and m["n_fake"]
    # M_EER recomputed here by brute force from the same model's video scores: per domain, the smallest
    # 0.5 * FRR + 0.5 * FAR over every threshold (the --p-real given), then the worst domain
    model, _, _ = load_weights(str(weights))
    scored = score_cache(model, domains_cache, ["ff", "dfdc"], "train", QUIET)
    worst = 0.0
    for s in scored.values():
        labels, scores = (np.asarray(v, dtype=float) for v in s.at("video"))
        best = min(
            0.5 * ((scores >= t) & (labels == 0)).sum() / (labels == 0).sum()
            + 0.5 * ((scores < t) & (labels == 1)).sum() / (labels == 1).sum()
            for t in [*scores, np.inf]
        )
        worst = max(worst, best)
    assert report["m_eer"] == pytest.approx(worst)
    assert (tmp_path / "o" / "metrics.md").read_text().startswith("**video-level**")
    assert (tmp_path / "o" / "roc_video.png").stat().st_size > 1000
    both = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert both["level"] == "video"
    bad = invoke_gmdf("eval", "--weights", str(weights), "--data", str(domains_cache), "--domains", "nope")
    assert bad.returncode == 2 and "'nope' has no test crops" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
@pytest.mark.skipif(not (MEDIA / "celebdf_hantschmann").is_dir(), reason="../shared/media is not here")
def test_folder_eval_with_the_default_weights_matches_sklearn_on_the_scan_scores() -> None:
    """Issue #5, acceptance 2, as a user runs it: no --weights means the shipped default detector."""
    folder = MEDIA / "celebdf_hantschmann"
    scan = invoke_gmdf("scan", str(folder / "real"), str(folder / "fake"), "--json", "--frames", "4", *DET)
    assert scan.returncode == 0, scan.stderr
    files = json.loads(scan.stdout)["files"]
    labels = [int("/fake/" in f["path"]) for f in files]
    video_auc = roc_auc_score(labels, [f["score"] for f in files])
    frame_labels, frame_scores = [], []
    for f, label in zip(files, labels, strict=True):
        for frame in f["frames"]:
            if frame["faces"]:
                frame_labels.append(label)
                frame_scores.append(max(face["score"] for face in frame["faces"]))
    frame_auc = roc_auc_score(frame_labels, frame_scores)

    ev = invoke_gmdf("eval", str(folder), "--json", "--frames", "4", *DET)
    assert ev.returncode == 0, ev.stderr
    report = json.loads(ev.stdout)
    assert_schema("EvalReport", report)
    assert report["video"]["domains"]["celebdf_hantschmann"]["auc"] == pytest.approx(video_auc, abs=1e-12)
    assert report["frame"]["domains"]["celebdf_hantschmann"]["auc"] == pytest.approx(frame_auc, abs=1e-12)
    assert report["video"]["domains"]["celebdf_hantschmann"]["n_real"] == 6


def _results(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


@pytest.mark.slow
def test_multi_domain_protocol_runs_and_resumes_without_redoing_parts(protocol_cache: Path, tmp_path: Path) -> None:
    run = tmp_path / "protocol"
    args = [
        "eval",
        "--protocol",
        "multi-domain",
        "--data",
        str(protocol_cache),
        "--out",
        str(run),
        "--epochs",
        "2",
        "--batch-size",
        "12",
        "--config",
        "vit-tiny",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gmdf_cli", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and len(_results(run / "results.json")) < 1:
        time.sleep(0.05)
    assert proc.poll() is None, "the protocol ended before it could be interrupted"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    first = _results(run / "results.json")
    assert 1 <= len(first) < 4
    done_key = next(iter(first))
    stamp = (run / done_key.replace("/", "").replace(" ", "-") / "best.safetensors").stat().st_mtime_ns

    again = invoke_gmdf(*args, "--json")
    assert again.returncode == 0, again.stderr
    results = json.loads(again.stdout)
    assert_schema("ProtocolResults", results)
    assert list(results) == ["w/o ff", "w/o wdf", "w/o celeb", "w/o dff"]
    assert f"{done_key}: done already, skipped" in again.stderr
    assert (run / done_key.replace("/", "").replace(" ", "-") / "best.safetensors").stat().st_mtime_ns == stamp
    for key, r in results.items():
        held = key.split()[-1]
        assert r["targets"] == [held, "dfdc"] and held not in r["sources"] and len(r["sources"]) == 3
        assert set(r["video"]["domains"]) == {held, "dfdc"}
        assert r["video"]["m_eer"] is None or 0 <= r["video"]["m_eer"] <= 1
    table = (run / "results.md").read_text()
    assert "| w/o celeb |" in table and "M_EER" in table


def test_single_source_protocol_needs_its_domains(tmp_path: Path) -> None:
    cache = tmp_path / "c"
    cache.mkdir()
    (cache / "index.csv").write_text("domain,split,video_id,label,frame,path,identity\nx,train,v,0,0,p.png,v\n")
    out = invoke_gmdf("eval", "--protocol", "single-source", "--data", str(cache), "--out", str(tmp_path / "r"))
    assert out.returncode == 2 and "needs ff" in out.stderr


def test_video_scores_are_means_of_frames_grouped_by_id() -> None:
    from gmdf_cli.jobs.evaluate import Scored

    s = Scored(["a/x", "a/x", "b/x"], [1, 1, 0], [0.2, 0.8, 0.4])
    assert s.at("video") == ([1, 0], pytest.approx([0.5, 0.4]))
    assert np.allclose(s.at("frame")[1], [0.2, 0.8, 0.4])
