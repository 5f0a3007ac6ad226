"""Convert a pretrained TensorFlow.js network (a weights manifest and its binary shards, e.g. from the npm package
``@vladmandic/face-api``) to a safetensors file for one of gmdf's own torch modules, with its provenance (package,
version, licence, sha256 of every source file) in the file's metadata.

    npm pack @vladmandic/face-api@1.7.15 && tar xzf vladmandic-face-api-1.7.15.tgz
    python -m gmdf_cli.tools.tfjs package/model/face_landmark_68_model-weights_manifest.json \\
        gmdf_cli/weights/shipped/face-landmark-68.safetensors --network face-landmark-68 \\
        --package @vladmandic/face-api --version 1.7.15 --license MIT

    npm pack nsfwjs@4.3.0 && tar xzf nsfwjs-4.3.0.tgz   # needs node on the PATH to read its .min.js bundles
    python -m gmdf_cli.tools.tfjs package/dist/models/mobilenet_v2/model.min.js \\
        gmdf_cli/weights/shipped/mobilenet-v2-nsfwjs.safetensors --network mobilenet-v2 \\
        --package nsfwjs --version 4.3.0 --license MIT

The manifest format: a list of weight groups, each with the shard files (``paths``, concatenated in order) and its
weights (``name``, ``shape``, ``dtype``, optional ``quantization``) laid out back to back, row-major in tfjs's
layout. 8- and 16-bit affine quantisation dequantises as ``float32(q * scale + min)``, computed in float64 as tfjs
does (JavaScript numbers); ``float16`` quantisation is a plain cast. Networks are mapped onto torch modules by the
``NETWORKS`` registry.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UsageError

_STORED = {"float32": "<f4", "int32": "<i4", "uint8": "<u1", "uint16": "<u2", "float16": "<f2"}


def read_manifest(manifest: Path) -> dict[str, np.ndarray]:
    """Every tensor of a tfjs weights manifest, dequantised, in tfjs layout (name -> array)."""
    return _read_manifest(manifest)[0]


def _read_manifest(manifest: Path) -> tuple[dict[str, np.ndarray], list[Path]]:
    """The manifest's tensors and the files read (the manifest, then its shards)."""
    try:
        groups = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read the tfjs manifest {manifest}: {exc}") from None
    tensors = read_groups(groups, lambda name: (manifest.parent / name).read_bytes(), str(manifest))
    return tensors, [manifest] + [manifest.parent / p for g in groups for p in g["paths"]]


def read_groups(groups: list[dict], shard: Callable[[str], bytes], where: str) -> dict[str, np.ndarray]:
    """The tensors of a manifest's weight groups, each group's shards (read by ``shard(path)``) back to back."""
    tensors: dict[str, np.ndarray] = {}
    for group in groups:
        data = b"".join(shard(name) for name in group["paths"])
        offset = 0
        for weight in group["weights"]:
            shape = tuple(int(s) for s in weight["shape"])
            quant = weight.get("quantization")
            stored = quant["dtype"] if quant else weight["dtype"]
            if stored not in _STORED:
                raise UsageError(f"{weight['name']}: unsupported tfjs storage type {stored}")
            size = int(np.prod(shape, dtype=np.int64))
            end = offset + size * np.dtype(_STORED[stored]).itemsize
            if end > len(data):
                raise UsageError(f"{where}: the shards end inside {weight['name']}")
            values = np.frombuffer(data[offset:end], dtype=_STORED[stored])
            offset = end
            if quant and stored in ("uint8", "uint16"):
                target = np.float32 if weight["dtype"] == "float32" else np.int32
                values = (values.astype(np.float64) * quant["scale"] + quant["min"]).astype(target)
            elif quant:  # float16
                values = values.astype(np.float32)
            tensors[weight["name"]] = values.reshape(shape).copy()
        if offset != len(data):
            raise UsageError(f"{where}: {len(data) - offset} bytes of the shards belong to no weight")
    return tensors


_NODE_EXPORT = "process.stdout.write(JSON.stringify(require(require('path').resolve(process.argv[1]))))"


def _node_module(path: Path) -> object:
    """What a CommonJS/UMD module of an npm package exports, evaluated by node itself (nsfwjs ships its model JSON
    and base64 shards as minified JavaScript, not as JSON), as plain JSON data."""
    import shutil
    import subprocess

    node = shutil.which("node")
    if node is None:
        raise UsageError(f"reading {path} needs node (JavaScript) on the PATH")
    done = subprocess.run([node, "-e", _NODE_EXPORT, str(path)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise UsageError(f"node could not read {path}: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout)


def read_nsfwjs(model_js: Path) -> tuple[dict[str, np.ndarray], list[Path]]:
    """An nsfwjs model folder's ``model.min.js`` (a layers model's topology and weights manifest) and its
    ``group*-shard*.min.js`` (base64 shards) -> tensors in tfjs layout, and the source files read."""
    import base64

    bundle = _node_module(model_js)
    if not isinstance(bundle, dict) or "weightsManifest" not in bundle:
        raise UsageError(f"{model_js} is not an nsfwjs model bundle (no weightsManifest)")
    groups = bundle["weightsManifest"]
    files = [model_js.parent / f"{p}.min.js" for g in groups for p in g["paths"]]

    def shard(name: str) -> bytes:
        text = _node_module(model_js.parent / f"{name}.min.js")
        if not isinstance(text, str):
            raise UsageError(f"{name}.min.js does not export a base64 shard")
        return base64.b64decode(text, validate=True)

    return read_groups(groups, shard, str(model_js)), [model_js, *files]


def _landmark_68(tfjs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """face-api's FaceLandmark68Net -> ``gmdf_cli.data.landmarks.FaceLandmark68Net``: conv HWIO -> OIHW,
    depthwise (H, W, C, 1) -> (C, 1, H, W), pointwise (1, 1, I, O) -> (O, I, 1, 1), fc (in, out) -> (out, in)."""
    out: dict[str, np.ndarray] = {}
    for name, value in tfjs.items():
        block, layer, kind = [*name.split("/"), ""][:3]
        if block == "fc":
            out[f"fc.{'weight' if layer == 'weights' else 'bias'}"] = value.T if layer == "weights" else value
            continue
        prefix = f"{block}.{layer}"
        if kind == "filters":
            out[f"{prefix}.conv.weight"] = value.transpose(3, 2, 0, 1)
        elif kind == "depthwise_filter":
            out[f"{prefix}.depthwise.weight"] = value.transpose(2, 3, 0, 1)
        elif kind == "pointwise_filter":
            out[f"{prefix}.pointwise.weight"] = value.transpose(3, 2, 0, 1)
        elif kind == "bias":
            out[f"{prefix}.bias"] = value
        else:
            raise UsageError(f"unexpected tensor {name} for face-landmark-68")
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def _keras_bn(tfjs: dict[str, np.ndarray], keras: str, ours: str) -> dict[str, np.ndarray]:
    names = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
    return {f"{ours}.{t}": tfjs.pop(f"{keras}/{k}") for k, t in names.items()}


def _mobilenet_v2(tfjs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Keras's MobileNetV2 (nsfwjs) -> ``gmdf_cli.model.mobilenet.MobileNetV2``: Conv2D kernels HWIO -> OIHW,
    depthwise (H, W, C, 1) -> (C, 1, H, W), BatchNormalization gamma/beta/moving statistics -> weight/bias/running_*.
    nsfwjs's own classifier (``dense_*``, 5 NSFW classes) is left out."""
    from ..model.mobilenet import MOBILENET_V2

    tfjs = {k: v for k, v in tfjs.items() if not k.startswith("dense_")}
    out: dict[str, np.ndarray] = {"stem.conv.weight": tfjs.pop("Conv1/kernel").transpose(3, 2, 0, 1)}
    out |= _keras_bn(tfjs, "bn_Conv1", "stem.bn")
    for k in range(sum(n for _, _, n, _ in MOBILENET_V2)):
        keras = "expanded_conv" if k == 0 else f"block_{k}"
        if k:
            out[f"blocks.{k}.expand.conv.weight"] = tfjs.pop(f"{keras}_expand/kernel").transpose(3, 2, 0, 1)
            out |= _keras_bn(tfjs, f"{keras}_expand_BN", f"blocks.{k}.expand.bn")
        out[f"blocks.{k}.depthwise.conv.weight"] = tfjs.pop(f"{keras}_depthwise/depthwise_kernel").transpose(2, 3, 0, 1)
        out |= _keras_bn(tfjs, f"{keras}_depthwise_BN", f"blocks.{k}.depthwise.bn")
        out[f"blocks.{k}.project.conv.weight"] = tfjs.pop(f"{keras}_project/kernel").transpose(3, 2, 0, 1)
        out |= _keras_bn(tfjs, f"{keras}_project_BN", f"blocks.{k}.project.bn")
    out["head.conv.weight"] = tfjs.pop("Conv_1/kernel").transpose(3, 2, 0, 1)
    out |= _keras_bn(tfjs, "Conv_1_bn", "head.bn")
    if tfjs:
        raise UsageError(f"unexpected tensors for mobilenet-v2: {sorted(tfjs)[:5]}")
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


@dataclass(frozen=True)
class Network:
    tensors: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
    description: str


NETWORKS = {
    "face-landmark-68": Network(_landmark_68, "face-api's 68-point face landmark net (112 px, depthwise-separable)"),
    "mobilenet-v2": Network(_mobilenet_v2, "Keras's ImageNet MobileNetV2 (224 px) as nsfwjs ships it (model.min.js)"),
}


def convert(manifest: Path, target: Path, network: str, package: str, version: str, license: str) -> dict[str, str]:
    """Convert and save atomically; returns the metadata written beside the tensors."""
    import torch
    from safetensors.torch import save_file

    from ..fileio import atomic_path

    if network not in NETWORKS:
        raise UsageError(f"unknown network {network!r} (known: {', '.join(NETWORKS)})")
    raw, sources = read_nsfwjs(manifest) if manifest.name.endswith(".js") else _read_manifest(manifest)
    tensors = NETWORKS[network].tensors(raw)
    metadata = {
        "network": network,
        "source_package": package,
        "source_version": version,
        "source_license": license,
        "source_files": json.dumps({p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sources}),
    }
    with atomic_path(target) as tmp:
        save_file({k: torch.from_numpy(v) for k, v in tensors.items()}, str(tmp), metadata=metadata)
    return metadata


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("--network", choices=list(NETWORKS), required=True)
    parser.add_argument("--package", required=True, help="where the files came from, e.g. @vladmandic/face-api")
    parser.add_argument("--version", required=True)
    parser.add_argument("--license", required=True)
    args = parser.parse_args()
    meta = convert(args.manifest, args.target, args.network, args.package, args.version, args.license)
    print(json.dumps(meta, indent=1))


if __name__ == "__main__":
    main()
