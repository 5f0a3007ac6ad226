"""Convert a pretrained TensorFlow.js network (a weights manifest and its binary shards, e.g. from the npm package
``@vladmandic/face-api``) to a safetensors file for one of gmdf's own torch modules, with its provenance (package,
version, licence, sha256 of every source file) in the file's metadata.

    npm pack @vladmandic/face-api@1.7.15 && tar xzf vladmandic-face-api-1.7.15.tgz
    python -m gmdf_cli.tools.tfjs package/model/face_landmark_68_model-weights_manifest.json \\
        gmdf_cli/weights/shipped/face-landmark-68.safetensors --network face-landmark-68 \\
        --package @vladmandic/face-api --version 1.7.15 --license MIT

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
    try:
        groups = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read the tfjs manifest {manifest}: {exc}") from None
    tensors: dict[str, np.ndarray] = {}
    for group in groups:
        data = b"".join((manifest.parent / name).read_bytes() for name in group["paths"])
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
                raise UsageError(f"{manifest}: the shards end inside {weight['name']}")
            values = np.frombuffer(data[offset:end], dtype=_STORED[stored])
            offset = end
            if quant and stored in ("uint8", "uint16"):
                target = np.float32 if weight["dtype"] == "float32" else np.int32
                values = (values.astype(np.float64) * quant["scale"] + quant["min"]).astype(target)
            elif quant:  # float16
                values = values.astype(np.float32)
            tensors[weight["name"]] = values.reshape(shape).copy()
        if offset != len(data):
            raise UsageError(f"{manifest}: {len(data) - offset} bytes of the shards belong to no weight")
    return tensors


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


@dataclass(frozen=True)
class Network:
    tensors: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
    description: str


NETWORKS = {
    "face-landmark-68": Network(_landmark_68, "face-api's 68-point face landmark net (112 px, depthwise-separable)")
}


def convert(manifest: Path, target: Path, network: str, package: str, version: str, license: str) -> dict[str, str]:
    """Convert and save atomically; returns the metadata written beside the tensors."""
    import torch
    from safetensors.torch import save_file

    from ..fileio import atomic_path

    if network not in NETWORKS:
        raise UsageError(f"unknown network {network!r} (known: {', '.join(NETWORKS)})")
    tensors = NETWORKS[network].tensors(read_manifest(manifest))
    groups = json.loads(manifest.read_text(encoding="utf-8"))
    sources = [manifest] + [manifest.parent / p for g in groups for p in g["paths"]]
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
