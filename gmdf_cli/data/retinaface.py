"""RetinaFace's network, anchors and box decoding, without importing facexlib's package.

facexlib's package imports torchvision on its first line, and torchvision imports torch._dynamo and sympy: 3-4 s of a
one-image scan's start-up on 2 cores, for a network that needs neither. The MobileNet-0.25 network is facexlib's own
code all the same: its ``retinaface_net.py`` (which imports only torch) is loaded from the installed facexlib as a
module of its own, and :class:`MobileRetinaFace` joins its parts as facexlib's ``RetinaFace`` does, under the same
parameter names, so facexlib's published weights file loads strictly. The ResNet-50 variant (its backbone is
torchvision's) is facexlib's ``RetinaFace`` itself. Anchors and decoding are facexlib's formulas, vectorised.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

MOBILENET_CFG: dict[str, Any] = {
    "name": "mobilenet0.25",
    "min_sizes": [[16, 32], [64, 128], [256, 512]],
    "steps": [8, 16, 32],
    "variance": [0.1, 0.2],
    "in_channel": 32,
    "out_channel": 64,
}
"""facexlib's ``cfg_mnet``: the parts of it that inference reads."""
BGR_MEAN = (104.0, 117.0, 123.0)
"""The BGR mean RetinaFace subtracts from 0-255 pixels (facexlib's ``mean_tensor``)."""
_NETWORK_MODULE = "gmdf_cli.data._facexlib_retinaface_net"


def facexlib_network_module() -> ModuleType:
    """facexlib's ``detection/retinaface_net.py`` (MobileNetV1, FPN, SSH and the heads; it imports only torch),
    executed as a module of its own so that facexlib's package, and torchvision with it, is not imported."""
    if _NETWORK_MODULE in sys.modules:
        return sys.modules[_NETWORK_MODULE]
    package = importlib.util.find_spec("facexlib")
    if package is None or not package.submodule_search_locations:
        raise ImportError("facexlib is not installed")
    path = f"{next(iter(package.submodule_search_locations))}/detection/retinaface_net.py"
    spec = importlib.util.spec_from_file_location(_NETWORK_MODULE, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[_NETWORK_MODULE] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[_NETWORK_MODULE]
        raise
    return module


class MobileRetinaFace(nn.Module):
    """facexlib's ``RetinaFace(network_name="mobile0.25")`` at inference: MobileNetV1's first three stages, FPN,
    three SSH context modules and the class, box and landmark heads (two anchors per position).

    images (B, 3, H, W) BGR 0-255 minus ``BGR_MEAN`` -> box offsets (B, P, 4), class probabilities (B, P, 2),
    landmark offsets (B, P, 10), P the anchors of :func:`priors` for (H, W)."""

    def __init__(self) -> None:
        super().__init__()
        net = facexlib_network_module()
        backbone = net.MobileNetV1()
        self.cfg = MOBILENET_CFG
        self.body = nn.ModuleDict({"stage1": backbone.stage1, "stage2": backbone.stage2, "stage3": backbone.stage3})
        channels = MOBILENET_CFG["in_channel"]
        out = MOBILENET_CFG["out_channel"]
        self.fpn = net.FPN([channels * 2, channels * 4, channels * 8], out)
        self.ssh1, self.ssh2, self.ssh3 = net.SSH(out, out), net.SSH(out, out), net.SSH(out, out)
        self.ClassHead = net.make_class_head(fpn_num=3, inchannels=out)
        self.BboxHead = net.make_bbox_head(fpn_num=3, inchannels=out)
        self.LandmarkHead = net.make_landmark_head(fpn_num=3, inchannels=out)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        stages = []
        x = images
        for stage in self.body.values():
            x = stage(x)
            stages.append(x)
        fpn = self.fpn(stages)
        features = [self.ssh1(fpn[0]), self.ssh2(fpn[1]), self.ssh3(fpn[2])]
        boxes = torch.cat([head(f) for head, f in zip(self.BboxHead, features, strict=True)], dim=1)
        classes = torch.cat([head(f) for head, f in zip(self.ClassHead, features, strict=True)], dim=1)
        landmarks = torch.cat([head(f) for head, f in zip(self.LandmarkHead, features, strict=True)], dim=1)
        return boxes, F.softmax(classes, dim=-1), landmarks


def priors(cfg: dict[str, Any], height: int, width: int) -> torch.Tensor:
    """facexlib's ``PriorBox`` anchors for an input (height, width): (P, 4) as (cx, cy, w, h) in 0-1, ordered by
    level, then row, column and anchor size."""
    levels = []
    for step, sizes in zip(cfg["steps"], cfg["min_sizes"], strict=True):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        cy = (torch.arange(rows, dtype=torch.float64) + 0.5) * step / height
        cx = (torch.arange(cols, dtype=torch.float64) + 0.5) * step / width
        grid_y, grid_x = torch.meshgrid(cy, cx, indexing="ij")
        per_size = [
            torch.stack(
                [grid_x, grid_y, torch.full_like(grid_x, s / width), torch.full_like(grid_y, s / height)], dim=-1
            )
            for s in sizes
        ]
        levels.append(torch.stack(per_size, dim=2).reshape(-1, 4))
    return torch.cat(levels).float()


def decode(loc: torch.Tensor, anchors: torch.Tensor, variances: list[float]) -> torch.Tensor:
    """facexlib's ``decode``: box offsets (P, 4) against anchors (P, 4) -> boxes (P, 4) as x1, y1, x2, y2 in 0-1."""
    centres = anchors[:, :2] + loc[:, :2] * variances[0] * anchors[:, 2:]
    sizes = anchors[:, 2:] * torch.exp(loc[:, 2:] * variances[1])
    corners = centres - sizes / 2
    return torch.cat([corners, corners + sizes], dim=1)  # facexlib's order of operations, to the last bit
