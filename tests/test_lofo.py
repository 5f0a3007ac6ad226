"""gmdf_cli/tools/lofo.py: leave-one-family-out figures, only from models that never saw the family."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from gmdf_cli.data.cache import INDEX_FIELDS
from gmdf_cli.engine.batching import score_crops
from gmdf_cli.model import build_model, get_config
from gmdf_cli.tools import lofo
from gmdf_cli.weights import load_weights, save_checkpoint
from tests.conftest import perturbed


def write_cache(cache: Path, domains: tuple[str, ...], videos: int = 3, frames: int = 2) -> None:
    """Per domain ``videos`` real and as many fake videos of ``frames`` noise crops each (fakes a little brighter)."""
    rng = np.random.default_rng(len(domains))
    rows = []
    for domain in domains:
        for label in (0, 1):
            for v in range(videos):
                for f in range(frames):
                    rel = f"crops/{domain}/{label}_{v}/{f}.png"
                    (cache / rel).parent.mkdir(parents=True, exist_ok=True)
                    pixels = rng.integers(0, 200, (40, 40, 3)) + 40 * label * rng.random()
                    cv2.imwrite(str(cache / rel), np.clip(pixels, 0, 255).astype(np.uint8))
                    rows.append([domain, "test", f"{label}/{v}", label, f, rel, f"p{v}"])
    with (cache / "index.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([INDEX_FIELDS, *rows])


def save_model(path: Path, domains: list[str], seed: int) -> str:
    torch.manual_seed(seed)
    model = perturbed(build_model(get_config("vit-tiny").with_domains(domains)), std=0.3, seed=seed)
    return str(save_checkpoint(model, path))


def expected_video_auc(weights: str, cache: Path, domain: str) -> float:
    """The figure computed another way: each video's crops scored together, the mean per video, sklearn's AUC."""
    model = load_weights(weights)[0]
    with (cache / "index.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["domain"] == domain]
    videos = sorted({(r["video_id"], int(r["label"])) for r in rows})
    means = [
        float(np.mean(score_crops(model, [cv2.imread(str(cache / r["path"])) for r in rows if r["video_id"] == vid])))
        for vid, _ in videos
    ]
    return float(roc_auc_score([label for _, label in videos], means))


def test_each_family_is_scored_per_video_and_averaged_over_its_runs(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_cache(tmp_path / "a", ("swap",))
    write_cache(tmp_path / "b", ("talk",))
    w1 = save_model(tmp_path / "w1.safetensors", ["blend", "photos"], seed=1)
    w2 = save_model(tmp_path / "w2.safetensors", ["blend", "photos"], seed=2)
    held = [("swap", w1), ("talk", w1), ("swap", w2)]
    summary = lofo.leave_one_family_out([tmp_path / "a", tmp_path / "b"], held)
    swap = [expected_video_auc(w, tmp_path / "a", "swap") for w in (w1, w2)]
    talk = expected_video_auc(w1, tmp_path / "b", "talk")
    assert summary["runs"]["swap"][w1]["video_auc"] == pytest.approx(swap[0])
    assert summary["runs"]["swap"][w2]["video_auc"] == pytest.approx(swap[1])
    assert (summary["runs"]["talk"][w1]["n_real_videos"], summary["runs"]["talk"][w1]["n_fake_videos"]) == (3, 3)
    assert summary["families"] == pytest.approx({"swap": (swap[0] + swap[1]) / 2, "talk": talk})
    assert summary["mean"] == pytest.approx(((swap[0] + swap[1]) / 2 + talk) / 2)
    fams = summary["families"].values()
    assert summary["meets_bar"] == (summary["mean"] >= 0.8 and min(fams) >= 0.75)


def test_a_model_trained_on_the_family_it_is_judged_on_is_refused(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    write_cache(tmp_path / "c", ("celeb", "talk"))
    weights = save_model(tmp_path / "w.safetensors", ["celeb", "blend"], seed=0)
    lofo.leave_one_family_out([tmp_path / "c"], [("talk", weights)])  # never trained on talk: judged
    with pytest.raises(SystemExit, match="trained on celeb"):
        lofo.leave_one_family_out([tmp_path / "c"], [("celeb", weights)])
