"""Start-up: a one-image scan of the shipped default imports only what it uses, and the model it builds for that
(the image tower alone, no text tower or tokenizer) scores as the whole model does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from .conftest import DETECTOR_WEIGHTS, HAVE_RETINAFACE, run_gmdf

ASTRONAUT = Path(__file__).resolve().parents[1] / "examples" / "astronaut.png"
UNUSED = ("open_clip", "torchvision", "torch._dynamo", "facexlib", "matplotlib", "facenet_pytorch", "timm")
"""What the default scan of an image never needs: the CLIP library (its towers are for other configs), torchvision
and torch._dynamo (which facexlib's package would import), the timeline plots (videos only), MTCNN."""


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_RETINAFACE, reason="needs RetinaFace weights in ../shared/weights")
def test_a_one_image_scan_of_the_default_model_imports_nothing_it_does_not_use(tmp_path: Path) -> None:
    """The torch way (a GPU, half precision, heatmaps, compiled inference off); test_compiled checks that the
    compiled way imports no torch at all."""
    done = run_gmdf(
        "scan",
        str(ASTRONAUT),
        "--out",
        str(tmp_path / "out"),
        "--detector-weights",
        str(DETECTOR_WEIGHTS),
        env={"PYTHONPROFILEIMPORTTIME": "1", "GMDF_COMPILED": "0"},
    )
    lines = done.stderr.splitlines()
    imported = {line.rsplit("|", 1)[-1].strip() for line in lines if line.startswith("import time:")}
    assert done.returncode == 0, [line for line in lines if not line.startswith("import time:")]
    assert (tmp_path / "out" / "report.html").is_file()
    assert "torch" in imported and "cv2" in imported  # the log is read
    assert sorted(imported & set(UNUSED)) == []


def test_the_default_model_built_for_scoring_scores_as_the_whole_model() -> None:
    from gmdf_cli.weights import DEFAULT_WEIGHTS, load_checkpoint, load_weights, resolve_weights

    path = resolve_weights(DEFAULT_WEIGHTS).path
    whole, _ = load_checkpoint(path)
    lean, _, _ = load_weights(DEFAULT_WEIGHTS)
    assert lean.text is None and not any(n.startswith("text.") for n, _ in lean.named_parameters())
    images = torch.rand(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(lean.predict(images), whole.predict(images), rtol=0, atol=1e-6)
    assert set(lean.state_dict()) == set(whole.state_dict())


@pytest.mark.slow
def test_a_vit_model_for_scoring_is_built_without_open_clip(tiny_weights: Path) -> None:
    """A ViT's weights with cached prompt features load into torch's own modules (``bare_vit``): open_clip, and the
    torchvision and torch._dynamo it would import, stay out (``test_weights`` checks that it scores the same)."""
    import subprocess
    import sys

    code = (
        "import sys\nfrom gmdf_cli.weights import load_weights\n"
        f"model, _, _ = load_weights({str(tiny_weights)!r})\n"
        "print(type(model.visual).__name__, sorted(m for m in ('open_clip', 'torchvision', 'torch._dynamo') "
        "if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["GMDFImageEncoder", "[]"]


def test_a_cpu_forward_pass_takes_at_most_cpu_chunk_images(tiny_model) -> None:
    """``GMDF.score`` on a CPU splits a batch into forward passes of at most ``CPU_CHUNK`` images (activation memory:
    a vit-b-16 scan's peak), with the scores and per-sample domains of one pass."""
    from gmdf_cli.model.gmdf import CPU_CHUNK

    seen: list[int] = []
    handle = tiny_model.visual.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    images = torch.rand(CPU_CHUNK * 2 + 3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    domains = torch.arange(len(images)) % (tiny_model.config.num_domains + 1)
    try:
        scores = tiny_model.score(images, domains)
    finally:
        handle.remove()
    assert seen == [CPU_CHUNK, CPU_CHUNK, 3]
    torch.testing.assert_close(torch.tensor(scores), tiny_model.predict(images, domains), rtol=0, atol=1e-5)
