"""The report an analyst reads and the terminal that tells the truth: the HTML page as a browser shows it, the
uncertain band in every output, data on stdout and messages on stderr, missing inputs refused before anything
loads, and one exit code per kind of failure in every command."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gmdf_cli import Detector
from gmdf_cli.errors import WeightsError
from gmdf_cli.weights import export_weights
from gmdf_cli.weights.card import calibrate, read_card, read_decision

from .conftest import (
    DETECTOR_WEIGHTS,
    HAVE_RETINAFACE,
    TinyWeights,
    assert_schema,
    detector_options,
    invoke_gmdf,
    run_gmdf,
)

ROOT = Path(__file__).resolve().parents[1]
ASTRONAUT = ROOT / "examples" / "astronaut.png"
CLIP = ROOT / "examples" / "astronaut.mp4"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DET = ["--detector-weights", str(DETECTOR_WEIGHTS)] if HAVE_RETINAFACE else ["--detector", "mtcnn"]
CARD = {
    "caveat": "A test model <b>not</b> for use.",
    "trained_on": "nothing",
    "validation": "none",
    "weaknesses": ["everything"],
    "intended_use": "tests",
}


@pytest.fixture(scope="module")
def weights(tiny_weights_factory: TinyWeights) -> Path:
    return tiny_weights_factory(seed=11, std=0.3)


@pytest.fixture(scope="module")
def banded(weights: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """The tiny weights exported with a card and an uncertainty band around the astronaut's own score."""
    score = Detector.from_pretrained(str(weights), device="cpu", face_detector=detector_options()).scan(ASTRONAUT).score
    assert score is not None
    target = tmp_path_factory.mktemp("b") / "banded.safetensors"
    band = [max(0.0, score - 0.05), min(1.0, score + 0.05)]
    export_weights(str(weights), target, half=False, threshold=score, band=band, card=CARD)
    return target, score


# -- the uncertain band --------------------------------------------------------------------------------------------
def test_calibration_puts_the_threshold_at_the_equal_error_point_and_the_band_around_it() -> None:
    labels = [0] * 100 + [1] * 100
    reals = [i / 100 * 0.6 for i in range(100)]  # 0 .. 0.6
    fakes = [0.4 + i / 100 * 0.6 for i in range(100)]  # 0.4 .. 1.0: overlap between 0.4 and 0.6
    threshold, band = calibrate(labels, reals + fakes, rate=0.05)
    assert threshold == pytest.approx(0.5, abs=0.01)
    assert band[0] == pytest.approx(0.43, abs=0.01) and band[1] == pytest.approx(0.57, abs=0.01)
    separated, tight = calibrate(labels, [s * 0.4 for s in reals] + fakes, rate=0.05)
    assert tight == [separated, separated]  # no overlap beyond the rate: no uncertain verdicts


def test_max_uncertain_narrows_a_wide_band_to_hold_at_most_that_share() -> None:
    """A weak detector (scores of both classes over the whole range): the rate's band holds most items; with
    max_uncertain 1/3 it holds at most a third of them, still around the threshold, and no narrower than needed."""
    labels = [0] * 100 + [1] * 100
    reals = [i / 100 * 0.9 for i in range(100)]  # 0 .. 0.9
    fakes = [0.1 + i / 100 * 0.9 for i in range(100)]  # 0.1 .. 1.0
    scores = np.array(reals + fakes)
    threshold, wide = calibrate(labels, list(scores), rate=0.05)
    inside = float(np.mean((scores >= wide[0]) & (scores < wide[1])))
    assert inside > 0.6
    same, band = calibrate(labels, list(scores), rate=0.05, max_uncertain=1 / 3)
    assert same == threshold and wide[0] < band[0] <= threshold <= band[1] < wide[1]
    assert 0.30 <= float(np.mean((scores >= band[0]) & (scores < band[1]))) <= 1 / 3
    assert calibrate(labels, list(scores), rate=0.05, max_uncertain=0.9)[1] == wide  # already within: unchanged


def test_uncertain_verdict_in_json_csv_html_and_the_table(banded: tuple[Path, float], tmp_path: Path) -> None:
    path, score = banded
    out_dir, csv_path = tmp_path / "report", tmp_path / "faces.csv"
    args = ["scan", str(ASTRONAUT), "--weights", str(path), "--out", str(out_dir), "--csv", str(csv_path), *DET]
    done = invoke_gmdf(*args, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert_schema("ScanReport", report)
    entry = report["files"][0]
    assert entry["verdict"] == "uncertain" and entry["band"][0] <= score < entry["band"][1]
    assert entry["tracks"][0]["verdict"] == "uncertain"
    assert {row["file_verdict"] for row in csv.DictReader(csv_path.open())} == {"uncertain"}
    assert 'class="v uncertain">uncertain' in (out_dir / "report.html").read_text()
    table = invoke_gmdf(*args[:-2], *DET)  # without --json the table is on stdout
    assert "uncertain" in table.stdout and "gmdf scan" not in table.stderr and "1 uncertain" in table.stderr
    overridden = invoke_gmdf("scan", str(ASTRONAUT), "--weights", str(path), "--threshold", "0.5", "--json", *DET)
    assert json.loads(overridden.stdout)["files"][0]["band"] is None  # a band holds only around its own threshold


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ({"threshold": "abc"}, "not a number"),
        ({"threshold": "nan"}, "must lie in [0, 1]"),
        ({"threshold": "2.0"}, "must lie in [0, 1]"),
        ({"threshold": "-1"}, "must lie in [0, 1]"),
        ({"threshold": "0.5", "band": "[0.6, 0.7]"}, "does not hold the threshold"),
        ({"threshold": "0.5", "band": "[0.4]"}, "must be a list"),
        ({"band": "{"}, "not JSON"),
    ],
)
def test_stored_decisions_are_checked_before_use(meta: dict[str, str], message: str) -> None:
    with pytest.raises(WeightsError, match=message.replace("[", r"\[").replace("]", r"\]")):
        read_decision(meta)


def test_stored_cards_are_checked_field_by_field() -> None:
    assert read_card({"card": json.dumps(CARD)}) == CARD
    for bad in ({**CARD, "extra": "x"}, {**CARD, "weaknesses": "one"}, {**CARD, "caveat": "x" * 5000}, [1, 2]):
        with pytest.raises(WeightsError):
            read_card({"card": json.dumps(bad)})


# -- the HTML report as a person sees it -----------------------------------------------------------------------------
CHECKER = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || e.type)), true);
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt);
  const out = document.createElement('pre');
  out.id = 'gmdf-check';
  out.textContent = JSON.stringify({images: imgs.length, broken: broken, errors: window.__errors});
  document.body.appendChild(out);
});
</script>"""


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs headless Chromium (Debian package chromium)")
def test_report_opens_in_chromium_with_every_image_loaded(banded: tuple[Path, float], tmp_path: Path) -> None:
    """The README's command 1 with --heatmaps, opened in headless Chromium: the banner with the card, the faces
    beside their overlays, the detector that ran, the parameter table; every image loads, no script error; a
    screenshot is kept in the test's folder for a person to look at."""
    path, _ = banded
    out_dir = tmp_path / "scan-report"
    args = ["scan", str(CLIP), str(ASTRONAUT), "--weights", str(path), "--out", str(out_dir), "--heatmaps"]
    done = invoke_gmdf(*args, "--frames", "4", *DET)
    assert done.returncode == 0, done.stderr
    page = (out_dir / "report.html").read_text()
    for text in ("A test model &lt;b&gt;not&lt;/b&gt; for use.", "known weaknesses", "face detector", "batch_size"):
        assert text in page, text
    assert page.count('alt="Grad-CAM') == page.count('alt="face ') >= 2  # each face beside its overlay
    checked = tmp_path / "checked.html"
    checked.write_text(page.replace("</head>", CHECKER + "</head>", 1))
    chrome = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run(
        [*chrome, "--virtual-time-budget=5000", "--dump-dom", checked.as_uri()], capture_output=True, text=True
    )
    marker = dom.stdout.split('<pre id="gmdf-check">', 1)[1].split("</pre>", 1)[0]
    result = json.loads(marker.replace("&quot;", '"'))
    assert result["images"] >= 5 and result["broken"] == [] and result["errors"] == []
    shot = tmp_path / "report.png"
    subprocess.run(
        [*chrome, "--window-size=1100,2400", f"--screenshot={shot}", (out_dir / "report.html").as_uri()],
        capture_output=True,
    )
    assert shot.is_file() and shot.stat().st_size > 50_000


def _chromium(*args: str) -> subprocess.CompletedProcess:
    """Headless Chromium, as the tests run it."""
    assert CHROMIUM is not None
    chrome = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    return subprocess.run([*chrome, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def readme_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The README's first command with --heatmaps, run from the repository as a reader would: the shipped default
    detector on examples/astronaut.mp4 and examples/astronaut.png. Returns the report folder. The suite's costliest
    fixture after the real media: only slow tests ask for it."""
    out_dir = tmp_path_factory.mktemp("readme") / "scan-report"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(ROOT)
        args = ["scan", "examples/astronaut.mp4", "examples/astronaut.png", "--out", str(out_dir), "--heatmaps"]
        done = invoke_gmdf(*args, *DET)
    assert done.returncode == 0, done.stderr
    return out_dir


SCREENSHOT = ROOT / "docs" / "report.png"
"""The README's picture of the report: refreshed by the test below with GMDF_UPDATE_SCREENSHOT=1."""


def _few_colours(image: Any, colors: int = 256, exact: int = 64) -> Any:
    """A Pillow image in at most ``colors`` colours: its ``exact`` commonest kept as they are (the page, its text and
    borders), the others from a median cut over the rest's distinct colours (photos, heatmaps, the colour scale),
    every pixel mapped to its nearest. Pillow's own quantizers shift the page's white or drop the thin red lines."""
    from PIL import Image

    pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    values, inverse, counts = np.unique(pixels, axis=0, return_inverse=True, return_counts=True)
    common = np.argsort(-counts)[:exact]
    rest = np.setdiff1d(np.arange(len(values)), common)
    sample = Image.fromarray(np.repeat(values[rest], np.minimum(counts[rest], 3), axis=0)[None].astype(np.uint8))
    cut = sample.quantize(colors - exact, method=Image.Quantize.MEDIANCUT).getpalette() or []
    palette = np.concatenate([values[common], np.asarray(cut[: 3 * (colors - exact)]).reshape(-1, 3)]).astype(int)
    nearest = np.concatenate(
        [((values[i : i + 4096, None, :] - palette[None]) ** 2).sum(2).argmin(1) for i in range(0, len(values), 4096)]
    )
    out = Image.fromarray(nearest[inverse.reshape(-1)].reshape(image.height, image.width).astype(np.uint8), "P")
    out.putpalette(palette.astype(np.uint8).reshape(-1).tolist())
    return out


def _save_for_docs(shot: Path, target: Path, limit: int = 400_000) -> None:
    """The screenshot as the README shows it: the same size, in 256 colours, so that it stays under ``limit``."""
    from PIL import Image

    with Image.open(shot) as image:
        _few_colours(image).save(target, optimize=True)
    assert target.stat().st_size < limit, target.stat().st_size


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs headless Chromium (Debian package chromium)")
def test_results_come_first_and_how_it_ran_last_and_folded(readme_report: Path, tmp_path: Path) -> None:
    """The README's command, as Chromium lays the page out: the summary, then each file's section, then "How it
    ran", folded. A screenshot of the top of the page is kept (GMDF_UPDATE_SCREENSHOT=1: as docs/report.png)."""
    page = (readme_report / "report.html").as_uri()
    dom = _chromium("--virtual-time-budget=5000", "--dump-dom", page).stdout
    order = [dom.find(mark) for mark in ('id="summary"', 'id="f0"', 'id="f1"', 'id="how-it-ran"')]
    assert -1 not in order and order == sorted(order), order
    folded = dom[order[-1] :].split(">", 1)[0]
    assert folded.startswith('id="how-it-ran"') and "open" not in folded  # <details id="how-it-ran" ...>, closed
    assert "<section" not in dom[order[-1] :]  # nothing of a file's after it
    shot = tmp_path / "report.png"
    _chromium("--window-size=1100,1800", f"--screenshot={shot}", page)
    assert shot.is_file() and shot.stat().st_size > 50_000
    if os.environ.get("GMDF_UPDATE_SCREENSHOT") == "1":
        _save_for_docs(shot, SCREENSHOT)


@pytest.mark.slow
def test_the_off_face_note_fires_on_the_astronaut_photo(readme_report: Path) -> None:
    """The shipped default's Grad-CAM on examples/astronaut.png puts its hottest spot low on the left, off the face:
    the photo's section says so under the overlay."""
    page = (readme_report / "report.html").read_text()
    photo = page.split('<section id="f1">', 1)[1].split("</section>", 1)[0]
    assert "astronaut.png" in photo and 'alt="Grad-CAM 1"' in photo
    assert re.search(r"only \d+% of the heat lies on the face", photo), photo[-600:]


def _spot(size: int, centre: tuple[int, int], sigma: float) -> np.ndarray:
    """A Gaussian bump of peak 1 at ``centre`` (row, column) on a ``size`` x ``size`` map."""
    rows, cols = np.mgrid[0:size, 0:size]
    return np.exp(-((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2) / (2 * sigma**2)).astype(np.float32)


def test_the_off_face_note_fires_when_the_heat_lies_mostly_outside_the_face_box() -> None:
    """The face box is the detector's, inside its crop (narrower than the crop's square middle): a hot spot on the
    face gets no note; one beside the face (still inside the crop's middle square) gets it, and so does one in a
    corner over a faint glow on the face that holds most of the map's plain mass (as on the astronaut photo); an
    empty map gets its own note."""
    from gmdf_cli.analysis.heatmaps import cam_note
    from gmdf_cli.data.faces import face_box_in_crop

    size = 224
    box = face_box_in_crop((178, 56, 270, 176), size)  # the astronaut photo's face: 92 x 120 px
    glow = 0.4 * _spot(size, (112, 112), 60)
    assert cam_note(np.maximum(glow, _spot(size, (112, 112), 12)), box) is None
    beside = np.maximum(glow, _spot(size, (112, 40), 12))  # left of the face box, inside the crop's middle 1/1.3
    corner = np.maximum(glow, _spot(size, (200, 10), 12))
    x1, y1, x2, y2 = (round(v) for v in box)
    assert corner[y1:y2, x1:x2].sum() / corner.sum() > 0.5  # most of the plain mass is on the face
    for cam in (beside, corner):
        note = cam_note(cam, box)
        assert note is not None and "of the heat lies on the face" in note
    assert "empty map" in (cam_note(np.zeros((size, size), np.float32), box) or "")


def test_the_face_box_in_a_crop_is_where_crop_face_puts_it() -> None:
    """A white box drawn on a frame is found, after ``crop_face``, where ``face_box_in_crop`` says (to a pixel)."""
    import cv2

    from gmdf_cli.data.faces import crop_face, face_box_in_crop

    frame = np.zeros((400, 500, 3), np.uint8)
    box = (150.0, 80.0, 230.0, 190.0)  # 80 x 110, narrower than tall as detector boxes are
    cv2.rectangle(frame, (150, 80), (229, 189), (255, 255, 255), thickness=-1)
    crop = crop_face(frame, box, 224)
    rows, cols = np.nonzero(crop[:, :, 0] > 127)
    found = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
    assert np.allclose(found, face_box_in_crop(box, 224), atol=1.5), (found, face_box_in_crop(box, 224))


def test_the_timeline_draws_its_first_and_last_points_whole() -> None:
    """Every marker of the timeline, at the first and last frames and at scores 0 and 1 too, lies inside the axes."""
    from gmdf_cli.report.render import timeline_figure
    from gmdf_cli.report.results import FaceResult, FileResult, FrameResult

    scores = [0.0, 0.4, 1.0, 0.2, 0.95]
    frames = [FrameResult(i, i / 4, [FaceResult([0, 0, 9, 9], 0, s)], s) for i, s in enumerate(scores)]
    frames.append(FrameResult(5, 5 / 4))  # a last frame without a face: its mark at 0
    result = FileResult(Path("clip.mp4"), kind="video", verdict="real", score=0.5, frames=frames)
    fig = timeline_figure(result)
    fig.canvas.draw()
    ax = fig.axes[0]
    box = ax.get_window_extent()
    drawn = [line for line in ax.get_lines() if line.get_marker() not in (None, "None", "")]
    assert len(drawn) == 2
    for line in drawn:
        radius = line.get_markersize() / 2 * fig.dpi / 72
        for x, y in ax.transData.transform(line.get_xydata()):
            assert box.x0 <= x - radius and x + radius <= box.x1 and box.y0 <= y - radius and y + radius <= box.y1


def _report_of(files: list, parameters: dict, detector_sha: str = "d" * 64) -> str:
    """The HTML of a report holding ``files``, rendered by the real renderer."""
    from gmdf_cli.report.render import html_report
    from gmdf_cli.report.results import DetectorInfo, ModelInfo, ScanReport

    model = ModelInfo("tiny", "a" * 64, "file", "p", "vit-tiny", ["x"])
    detector = DetectorInfo("mtcnn", "facenet-pytorch", detector_sha, 480, "cpu")
    report = ScanReport("0.2.0", "now", model, detector, parameters, {"python": "3.11"}, files=files)
    return html_report(report, {})


def test_each_verdict_says_what_it_means_and_what_to_check_next() -> None:
    """Every file's section carries its verdict's two sentences, taken from the one table of them."""
    import html

    from gmdf_cli.report.render import VERDICT_MEANINGS
    from gmdf_cli.report.results import FileResult

    verdicts = ["fake", "real", "uncertain", "no-face", "error"]
    files = [FileResult(Path(f"{v}.png"), verdict=v, kind="image", score=0.5) for v in verdicts]
    page = _report_of(files, {})
    assert set(VERDICT_MEANINGS) == set(verdicts)
    for i, verdict in enumerate(verdicts):
        section = html.unescape(page.split(f'<section id="f{i}">', 1)[1].split("</section>", 1)[0])
        means, after = VERDICT_MEANINGS[verdict]
        assert means in section and after in section, verdict
        others = [VERDICT_MEANINGS[v][0] for v in verdicts if v != verdict]
        assert not any(text in section for text in others), verdict


def test_how_it_ran_reads_as_text_for_people() -> None:
    """Yes/no for booleans, lists joined with commas, floats to 4 significant digits, shortened hashes with the
    full value in the title: no Python list, bool, None or long float in the table."""
    params = {"paths": ["a.png", "b.mp4"], "heatmaps": True, "parquet": False, "threshold": 0.8587602376937867}
    params.update(csv=None, batch_size=16)
    mtcnn = "0123456789abcdef+fedcba9876543210+00112233445566aa"
    page = _report_of([], params, detector_sha=mtcnn)
    how = page.split('id="how-it-ran"', 1)[1]
    cells = dict(re.findall(r"<tr><th>(\w+)</th><td>([^<]*)</td></tr>", how))
    assert cells["paths"] == "a.png, b.mp4" and cells["heatmaps"] == "yes" and cells["parquet"] == "no"
    assert cells["threshold"] == "0.8588" and cells["csv"] == "-" and cells["batch_size"] == "16"
    for raw in ("[&#39;", "True", "False", "None", "0.85876"):
        assert raw not in how, raw
    for part in mtcnn.split("+"):
        assert f'title="{part}">{part[:12]}\u2026</code>' in how
    assert f'title="{"a" * 64}">{"a" * 12}\u2026</code>' in how


# -- the terminal --------------------------------------------------------------------------------------------------
def test_data_goes_to_stdout_and_messages_to_stderr() -> None:
    listed = invoke_gmdf("weights", "list")
    assert "gmdf-mnv2-dev" in listed.stdout and "gmdf-mnv2-dev" not in listed.stderr


LOADED = (
    "import atexit, sys\n"
    "atexit.register(lambda: print('LOADED', 'torch' in sys.modules, file=sys.stderr))\n"
    "from gmdf_cli.cli import main\n"
    "sys.argv = ['gmdf'] + sys.argv[1:]\n"
    "main()\n"
)


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ["scan", "MISSING"],
        ["scan", str(ASTRONAUT), "--weights", "MISSING.safetensors"],
        ["eval", "MISSING"],
        ["eval", "--data", "MISSING", "--domains", "x"],
        ["robustness", "MISSING"],
        ["prepare", "--domain", "folder", "--root", "MISSING", "--out", "c"],
        ["synth", "--root", "MISSING", "--out", "o"],
        ["train", "--domains", "a,b", "--data", "MISSING", "--out", "r"],
    ],
)
def test_a_missing_input_is_a_usage_error_before_anything_loads(args: list[str], tmp_path: Path) -> None:
    """Every command: one line, exit 2, and torch never imported (so no model could have loaded)."""
    argv = [a.replace("MISSING", str(tmp_path / "missing")) for a in args]
    done = subprocess.run([sys.executable, "-c", LOADED, *argv], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if not line.startswith("LOADED")]
    assert len(lines) == 1 and lines[0].startswith("gmdf: error:") and "missing" in lines[0], done.stderr
    assert "LOADED False" in done.stderr


def test_the_documented_exit_code_table_matches_the_code() -> None:
    from gmdf_cli.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_TERMINATED, EXIT_USAGE

    text = (ROOT / "docs" / "scan.md").read_text()
    section = text.split("## Exit codes", 1)[1].split("\n#", 1)[0]
    codes = {int(code) for code in re.findall(r"^\| (\d+) \|", section, re.M)}
    assert codes == {EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED}


@pytest.mark.slow
def test_detector_fallback_is_one_line_without_download_noise(weights: Path, tmp_path: Path) -> None:
    """Offline and without RetinaFace weights: gmdf's one warning, none of facexlib's own lines."""
    from gmdf_cli.data.faces import facexlib_weights_dir

    if (facexlib_weights_dir() / "detection_mobilenet0.25_Final.pth").is_file():
        pytest.skip("facexlib's own cache holds RetinaFace here, so nothing falls back")
    env = {"GMDF_DETECTOR_WEIGHTS": "", "HF_HUB_OFFLINE": "1", "no_proxy": "*", "https_proxy": "http://127.0.0.1:9"}
    done = run_gmdf("scan", str(ASTRONAUT), "--weights", str(weights), "--json", env=env)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "MTCNN" in line]
    assert len(warnings) == 1 and "Downloading" not in done.stderr and "http" not in done.stderr.lower()
    assert json.loads(done.stdout)["detector"]["name"] == "mtcnn"
    assert json.loads(done.stdout)["parameters"]["detector_requested"] == "retinaface"
    assert math.isfinite(json.loads(done.stdout)["files"][0]["score"])


def test_the_closing_line_gives_a_speed_and_the_caveat_only_when_files_were_scored() -> None:
    from gmdf_cli.report.render import closing_lines
    from gmdf_cli.report.results import DetectorInfo, FileResult, ModelCard, ModelInfo, ScanReport

    card = ModelCard("A caveat.", "x", "y", [], "z")
    model = ModelInfo("default", "0" * 64, "shipped", "p", "mnv2", ["a"], card=card)
    report = ScanReport("v", "now", model, DetectorInfo("retinaface", "w", "s", 480, "cpu"), {}, {})
    report.files = [FileResult(Path("broken.mp4"), error="cannot read file")]
    assert closing_lines(report, "default", files_per_second=217.5) == ["1 file: 1 error"]
    report.files += [FileResult(Path("a.png"), verdict="real", score=0.1)]
    assert closing_lines(report, "default", files_per_second=0.25) == [
        "2 files: 1 real, 1 error, 4.0 s a file",
        "note: A caveat.",
    ]
