"""Provenance beside the score: C2PA content credentials read by c2pa-python from the c2pa-python project's own test
files (``../shared/media/c2pa_contentauth``, skipped where absent), and metadata traces in files written here; in
the typed results, the table, JSON and the HTML report, escaped, and never in the score."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin
from rich.console import Console

from gmdf_cli import Detector
from gmdf_cli.engine.provenance import MAX_TEXT, read_provenance
from gmdf_cli.report.render import scan_table
from gmdf_cli.report.results import FileResult
from gmdf_cli.report.schema import from_jsonable

from .conftest import DETECTOR_WEIGHTS, HAVE_RETINAFACE, MEDIA, assert_schema, detector_options, invoke_gmdf

ROOT = Path(__file__).resolve().parents[1]
ASTRONAUT = ROOT / "examples" / "astronaut.png"
C2PA = MEDIA / "c2pa_contentauth"
DET = ["--detector-weights", str(DETECTOR_WEIGHTS)] if HAVE_RETINAFACE else ["--detector", "mtcnn"]
needs_c2pa_files = pytest.mark.skipif(not C2PA.is_dir(), reason="needs ../shared/media/c2pa_contentauth")
GENERATED = "C.jpg"
"""Signed (test signer) with a c2pa.created action whose digitalSourceType is algorithmicMedia (MANIFEST.tsv)."""
EDITED = "files-for-reading-tests__CA.jpg"
"""Signed: opened and colour-adjusted, with an ingredient."""
CHANGED = "files-for-reading-tests__XCA.jpg"
"""CA.jpg's manifest over an image changed after signing: assertion.dataHash.mismatch."""
AI_XMP = (
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    '<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
    'Iptc4xmpExt:DigitalSourceType="http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"/>'
    "</rdf:RDF></x:xmpmeta>"
)
HOSTILE = "<script>alert('gmdf')</script>\x1b[31m"
"""An EXIF Software value made to be markup in the report and an escape code in the terminal."""


def astronaut_jpeg(path: Path, software: str | None = None, xmp: str | None = None) -> Path:
    """The README's astronaut (a face) as a JPEG, with an EXIF Software tag and XMP when given; the image data is
    the same with or without them."""
    exif = Image.Exif()
    if software is not None:
        exif[0x0131] = software
    with Image.open(ASTRONAUT) as image:
        image.convert("RGB").save(path, "JPEG", quality=92, exif=exif.tobytes(), xmp=(xmp or "").encode())
    return path


# -- C2PA ----------------------------------------------------------------------------------------------------------
@needs_c2pa_files
def test_a_manifest_declaring_generated_media_is_read_with_its_claim() -> None:
    found = read_provenance(C2PA / GENERATED)
    assert found.c2pa == "present" and found.digital_source_type == "algorithmicMedia" and found.generated is True
    assert found.actions == ["c2pa.created"] and "c2pa-rs" in (found.claim_generator or "")
    assert "signingCredential.untrusted" in found.validation  # a test signer, on no trust list
    assert found.summary == "C2PA: generated"


@needs_c2pa_files
def test_a_file_changed_after_signing_is_tampered_and_its_signed_original_is_not() -> None:
    original, changed = read_provenance(C2PA / EDITED), read_provenance(C2PA / CHANGED)
    assert original.actions == changed.actions == ["c2pa.opened", "c2pa.color_adjustments"]
    assert "assertion.dataHash.mismatch" not in original.validation and original.summary == "C2PA: present"
    assert "assertion.dataHash.mismatch" in changed.validation and changed.summary == "C2PA: tampered"


@needs_c2pa_files
def test_a_remote_manifest_is_said_not_fetched_and_is_no_error() -> None:
    found = read_provenance(C2PA / "cloud.jpg")
    assert found.c2pa == "remote" and found.summary == "C2PA: remote"
    assert found.notes and found.notes[0].startswith("remote manifest, not fetched: https://")


@needs_c2pa_files
def test_a_file_without_credentials_says_none() -> None:
    found = read_provenance(C2PA / "A.jpg")
    assert found.c2pa == "none" and found.summary == "none" and not found.validation
    assert any(t.startswith("EXIF Software: ") for t in found.traces)  # software names stay out of the summary


@needs_c2pa_files
def test_a_video_manifest_and_its_encoder_tag_are_read() -> None:
    found = read_provenance(C2PA / "files-for-reading-tests__video1.mp4")
    assert found.c2pa == "present" and "c2patool" in (found.claim_generator or "")
    assert any(t.startswith("video encoder: ") for t in found.traces)


@needs_c2pa_files
def test_a_damaged_manifest_is_a_short_note_not_a_crash(tmp_path: Path) -> None:
    data = bytearray((C2PA / GENERATED).read_bytes())
    inside = data.find(b"jumb") + 200  # inside the manifest store (JUMBF), after its headers
    data[inside : inside + 16] = b"\xff" * 16
    damaged = tmp_path / "damaged.jpg"
    damaged.write_bytes(bytes(data))
    found = read_provenance(damaged)
    assert found.c2pa == "unreadable" and found.summary == "C2PA: unreadable"
    assert len(found.notes) == 1 and found.notes[0].startswith("unreadable manifest (")
    assert "\n" not in found.notes[0] and len(found.notes[0]) <= 160


# -- metadata traces -----------------------------------------------------------------------------------------------
def test_png_generation_settings_are_one_bounded_line(tmp_path: Path) -> None:
    settings = "a portrait photo\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, " + "x" * 1000
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", settings)
    path = tmp_path / "sd.png"
    Image.new("RGB", (32, 32), (120, 90, 60)).save(path, pnginfo=info)
    found = read_provenance(path)
    (trace,) = found.traces
    assert trace.startswith("PNG parameters: a portrait photo Negative prompt: blurry Steps: 20")
    assert len(trace.split(": ", 1)[1]) == MAX_TEXT and trace.endswith("…") and "\n" not in trace
    assert found.c2pa == "none" and found.summary == "none; generator settings"


def test_exif_software_and_an_xmp_source_type_are_traces(tmp_path: Path) -> None:
    path = astronaut_jpeg(tmp_path / "tagged.jpg", software="Some Editor 2.1", xmp=AI_XMP)
    found = read_provenance(path)
    assert "EXIF Software: Some Editor 2.1" in found.traces
    assert any(t.startswith("XMP DigitalSourceType: ") and t.endswith("/trainedAlgorithmicMedia") for t in found.traces)
    assert found.summary == "none; XMP: AI-generated"  # unsigned metadata, said apart from C2PA


@pytest.mark.slow
def test_c2pa_is_not_imported_when_the_cli_and_engine_load() -> None:
    code = (
        "import sys, gmdf_cli.cli, gmdf_cli.engine.pipeline, gmdf_cli.engine.provenance; print('c2pa' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


# -- never in the score --------------------------------------------------------------------------------------------
def test_metadata_never_changes_the_score(tiny_weights: Path, tmp_path: Path) -> None:
    detector = Detector.from_pretrained(str(tiny_weights), device="cpu", face_detector=detector_options())
    bare = detector.scan(astronaut_jpeg(tmp_path / "bare.jpg"))
    tagged = detector.scan(astronaut_jpeg(tmp_path / "tagged.jpg", software="Generator 9", xmp=AI_XMP))
    assert bare.score is not None and bare.provenance is not None and tagged.provenance is not None
    assert bare.provenance.traces == [] and tagged.provenance.summary == "none; XMP: AI-generated"
    assert tagged.score == bare.score and tagged.verdict == bare.verdict
    assert [f.faces for f in tagged.frames] == [f.faces for f in bare.frames]


# -- every output --------------------------------------------------------------------------------------------------
@pytest.mark.slow
@needs_c2pa_files
def test_scan_shows_provenance_in_json_table_csv_and_report_escaped(tiny_weights: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    shutil.copytree(C2PA, inputs)
    astronaut_jpeg(inputs / "hostile.jpg", software=HOSTILE, xmp=AI_XMP)
    out, csv_path = tmp_path / "out", tmp_path / "faces.csv"
    done = invoke_gmdf(
        "scan",
        str(inputs),
        "--weights",
        str(tiny_weights),
        "--json",
        "--out",
        str(out),
        "--csv",
        str(csv_path),
        "--frames",
        "2",
        *DET,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert_schema("ScanReport", report)
    said = {Path(f["path"]).name: f["provenance"] for f in report["files"]}
    assert (
        said[GENERATED]["summary"] == "C2PA: generated" and said[GENERATED]["digital_source_type"] == "algorithmicMedia"
    )
    assert said[CHANGED]["summary"] == "C2PA: tampered" and "assertion.dataHash.mismatch" in said[CHANGED]["validation"]
    assert said["A.jpg"]["summary"] == "none" and said["cloud.jpg"]["c2pa"] == "remote"
    assert "EXIF Software: <script>alert('gmdf')</script> [31m" in said["hostile.jpg"]["traces"]  # ESC: a space

    rows = list(csv_path.read_text(encoding="utf-8").splitlines())
    assert rows[0].endswith(",provenance") and rows[1].endswith(",none; XMP: AI-generated")  # the face's row

    console = Console(width=200, record=True, force_terminal=False)
    console.print(scan_table([from_jsonable(FileResult, f) for f in report["files"]]))
    lines = {line.split("│")[1].strip(): line for line in console.export_text().splitlines() if line.count("│") > 2}
    assert "C2PA: generated" in lines[GENERATED] and "C2PA: tampered" in lines[CHANGED]
    assert "│ none " in lines["A.jpg"] and "\x1b" not in console.export_text()

    page = (out / "report.html").read_text(encoding="utf-8")
    assert 'Provenance: <span class="generated">C2PA: generated</span>' in page
    assert 'Provenance: <span class="tampered">C2PA: tampered</span>' in page
    assert "assertion.dataHash.mismatch</code>: the file (or its manifest) changed after it was signed" in page
    assert "remote manifest, not fetched: https://cai-manifests.adobe.com/" in page
    assert "&lt;script&gt;alert(&#39;gmdf&#39;)&lt;/script&gt;" in page and "<script>" not in page
