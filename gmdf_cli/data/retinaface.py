"""RetinaFace's network, anchors and box decoding, without importing facexlib's package.

facexlib's package imports torchvision on its first line, and torchvision imports torch._dynamo and sympy: 3-4 s of a
one-image scan's start-up on 2 cores, for a network that needs neither. The MobileNet-0.25 network is facexlib's own
code all the same: its ``retinaface_net.py`` (which imports only torch) is loaded from the installed facexlib as a
module of its own, and :class:`MobileRetinaFace` joins its parts as facexlib's ``RetinaFace`` does, under the same
parameter names, so facexlib's published weights file loads strictly. The ResNet-50 variant (its backbone is
torchvision's) is facexlib's ``RetinaFace`` itself. Anchors and decoding are facexlib's formulas, vectorised (the
anchors in numpy, shared with the compiled detector of ``gmdf_cli.runtime``). :class:`RetinaFaceDetector` runs
either network on frames.
"""

from __future__ import annotations

import importlib.util
import pickle
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import WeightsError
from . import DETECTION_SIDE
from .anchors import BGR_MEAN, MOBILENET_CFG, priors
from .boxes import Face, downscale, faces_from
from .detectors import verified_retinaface

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


def decode(loc: torch.Tensor, anchors: torch.Tensor, variances: list[float]) -> torch.Tensor:
    """facexlib's ``decode``: box offsets (P, 4) against anchors (P, 4) -> boxes (P, 4) as x1, y1, x2, y2 in 0-1."""
    centres = anchors[:, :2] + loc[:, :2] * variances[0] * anchors[:, 2:]
    sizes = anchors[:, 2:] * torch.exp(loc[:, 2:] * variances[1])
    corners = centres - sizes / 2
    return torch.cat([corners, corners + sizes], dim=1)  # facexlib's order of operations, to the last bit


class RetinaFaceDetector:
    """facexlib's RetinaFace, run on the frame downscaled to ``max_side`` (faces in forensic footage are large; the
    detector's cost grows with pixels). frame (H, W, 3) BGR uint8 -> faces in full-frame coordinates."""

    def __init__(
        self,
        name: str,
        weights_dir: Path,
        max_side: int = DETECTION_SIDE,
        threshold: float = 0.8,
        device: torch.device | str = "cpu",
    ) -> None:
        path, digest = verified_retinaface(name, weights_dir)
        self.net = _load_retinaface(name, path, device)
        self.mean = torch.tensor(BGR_MEAN, device=device).view(1, 3, 1, 1)
        self.max_side = max_side
        self.threshold = threshold
        self._anchors: dict[tuple[int, int], torch.Tensor] = {}
        self.info = {
            "name": name,
            "weights": str(path),
            "sha256": digest,
            "max_side": max_side,
            "device": str(device),
        }

    @torch.inference_mode()
    def detect(self, frame: np.ndarray, max_side: int | None = None) -> list[Face]:
        """facexlib's ``detect_faces`` (origin size, NMS 0.4) for the boxes and scores alone, with its anchors made
        once per frame size: facexlib rebuilds them in a Python loop on every call, 40 % of a 640x480 detection on
        the CPU and what held a GPU scan near 60 frames/s."""
        small, scale = downscale(frame, max_side or self.max_side)
        h, w = small.shape[:2]
        net = self.net
        device = self.mean.device
        image = torch.from_numpy(small.astype(np.float32).transpose(2, 0, 1)).unsqueeze(0).to(device)
        loc, conf, _ = net(image - self.mean)
        boxes = decode(loc.squeeze(0), self._priors(h, w), net.cfg["variance"])
        boxes = boxes * torch.tensor([w, h, w, h], dtype=torch.float32, device=boxes.device)
        scores = conf.squeeze(0)[:, 1]
        kept = scores > self.threshold  # on the network's device: few boxes are copied
        return faces_from(boxes[kept].float().cpu().numpy(), scores[kept].float().cpu().numpy(), self.threshold, scale)

    def _priors(self, height: int, width: int) -> torch.Tensor:
        """facexlib's anchors (P, 4) for an input of this size, on the network's device, computed once."""
        key = (height, width)
        if key not in self._anchors:
            if len(self._anchors) >= 16:  # frame sizes of a long mixed archive: keep the memory bounded
                self._anchors.clear()
            self._anchors[key] = torch.from_numpy(priors(self.net.cfg, height, width)).to(self.mean.device)
        return self._anchors[key]


def _load_retinaface(name: str, path: Path, device: torch.device | str) -> Any:
    """RetinaFace with the file's weights, read by ``torch.load(weights_only=True)`` (facexlib's own loader would
    unpickle the file): the MobileNet-0.25 network without importing facexlib's package (``retinaface.py``), the
    ResNet-50 one as facexlib's ``RetinaFace``."""
    if name == "retinaface":
        net: nn.Module = MobileRetinaFace()
    else:
        from facexlib.detection.retinaface import RetinaFace

        net = RetinaFace(network_name="resnet50", half=False, device=str(device))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k.removeprefix("module."): v for k, v in state.items()}
        net.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError, AttributeError, OSError, pickle.UnpicklingError) as exc:
        raise WeightsError(f"{path} is not a usable {name} weights file ({str(exc).splitlines()[0][:160]})") from None
    net.train(False)
    return net.to(device)
