"""Compiling: GM-DF's deployed score and RetinaFace exported to ONNX graphs (torch's exporter), each checked
against torch on real-sized inputs before it is kept. Needs torch and the ``onnx`` package; runs once per weights."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from ..data.anchors import BGR_MEAN
from ..fileio import atomic_path
from ..model import GMDF
from .graphs import OPSET, load_graph

TOLERANCE = 1e-4
"""Largest difference between OpenCV's outputs and torch's that a graph may show to be kept (P(fake), and
RetinaFace's box offsets and class probabilities)."""


class ScoringGraph(nn.Module):
    """What a scan asks of GM-DF, as one graph: images (B, 3, S, S) -> P(fake) (B,) under the wildcard domain's
    prompts, ``softmax_c(s(i, 0, c) / tau_0)`` (MM paper eq. 9-11) with the prompt features (2, E) cached in the
    weights as a constant. The experts, DNorm and aggregation run as in ``GMDF.encode_image``."""

    text: torch.Tensor
    tau: torch.Tensor

    def __init__(self, model: GMDF) -> None:
        super().__init__()
        self.model = model
        text, temps = model.prompt_features()
        self.register_buffer("text", text[0].T.contiguous().float())  # (E, 2): the wildcard's real, fake prompts
        self.register_buffer("tau", temps[0].reshape(1).float())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = (self.model.encode_image(images, 0) @ self.text) / self.tau
        return logits.softmax(-1)[:, 1]


class _Detections(nn.Module):
    """RetinaFace's network with its box offsets and class probabilities only: image (1, 3, H, W) BGR minus the mean
    -> loc (1, P, 4), conf (1, P, 2)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, conf, _ = self.net(image)
        return loc, conf


def compile_model(model: GMDF, path: Path) -> bool:
    """Export ``model``'s score to ``path``; False (nothing written) where OpenCV's run of it differs from torch's."""
    side = model.config.vision.image_size
    gen = torch.Generator().manual_seed(0)
    checks = [torch.randn(n, 3, side, side, generator=gen) for n in (1, 3)]
    graph = ScoringGraph(model).float().eval()
    return _export(graph, checks, path, "images", ["p"], {"images": {0: "batch"}, "p": {0: "batch"}})


def compile_retinaface(net: nn.Module, path: Path) -> bool:
    """Export RetinaFace MobileNet-0.25 (any input size) to ``path``; False where OpenCV's outputs differ."""
    gen = torch.Generator().manual_seed(0)
    mean = torch.tensor(BGR_MEAN).view(1, 3, 1, 1)
    checks = [torch.rand(1, 3, h, w, generator=gen) * 255 - mean for h, w in ((240, 320), (360, 270))]
    dynamic = {"image": {2: "height", 3: "width"}, "loc": {1: "anchors"}, "conf": {1: "anchors"}}
    return _export(_Detections(net).float().eval(), checks, path, "image", ["loc", "conf"], dynamic)


def _export(
    module: nn.Module,
    checks: Sequence[torch.Tensor],
    path: Path,
    input_name: str,
    output_names: list[str],
    dynamic: dict[str, dict[int, str]],
) -> bool:
    try:
        with atomic_path(path) as tmp:
            with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    module,
                    (checks[0],),
                    str(tmp),
                    dynamo=False,
                    input_names=[input_name],
                    output_names=output_names,
                    dynamic_axes=dynamic,
                    opset_version=OPSET,
                )
            if not _agrees(module, tmp, checks, output_names):
                raise _Refused
    except _Refused:
        return False
    return True


class _Refused(Exception):
    """OpenCV's run of a fresh graph differs from torch's: the graph is not kept."""


def _agrees(module: nn.Module, path: Path, checks: Sequence[torch.Tensor], output_names: list[str]) -> bool:
    """Whether OpenCV's run of the graph at ``path`` gives torch's outputs, to ``TOLERANCE``, on every check input."""
    try:
        net = load_graph(path)
    except cv2.error:
        return False
    for x in checks:
        with torch.no_grad():
            expected = module(x)
        expected = [expected] if isinstance(expected, torch.Tensor) else list(expected)
        try:
            net.setInput(x.numpy())
            got = net.forward(output_names)
        except cv2.error:
            return False
        for want, have in zip(expected, got, strict=True):
            if have.size != want.numel() or np.abs(have.reshape(-1) - want.numpy().reshape(-1)).max() > TOLERANCE:
                return False
    return True
