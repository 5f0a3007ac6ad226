"""Corruptions against their DeeperForensics-1.0 definitions, and `gmdf robustness` end to end on real videos."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from gmdf_cli.analysis.corruptions import (
    CORRUPTIONS,
    JPEG_QUALITY,
    corrupt_image,
    encode_h264,
    ffmpeg_exe,
    h264_command,
)

from .conftest import DETECTOR_WEIGHTS, MEDIA, TinyWeights, assert_schema, invoke_gmdf

RNG = np.random.default_rng(0)
DET = ["--detector-weights", str(DETECTOR_WEIGHTS)] if DETECTOR_WEIGHTS.is_dir() else ["--detector", "mtcnn"]


def test_contrast_scales_pixels() -> None:
    image = np.full((16, 16, 3), 200, np.uint8)
    assert (corrupt_image(image, "contrast", 1, RNG) == 170).all()  # 200 * 0.85
    assert (corrupt_image(image, "contrast", 5, RNG) == 70).all()  # 200 * 0.35


def test_saturation_level_5_leaves_no_chroma_and_level_1_keeps_40_percent() -> None:
    image = RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    grey = corrupt_image(image, "saturation", 5, RNG)
    ycc = cv2.cvtColor(grey, cv2.COLOR_BGR2YCrCb).astype(int)
    assert np.abs(ycc[..., 1:] - 128).max() <= 1
    assert np.abs(grey.astype(int) - grey[..., :1]).max() <= 2  # B = G = R: grey
    chroma_in = cv2.cvtColor(image, cv2.COLOR_BGR2YCrCb).astype(float)[..., 1:] - 128
    chroma_out = cv2.cvtColor(corrupt_image(image, "saturation", 1, RNG), cv2.COLOR_BGR2YCrCb).astype(float)[..., 1:]
    ratio = np.abs(chroma_out - 128).sum() / np.abs(chroma_in).sum()
    assert ratio == pytest.approx(0.4, abs=0.05)


@pytest.mark.parametrize("level", [1, 2, 3, 4, 5])
def test_blur_kernel_sizes(level: int) -> None:
    size = int(CORRUPTIONS["blur"].levels[level - 1])
    image = RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    kernel = cv2.getGaussianKernel(size, size / 6)  # the definition: kernel p x p, sigma p / 6
    expected = cv2.sepFilter2D(image.astype(np.float32), -1, kernel, kernel, borderType=cv2.BORDER_REFLECT_101)
    got = corrupt_image(image, "blur", level, RNG).astype(np.float32)
    error = np.abs(got - expected).mean()  # OpenCV's uint8 blur is fixed-point: off by a rounding step at most
    assert error < 0.5 and np.abs(got - expected).max() <= 2.0
    other = cv2.getGaussianKernel(size + 2, (size + 2) / 6)  # a neighbouring kernel size is told apart
    wrong = cv2.sepFilter2D(image.astype(np.float32), -1, other, other, borderType=cv2.BORDER_REFLECT_101)
    assert np.abs(got - wrong).mean() > 2 * error


@pytest.mark.parametrize("level", [1, 2, 3, 4, 5])
def test_pixelation_factors(level: int) -> None:
    image = RNG.integers(0, 256, (60, 60, 3), dtype=np.uint8)
    factor = int(CORRUPTIONS["pixelation"].levels[level - 1])
    out = corrupt_image(image, "pixelation", level, RNG)
    blocks = out.reshape(60 // factor, factor, 60 // factor, factor, 3)
    assert (blocks == blocks[:, :1, :, :1]).all()  # constant over factor x factor cells
    assert not (out.reshape(60 // factor, factor, 60 // factor, factor, 3)[:, :1, :, :1] == out[0, 0]).all()


def test_block_count_follows_the_frame_size() -> None:
    black = np.zeros((512, 700, 3), np.uint8)
    out = corrupt_image(black, "block", 1, np.random.default_rng(1))
    grey = int((out[..., 0] == 128).sum())
    assert 0.8 * 32 * 64 <= grey <= 32 * 64  # 16 * 512 / 256 = 32 blocks of 8x8 (few overlap)


def test_every_block_level_changes_a_face_crop_and_more_with_each_level() -> None:
    crop = np.zeros((224, 224, 3), np.uint8)  # a face crop as prepare stores it: shorter side < 256
    grey = [
        int((corrupt_image(crop, "block", lv, np.random.default_rng(0))[..., 0] == 128).sum()) for lv in range(1, 6)
    ]
    assert grey[0] >= 0.8 * 14 * 64  # 16 * 224 / 256 = 14 blocks at level 1
    assert all(a < b for a, b in itertools.pairwise(grey)), grey


def test_noise_variance_in_ycbcr() -> None:
    image = np.full((200, 200, 3), 128, np.uint8)
    out = corrupt_image(image, "noise", 3, np.random.default_rng(2))
    y = cv2.cvtColor(out, cv2.COLOR_BGR2YCrCb).astype(float) / 255.0
    assert y.std(axis=(0, 1)).mean() == pytest.approx(np.sqrt(CORRUPTIONS["noise"].levels[2]), rel=0.1)


def test_still_images_use_jpeg_qualities() -> None:
    image = RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for level, quality in enumerate(JPEG_QUALITY, start=1):
        ok, ref = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert ok and np.array_equal(corrupt_image(image, "compression", level, RNG), cv2.imdecode(ref, 1))


def test_h264_crf_values_reach_the_encoder(tmp_path: Path) -> None:
    clip = tmp_path / "in.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (64, 64))
    for i in range(5):
        writer.write(np.full((64, 64, 3), i * 40, np.uint8))
    writer.release()
    for level, crf in enumerate(CORRUPTIONS["compression"].levels, start=1):
        command = h264_command(clip, tmp_path / "x.mp4", crf)
        assert command[command.index("-crf") + 1] == f"{crf:g}" and "libx264" in command
        out = encode_h264(clip, tmp_path / f"crf{level}.mp4", level)
        assert f"crf={crf:.1f}".encode() in out.read_bytes()  # x264 writes its settings into the stream


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_every_corruption_keeps_the_image_is_reproducible_and_grows_with_its_level(name: str) -> None:
    """Each registered corruption (one added there gets this test too), on the README's photo: the image keeps its
    size and type, the same seed gives the same image, and each level moves it further from the original than the
    level before."""
    image = cv2.imread(str(Path(__file__).resolve().parents[1] / "examples" / "astronaut.png"))
    distances = []
    for level in range(1, len(CORRUPTIONS[name].levels) + 1):
        out = corrupt_image(image, name, level, np.random.default_rng(0))
        assert out.shape == image.shape and out.dtype == np.uint8
        assert np.array_equal(out, corrupt_image(image, name, level, np.random.default_rng(0)))
        distances.append(float(np.abs(out.astype(int) - image).mean()))
    assert distances[0] > 0 and all(a < b for a, b in itertools.pairwise(distances)), distances


@pytest.fixture(scope="module")
def weights(tiny_weights_factory: TinyWeights) -> Path:
    return tiny_weights_factory(seed=1)


@pytest.mark.slow
@pytest.mark.skipif(not (MEDIA / "celebdf_hantschmann").is_dir(), reason="../shared/media is not here")
def test_robustness_all_on_real_videos_writes_table_plot_sheet_and_resumes(weights: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    for label in ("real", "fake"):
        (data / label).mkdir(parents=True)
        for video in sorted((MEDIA / "celebdf_hantschmann" / label).glob("*.mp4"))[:2]:
            # the first two seconds, stream-copied: the sweep re-encodes each video whole at five CRFs, and the full
            # clips (10 to 16 s) made this the suite's longest test for no more coverage
            target = data / label / video.name
            cut = [ffmpeg_exe(), "-v", "error", "-i", str(video), "-t", "2", "-c", "copy", str(target)]
            subprocess.run(cut, check=True, capture_output=True, timeout=120)
    out = tmp_path / "report"
    args = [
        "robustness",
        str(data),
        "--weights",
        str(weights),
        "--corruption",
        "all",
        "--frames",
        "2",
        "--out",
        str(out),
        *DET,
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gmdf_cli", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and len(list((out / "records").glob("*.json"))) < 1:
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep ended before it could be interrupted"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = {p: p.stat().st_mtime_ns for p in (out / "records").glob("*.json")}
    assert 1 <= len(kept) < 4

    done = invoke_gmdf(*args, "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert_schema("RobustnessReport", summary)
    assert summary["clean"]["n"] == 4 and summary["files"] == 4
    assert set(summary["results"]) == set(CORRUPTIONS)
    for per_level in summary["results"].values():
        assert set(per_level) == {"1", "2", "3", "4", "5"}
    records = [json.loads(p.read_text()) for p in (out / "records").glob("*.json")]
    labels = [r["label"] for r in records]
    for name, per_level in summary["results"].items():  # each AUC is the one of the saved per-file scores
        for level, m in per_level.items():
            pairs = [(lab, r["scores"][f"{name}/{level}"]["score"]) for lab, r in zip(labels, records, strict=True)]
            pairs = [(lab, score) for lab, score in pairs if score is not None]  # files with no face left out
            if len({lab for lab, _ in pairs}) < 2:
                assert m["auc"] is None
                continue
            expected = roc_auc_score([lab for lab, _ in pairs], [score for _, score in pairs])
            assert m["auc"] == pytest.approx(expected), (name, level)
    assert summary["average"]["all"] is not None
    sample = str(sorted((data / "fake").iterdir())[0])  # redone once for the contact sheet, which comes at the end
    for p, stamp in kept.items():  # files finished before the kill were not redone
        assert p.stat().st_mtime_ns == stamp or json.loads(p.read_text())["path"] == sample
    for name in ("robustness.md", "auc_vs_severity.png", "contact_sheet.png"):
        assert (out / name).stat().st_size > 200, name
    sheet = cv2.imread(str(out / "contact_sheet.png"))
    assert sheet.shape[0] >= 7 * 160 and sheet.shape[1] == 6 * 160  # 7 corruptions x (clean + 5 levels)
    assert "| compression |" in (out / "robustness.md").read_text()


def test_robustness_on_a_prepared_cache_and_bad_options(weights: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    (cache / "crops").mkdir(parents=True)
    astronaut = cv2.imread(str(Path(__file__).resolve().parents[1] / "examples" / "astronaut.png"))
    lines = ["domain,split,video_id,label,frame,path,identity"]
    for v in range(4):
        crop = cv2.resize(astronaut[40:260, 150:330], (224, 224))
        cv2.imwrite(str(cache / "crops" / f"{v}.png"), np.roll(crop, v * 7, axis=1))
        lines.append(f"d,test,v{v},{v % 2},0,crops/{v}.png,v{v}")
    (cache / "index.csv").write_text("\n".join(lines) + "\n")
    out = invoke_gmdf(
        "robustness",
        str(cache),
        "--weights",
        str(weights),
        "--corruption",
        "blur,noise",
        "--levels",
        "1,5",
        "--out",
        str(tmp_path / "r"),
        "--json",
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert_schema("RobustnessReport", summary)
    assert set(summary["results"]) == {"blur", "noise"} and set(summary["results"]["blur"]) == {"1", "5"}
    assert summary["parameters"]["at"] == "crop"
    bad = invoke_gmdf("robustness", str(cache), "--weights", str(weights), "--corruption", "fog")
    assert bad.returncode == 2 and "unknown ['fog']" in bad.stderr
    bad = invoke_gmdf("robustness", str(cache), "--weights", str(weights), "--levels", "0-7")
    assert bad.returncode == 2 and "levels go from 1 to 5" in bad.stderr
