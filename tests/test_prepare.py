"""gmdf prepare on tiny generated copies of each dataset layout; the index is checked row by row."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import pytest
from rich.console import Console

from gmdf_cli.data.datasets import LAYOUTS
from gmdf_cli.errors import UsageError
from gmdf_cli.jobs.prepare import PrepareRequest, run_prepare

from .conftest import DETECTOR_WEIGHTS, MEDIA, detector_options, invoke_gmdf
from .synthdata import write_domain

QUIET = Console(stderr=True, quiet=True)
ASTRONAUT = Path(__file__).resolve().parents[1] / "examples" / "astronaut.png"


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("clip")
    write_domain(folder, "blend", videos=1, frames=3, seed=0)
    return folder / "real" / "v00.mp4"


def _det() -> dict:
    return {"detector": detector_options()}


def _prepare(layout: str, root: Path, out: Path, **kw) -> list[dict]:
    run_prepare(PrepareRequest(layout=layout, root=root, out=out, frames=2, **_det(), **kw), QUIET)
    with (out / "index.csv").open() as fh:
        return list(csv.DictReader(fh))


def _put(path: Path, source: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, path)


def _videos(rows: list[dict]) -> dict[str, dict]:
    return {r["video_id"]: r for r in rows}


def test_ff_layout_uses_the_official_splits(clip: Path, tmp_path: Path) -> None:
    root = tmp_path / "ff"
    for vid in ("000", "001", "002"):
        _put(root / "original_sequences/youtube/c23/videos" / f"{vid}.mp4", clip)
    for method in ("Deepfakes", "FaceSwap"):
        _put(root / f"manipulated_sequences/{method}/c23/videos/000_001.mp4", clip)
        _put(root / f"manipulated_sequences/{method}/c23/videos/002_000.mp4", clip)
    _put(root / "manipulated_sequences/Deepfakes/c40/videos/001_002.mp4", clip)  # other quality: ignored
    (root / "splits").mkdir()
    (root / "splits/train.json").write_text(json.dumps([["000", "001"]]))
    (root / "splits/val.json").write_text(json.dumps([]))
    (root / "splits/test.json").write_text(json.dumps([["002", "000"]]))
    videos = _videos(_prepare("ff", root, tmp_path / "cache"))
    assert set(videos) == {
        "youtube/000",
        "youtube/001",
        "youtube/002",
        "Deepfakes/000_001",
        "FaceSwap/000_001",
        "Deepfakes/002_000",
        "FaceSwap/002_000",
    }
    assert videos["Deepfakes/000_001"]["split"] == "train" and videos["Deepfakes/000_001"]["label"] == "1"
    assert videos["FaceSwap/002_000"]["split"] == "test" and videos["youtube/002"]["label"] == "0"
    assert all(r["domain"] == "ff" for r in videos.values())


def test_celeb_layout_reads_the_test_list(clip: Path, tmp_path: Path) -> None:
    root = tmp_path / "celeb"
    for rel in (
        "Celeb-real/id0_0000.mp4",
        "Celeb-real/id1_0000.mp4",
        "YouTube-real/00001.mp4",
        "Celeb-synthesis/id0_id1_0000.mp4",
        "Celeb-synthesis/id1_id0_0000.mp4",
    ):
        _put(root / rel, clip)
    (root / "List_of_testing_videos.txt").write_text("1 Celeb-real/id1_0000.mp4\n0 Celeb-synthesis/id1_id0_0000.mp4\n")
    videos = _videos(_prepare("celeb", root, tmp_path / "cache"))
    assert (
        videos["Celeb-real/id1_0000"]["split"] == "test" and videos["Celeb-synthesis/id1_id0_0000"]["split"] == "test"
    )
    assert videos["Celeb-real/id0_0000"]["split"] == videos["Celeb-synthesis/id0_id1_0000"]["split"] != "test"
    assert videos["Celeb-synthesis/id0_id1_0000"]["label"] == "1" and videos["YouTube-real/00001"]["label"] == "0"


def test_dfdc_layout_metadata_and_test_labels(clip: Path, tmp_path: Path) -> None:
    root = tmp_path / "dfdc"
    part = root / "dfdc_train_part_0"
    _put(part / "aaa.mp4", clip)
    _put(part / "bbb.mp4", clip)
    (part / "metadata.json").write_text(
        json.dumps(
            {
                "aaa.mp4": {"label": "REAL", "split": "train"},
                "bbb.mp4": {"label": "FAKE", "original": "aaa.mp4"},
                "missing.mp4": {"label": "FAKE"},
            }
        )
    )
    _put(root / "test/ccc.mp4", clip)
    (root / "test/labels.csv").write_text("filename,label\nccc.mp4,1\n")
    videos = _videos(_prepare("dfdc", root, tmp_path / "cache"))
    assert set(videos) == {"dfdc_train_part_0/aaa", "dfdc_train_part_0/bbb", "test/ccc"}
    assert videos["dfdc_train_part_0/aaa"]["split"] == videos["dfdc_train_part_0/bbb"]["split"]  # same identity
    assert videos["test/ccc"]["split"] == "test" and videos["test/ccc"]["label"] == "1"


def test_wdf_layout_frame_sequences(tmp_path: Path) -> None:
    root = tmp_path / "wdf"
    image = cv2.imread(str(ASTRONAUT))
    for name in ("real_train/1/real/seq0", "real_test/5/real/seq0", "fake_train/2/fake/seq1", "fake_test/7/fake/seq0"):
        for i in range(3):
            (root / name).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / name / f"{i}.png"), image)
    rows = _prepare("wdf", root, tmp_path / "cache")
    videos = _videos(rows)
    assert videos["real_test/5/real/seq0"]["split"] == "test" and videos["fake_test/7/fake/seq0"]["label"] == "1"
    assert videos["fake_train/2/fake/seq1"]["split"] in {"train", "val"}
    assert sum(r["video_id"] == "real_train/1/real/seq0" for r in rows) == 2  # 2 of its 3 frames


def test_dff_layout_keeps_a_real_and_its_fakes_together(tmp_path: Path) -> None:
    root = tmp_path / "dff"
    for sub in ("wiki", "inpainting", "insight", "text2img"):
        for name in ("00/a.jpg", "01/b.jpg"):
            _put(root / sub / name, ASTRONAUT)
    rows = _prepare("dff", root, tmp_path / "cache")
    videos = _videos(rows)
    assert len(videos) == 8 and videos["wiki/00/a"]["label"] == "0" and videos["insight/00/a"]["label"] == "1"
    assert len({videos[f"{s}/00/a"]["split"] for s in ("wiki", "inpainting", "insight", "text2img")}) == 1


def test_deepfakebench_json_layout(tmp_path: Path) -> None:
    root = tmp_path / "dfb"
    for i in range(2):
        _put(root / f"frames/real/v0/{i}.png", ASTRONAUT)
        _put(root / f"frames/fake/v1/{i}.png", ASTRONAUT)
    spec = {
        "FF-DF": {
            "FF-real": {
                "train": {"v0": {"label": "FF-real", "frames": ["frames/real/v0/0.png", "frames/real/v0/1.png"]}}
            },
            "FF-DF": {"test": {"v1": {"label": "FF-DF", "frames": ["frames/fake/v1/0.png"]}}},
        }
    }
    (root / "FF-DF.json").write_text(json.dumps(spec))
    rows = _prepare("deepfakebench", root, tmp_path / "cache", domain="ffdf", json_file=root / "FF-DF.json")
    videos = _videos(rows)
    assert videos["FF-real/v0"]["split"] == "train" and videos["FF-real/v0"]["label"] == "0"
    assert videos["FF-DF/v1"]["split"] == "test" and videos["FF-DF/v1"]["label"] == "1"
    assert {r["domain"] for r in rows} == {"ffdf"}


def test_folder_layout_resumes_and_reports_skips(tmp_path: Path) -> None:
    root = tmp_path / "folder"
    write_domain(root, "noise", videos=2, frames=3, seed=1)
    (root / "fake" / "junk.mp4").write_text("not a video")
    blank = root / "real" / "blank.png"
    cv2.imwrite(str(blank), cv2.imread(str(ASTRONAUT)) * 0)
    out = tmp_path / "cache"
    summary = run_prepare(PrepareRequest(layout="folder", root=root, out=out, frames=2, **_det()), QUIET)
    assert summary["prepared"] == 4 and summary["skipped"] == {"corrupt or unreadable": 1, "no face found": 1}
    records = sorted(p.name for p in (out / "records" / "folder").iterdir())
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "records" / "folder").iterdir()}
    again = run_prepare(PrepareRequest(layout="folder", root=root, out=out, frames=2, **_det()), QUIET)
    assert again == summary and sorted(p.name for p in (out / "records" / "folder").iterdir()) == records
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())  # nothing redone


def test_prepare_cli_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="real/ folder"):
        run_prepare(PrepareRequest(layout="folder", root=tmp_path, out=tmp_path / "c"), QUIET)
    out = invoke_gmdf("prepare", "--domain", "celeb", "--root", str(tmp_path), "--out", str(tmp_path / "c"))
    assert out.returncode == 2 and "Celeb-DF test list not found" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_layout_on_a_root_without_its_files_is_one_line_and_writes_nothing(layout: str, tmp_path: Path) -> None:
    """Each registered layout (one added there gets this test too), pointed at an empty folder: exit 2 and one line
    saying what it expected, and no cache folder left behind."""
    (tmp_path / "root").mkdir()
    out = invoke_gmdf("prepare", "--domain", layout, "--root", str(tmp_path / "root"), "--out", str(tmp_path / "c"))
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and out.stderr.startswith("gmdf: error: "), out.stderr
    assert not (tmp_path / "c").exists()


@pytest.mark.slow
@pytest.mark.skipif(not (MEDIA / "celebdf_hantschmann").is_dir(), reason="../shared/media is not here")
def test_prepare_folder_on_real_celeb_df(tmp_path: Path) -> None:
    out = invoke_gmdf(
        "prepare",
        "--domain",
        "folder",
        "--root",
        str(MEDIA / "celebdf_hantschmann"),
        "--out",
        str(tmp_path / "cache"),
        "--frames",
        "4",
        "--group-by",
        "id[0-9]+",
        "--workers",
        "2",
        *(["--detector-weights", str(DETECTOR_WEIGHTS)] if _det().get("detector_weights") else ["--detector", "mtcnn"]),
    )
    assert out.returncode == 0, out.stderr
    with (tmp_path / "cache" / "index.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len({r["video_id"] for r in rows}) == 12 and len(rows) == 48
    by_identity: dict[str, set[str]] = {}
    for r in rows:
        by_identity.setdefault(r["identity"], set()).add(r["split"])
    assert all(len(splits) == 1 for splits in by_identity.values())  # an identity never spans two splits
    assert {r["label"] for r in rows} == {"0", "1"}


def test_a_pairs_file_keeps_each_fake_in_the_split_of_its_real(tmp_path: Path) -> None:
    from gmdf_cli.data.datasets import LayoutOptions, list_sources

    rows = []
    for i in range(40):
        real, fake = f"r{i:03d}x.jpg", f"f{(i * 7919) % 1000:03d}q.jpg"
        for sub, name in (("real", real), ("fake", fake)):
            (tmp_path / sub).mkdir(exist_ok=True)
            (tmp_path / sub / name).write_bytes(b"")
        rows.append(f"{fake},{real}")
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("fake,real\n" + "\n".join(rows) + "\n")
    sources = list_sources("folder", tmp_path, LayoutOptions(domain="dfdc", pairs=pairs))
    split_of = {s.path.name: s.split for s in sources}
    assert len({split_of[line.split(",")[1]] for line in rows}) == 3  # the pairs are spread over all three splits
    for line in rows:
        fake, real = line.split(",")
        assert split_of[fake] == split_of[real]
    pairs.write_text("fake,real\nmissing.jpg,r000x.jpg\n")
    with pytest.raises(UsageError, match=r"fake/missing\.jpg"):
        list_sources("folder", tmp_path, LayoutOptions(domain="dfdc", pairs=pairs))
