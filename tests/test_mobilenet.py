"""The MobileNetV2 tower: the shipped weights are nsfwjs's network converted exactly (outputs equal those of nsfwjs in
JavaScript, fixtures made by ``tests/fixtures/mobilenet_v2/reference.mjs`` with nsfwjs 4.3.0 on tfjs 4.22.0's cpu
backend), the converter reads nsfwjs's JavaScript bundles, and a fresh GM-DF tower gives the pretrained features."""

from __future__ import annotations

import base64
import copy
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors import safe_open

from gmdf_cli.model import build_clip, build_model, get_config
from gmdf_cli.model.mobilenet import PRETRAINED_TOWERS
from gmdf_cli.tools.tfjs import read_nsfwjs
from gmdf_cli.weights.registry import SHIPPED_DIR

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "mobilenet_v2"
REFERENCE = json.loads((FIXTURES / "reference.json").read_text())
SHIPPED = SHIPPED_DIR / PRETRAINED_TOWERS["nsfwjs"]


@pytest.fixture(scope="module")
def pretrained_clip() -> torch.nn.Module:
    return build_clip(get_config("mnv2"), "nsfwjs")


@pytest.mark.parametrize("case", REFERENCE["results"], ids=lambda c: c["file"])
def test_the_port_gives_what_nsfwjs_gives_in_javascript(case: dict, pretrained_clip: torch.nn.Module) -> None:
    trunk = pretrained_clip.visual.trunk
    rgb = cv2.imread(str(FIXTURES / case["file"]))[:, :, ::-1].astype(np.float32)
    x = torch.from_numpy(rgb / 127.5 - 1).permute(2, 0, 1)[None]
    taps: dict[int, torch.Tensor] = {}
    hooks = [trunk.blocks[i].register_forward_hook(lambda m, a, out, i=i: taps.__setitem__(i, out)) for i in (5, 12)]
    with torch.no_grad():
        out = trunk(x)
    for hook in hooks:
        hook.remove()
    close = {"rtol": 0, "atol": 1e-4}
    np.testing.assert_allclose(taps[5].mean((2, 3))[0].numpy(), np.array(case["block_5_add_mean"]), **close)
    np.testing.assert_allclose(taps[12].mean((2, 3))[0].numpy(), np.array(case["block_12_add_mean"]), **close)
    np.testing.assert_allclose(out.mean((2, 3))[0].numpy(), np.array(case["out_relu_mean"]), **close)
    np.testing.assert_allclose(out[0, :, 3, 3].numpy(), np.array(case["out_relu_at_3_3"]), **close)


def test_the_shipped_tower_weights_say_where_they_came_from() -> None:
    with safe_open(str(SHIPPED), "pt") as fh:
        meta = fh.metadata()
        names = set(fh.keys())
    assert meta["network"] == "mobilenet-v2" and meta["source_package"] == "nsfwjs"
    assert meta["source_version"] == REFERENCE["version"] and meta["source_license"] == "MIT"
    assert set(json.loads(meta["source_files"])) == {"model.min.js", "group1-shard1of1.min.js"}
    assert not any(n.startswith("dense") for n in names)  # nsfwjs's own classifier is left out


def test_a_fresh_gmdf_tower_gives_the_pretrained_features(pretrained_clip: torch.nn.Module) -> None:
    reference = copy.deepcopy(pretrained_clip)
    model = build_model(get_config("mnv2"), clip=copy.deepcopy(pretrained_clip))
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = reference.encode_image(images)
        for domain in (0, 2, torch.tensor([1, 0])):
            got = model.encode_image(images, domain, normalize=False)
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_the_converter_reads_nsfwjs_javascript_bundles(tmp_path: Path) -> None:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    values = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    manifest = [{"paths": ["group1-shard1of1"], "weights": [{"name": "w", "shape": [2, 2], "dtype": "float32"}]}]
    umd = "!function(e){{module.exports=e()}}(function(){{return {}}});"
    (tmp_path / "model.min.js").write_text(umd.format(json.dumps({"modelTopology": {}, "weightsManifest": manifest})))
    shard = base64.b64encode(values.tobytes()).decode()
    (tmp_path / "group1-shard1of1.min.js").write_text(umd.format(json.dumps(shard)))
    tensors, sources = read_nsfwjs(tmp_path / "model.min.js")
    np.testing.assert_array_equal(tensors["w"], values)
    assert [p.name for p in sources] == ["model.min.js", "group1-shard1of1.min.js"]


def test_pretrained_tower_weights_that_are_not_safetensors_are_refused_plainly(tmp_path: Path) -> None:
    bogus = tmp_path / "tower.safetensors"
    bogus.write_text("not weights")
    with pytest.raises(ValueError, match="not a safetensors file"):
        build_clip(get_config("mnv2"), str(bogus))
    with pytest.raises(ValueError, match="no MobileNetV2 weights"):
        build_clip(get_config("mnv2"), "imagenet")
