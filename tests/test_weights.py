"""Weights: safetensors round trips, clear errors, no unpickling, and the Hub path through a local server."""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from gmdf_cli.errors import WeightsError
from gmdf_cli.fileio import atomic_path
from gmdf_cli.model import get_config
from gmdf_cli.weights import load_checkpoint, load_weights, resolve_weights, save_checkpoint

from .conftest import assert_schema, invoke_gmdf, run_gmdf
from .hubserver import HubServer

IMAGES = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(7))


def test_save_load_local_path_gives_identical_outputs(tiny_model, tmp_path: Path) -> None:
    path = save_checkpoint(tiny_model, tmp_path / "m.safetensors")
    loaded, meta = load_checkpoint(path)
    assert json.loads(meta["config"])["name"] == "vit-tiny"
    assert torch.equal(loaded.predict(IMAGES), tiny_model.predict(IMAGES))
    model, resolved, _ = load_weights(str(path))
    assert resolved.source == "local" and resolved.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert model.text is None  # scanning frees the text tower
    torch.testing.assert_close(model.predict(IMAGES), tiny_model.predict(IMAGES), rtol=1e-4, atol=1e-7)


def test_bf16_inference_loads_straight_into_bfloat16(tiny_model, tmp_path: Path) -> None:
    path = save_checkpoint(tiny_model, tmp_path / "m.safetensors")
    model, _, _ = load_weights(str(path), precision="bf16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    scores = model.predict(IMAGES.to(torch.bfloat16)).float()
    torch.testing.assert_close(scores, tiny_model.predict(IMAGES), atol=0.03, rtol=0)


def test_inference_export_without_text_tower_in_fp16(tiny_model, tmp_path: Path) -> None:
    full = save_checkpoint(tiny_model, tmp_path / "full.safetensors")
    small = save_checkpoint(tiny_model, tmp_path / "small.safetensors", half=True, text_tower=False)
    assert small.stat().st_size < full.stat().st_size / 4
    assert not any(k.startswith("text.") for k in load_file(str(small)))
    model, _ = load_checkpoint(small)
    torch.testing.assert_close(model.predict(IMAGES), tiny_model.predict(IMAGES), atol=2e-3, rtol=0)


def test_weights_export_command_writes_a_lean_checkpoint_with_its_threshold(tiny_model, tmp_path: Path) -> None:
    trained = save_checkpoint(tiny_model, tmp_path / "best.safetensors", metadata={"training": '{"step": 7}'})
    out = invoke_gmdf("weights", "export", str(trained), str(tmp_path / "ship.safetensors"), "--threshold", "0.42")
    assert out.returncode == 0, out.stderr
    shipped = tmp_path / "ship.safetensors"
    assert out.stdout.strip() == hashlib.sha256(shipped.read_bytes()).hexdigest()
    assert shipped.stat().st_size < trained.stat().st_size / 4
    model, _, meta = load_weights(str(shipped))
    assert float(meta["threshold"]) == 0.42 and meta["training"] == '{"step": 7}'
    torch.testing.assert_close(model.predict(IMAGES), tiny_model.predict(IMAGES), atol=2e-3, rtol=0)
    bad = invoke_gmdf("weights", "export", str(tmp_path / "nope.safetensors"), str(tmp_path / "x.safetensors"))
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "not found" in bad.stderr


def test_the_shipped_default_is_registered_verified_and_used_without_weights(tmp_path: Path) -> None:
    from gmdf_cli.weights import DEFAULT_WEIGHTS, SHIPPED_DIR, ZOO

    entry = ZOO[DEFAULT_WEIGHTS]
    shipped = SHIPPED_DIR / str(entry.local)
    assert shipped.is_file() and shipped.stat().st_size <= 50 * 2**20
    assert hashlib.sha256(shipped.read_bytes()).hexdigest() == entry.sha256
    resolved = resolve_weights(DEFAULT_WEIGHTS)
    assert resolved.source == "shipped" and resolved.path == shipped
    model, _, meta = load_weights(DEFAULT_WEIGHTS)
    assert model.config.name == entry.config and "training" in meta
    example = Path(__file__).resolve().parents[1] / "examples" / "astronaut.png"
    out = invoke_gmdf("scan", str(example), "--json", "--detector", "mtcnn")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert_schema("ScanReport", report)
    assert report["model"]["name"] == DEFAULT_WEIGHTS and report["model"]["sha256"] == entry.sha256
    assert report["files"][0]["verdict"] in ("real", "fake", "uncertain") and 0 <= report["files"][0]["score"] <= 1


def test_config_mismatch_is_one_clear_error(tiny_model, tmp_path: Path) -> None:
    path = save_checkpoint(tiny_model, tmp_path / "m.safetensors")
    with pytest.raises(WeightsError, match="domains"):
        load_checkpoint(path, expect=get_config("vit-tiny").with_domains(["x", "y"]))


def test_shape_mismatch_is_one_clear_error(tiny_model, tmp_path: Path) -> None:
    path = save_checkpoint(tiny_model, tmp_path / "m.safetensors")
    state = load_file(str(path))
    meta = __import__("safetensors").safe_open(str(path), "pt").metadata()
    state["mim_head.weight"] = torch.zeros(3, 3)
    save_file(state, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(WeightsError, match=r"mim_head\.weight has shape \(3, 3\)"):
        load_checkpoint(tmp_path / "bad.safetensors")


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # runs on unpickling
        return (Path.touch, (self.marker,))


def test_pickled_files_are_refused_without_being_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        load_checkpoint(bad)
    pt = tmp_path / "model.pt"
    torch.save({"x": _Exploit(marker)}, pt)
    with pytest.raises(WeightsError):
        load_weights(str(pt))
    assert not marker.exists()


def test_foreign_safetensors_file_is_refused(tmp_path: Path) -> None:
    save_file({"w": torch.zeros(2)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(WeightsError, match="not a gmdf checkpoint"):
        load_checkpoint(tmp_path / "x.safetensors")


def test_unknown_weights_name_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="unknown weights 'nope'"):
        resolve_weights("nope")
    with pytest.raises(WeightsError, match="not found"):
        resolve_weights(str(tmp_path / "missing.safetensors"))


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "ckpt.safetensors"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half-writ")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.safetensors"]


PREDICT = """
import json, sys, torch
from gmdf_cli.weights import load_weights
model, resolved, _ = load_weights(sys.argv[1])
images = torch.load(sys.argv[2], weights_only=True)
print(json.dumps({"scores": model.predict(images).tolist(), "source": resolved.source, "path": str(resolved.path)}))
"""


def _predict_in_subprocess(spec: str, images: Path, env: dict[str, str]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PREDICT, spec, str(images)], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.slow
def test_hub_download_cache_offline_and_tampering(tiny_model, tmp_path: Path) -> None:
    ckpt = save_checkpoint(tiny_model, tmp_path / "model.safetensors")
    blob = ckpt.read_bytes()
    sha = hashlib.sha256(blob).hexdigest()
    zoo_file = tmp_path / "zoo.json"
    zoo_file.write_text(
        json.dumps(
            {
                "tiny-test": {"repo_id": "gmdf-test/tiny", "sha256": sha, "config": "vit-tiny", "description": "t"},
                "tiny-tampered": {
                    "repo_id": "gmdf-test/tampered",
                    "sha256": sha,
                    "config": "vit-tiny",
                    "description": "t",
                },
                "tiny-absent": {"repo_id": "gmdf-test/absent", "sha256": sha, "config": "vit-tiny", "description": "t"},
            }
        )
    )
    images = tmp_path / "images.pt"
    torch.save(IMAGES, images)
    import os

    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "GMDF_ZOO": str(zoo_file), "HF_HUB_DISABLE_XET": "1"}
    env.pop("HF_HUB_OFFLINE", None)
    with HubServer() as hub:
        hub.files[("gmdf-test/tiny", "model.safetensors")] = blob
        hub.files[("gmdf-test/tampered", "model.safetensors")] = blob[:-1] + bytes([blob[-1] ^ 1])
        env["HF_ENDPOINT"] = hub.url
        expected = _predict_in_subprocess(str(ckpt), images, env)["scores"]  # the same file through a local path
        torch.testing.assert_close(torch.tensor(expected), tiny_model.predict(IMAGES), rtol=1e-4, atol=1e-7)
        done = run_gmdf("weights", "download", "tiny-test", env=env)
        assert done.returncode == 0, done.stderr
        cached = Path(done.stdout.strip())
        assert cached.is_file() and str(tmp_path / "hf") in str(cached)
        assert any("resolve/main/model.safetensors" in r for r in hub.requests)
        via_hub = _predict_in_subprocess("tiny-test", images, env)
        assert via_hub["source"] == "hub" and via_hub["scores"] == expected
        also = _predict_in_subprocess("hf-hub:gmdf-test/tiny", images, env)
        assert also["scores"] == expected

        bad = run_gmdf("weights", "download", "tiny-tampered", env=env)
        assert bad.returncode == 1 and "sha256 mismatch" in bad.stderr and "Traceback" not in bad.stderr

    offline = {**env, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    assert _predict_in_subprocess("tiny-test", images, offline)["scores"] == expected
    where = run_gmdf("weights", "path", "tiny-test", env=offline)
    assert where.returncode == 0 and Path(where.stdout.strip()) == cached

    missing = run_gmdf("weights", "download", "tiny-absent", env=offline)
    assert missing.returncode == 1
    assert "gmdf-test/absent/model.safetensors@main is not in the Hugging Face cache" in missing.stderr
    assert "HF_HUB_OFFLINE" in missing.stderr and "Traceback" not in missing.stderr

    cached.chmod(0o644)
    cached.write_bytes(blob.replace(b"vit-tiny", b"vit-tinY", 1))  # tampered inside the cache
    tampered = run_gmdf("weights", "path", "tiny-test", env=offline)
    assert tampered.returncode == 1 and "sha256 mismatch" in tampered.stderr


def test_shipped_weights_carry_their_training_record_as_data_without_build_folders(tiny_model, tmp_path: Path) -> None:
    """report.json's model.trained is an object (not JSON inside a string) and neither an exported file nor a
    report names the folders of the machine that trained it."""
    from gmdf_cli import Detector
    from gmdf_cli.weights import export_weights

    from .conftest import detector_options

    record = {"request": {"data": "/home/me/cache", "out": "/home/me/run", "seed": 3}, "step": 5}
    source = save_checkpoint(tiny_model, tmp_path / "run.safetensors", metadata={"training": json.dumps(record)})
    shipped = export_weights(str(source), tmp_path / "ship.safetensors", half=False)
    _, meta = load_checkpoint(shipped.path)
    assert json.loads(meta["training"]) == {"request": {"seed": 3}, "step": 5}
    info = Detector.from_pretrained(str(source), device="cpu", face_detector=detector_options()).model_info()
    assert info.trained == {"request": {"seed": 3}, "step": 5}  # an older file with the folders: left out as read


def test_the_shipped_file_names_no_build_machine_folder() -> None:
    """The shipped default was re-exported: its raw ``training`` metadata, as any reader of the file sees it,
    holds no absolute path (the build machine's cache and run folders)."""
    from gmdf_cli.weights import read_metadata, resolve_weights

    training = read_metadata(resolve_weights("gmdf-mnv2-dev").path)["training"]
    paths = [v for v in json.loads(training)["request"].values() if isinstance(v, str) and v.startswith("/")]
    assert paths == [], paths
