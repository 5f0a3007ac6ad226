"""68 facial landmarks: an exact PyTorch port of face-api's FaceLandmark68Net (``@vladmandic/face-api`` 1.7.15, MIT,
by Vladimir Mandic; after Vincent Mühler's face-api.js), converted from its tfjs weights by ``gmdf_cli.tools.tfjs``.
For masks that follow the face's outline (landmark-hull self-blends) rather than its detector box.

The net: four dense blocks of 3x3 convolutions (the first a plain convolution, the others depthwise-separable), each
block's four outputs summed (not concatenated), stride 2 at the start of each block (112 -> 56 -> 28 -> 14 -> 7),
a 7x7 average pool and a linear layer to 136 values: (x, y) of the 68 points in [0, 1] of the padded square input.
Parity with the JavaScript reference is tested (``tests/test_landmarks.py``) and needs three details of tfjs:
'same' padding with stride 2 pads only after (right and bottom) on even sizes; the square input is zero-padded in
pixels (the extra pixel of an odd difference after) and resized with TF's legacy bilinear rule (source =
destination x scale, no half-pixel centres); the mean is subtracted per RGB channel and the result divided by 255.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

INPUT_SIZE = 112
MEAN_RGB = (122.782, 117.001, 104.298)
SHIPPED = Path(__file__).resolve().parents[1] / "weights" / "shipped" / "face-landmark-68.safetensors"


def _same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow's 'same' padding: the total split with the larger half after (right, bottom)."""
    pads: list[int] = []
    for size in (x.shape[-1], x.shape[-2]):
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class TfConv(nn.Module):
    """A 3x3 convolution with tfjs 'same' padding and a separate bias. x: (B, I, H, W) -> (B, O, H/s, W/s)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(cin, cout, 3, stride, bias=False)
        self.bias = nn.Parameter(torch.zeros(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(_same_pad(x, 3, self.stride)) + self.bias.view(1, -1, 1, 1)


class SeparableConv(nn.Module):
    """tfjs ``separableConv2d`` + bias: a depthwise 3x3 ('same', stride s), a pointwise 1x1, then the bias.
    x: (B, I, H, W) -> (B, O, H/s, W/s)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.depthwise = nn.Conv2d(cin, cin, 3, stride, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)
        self.bias = nn.Parameter(torch.zeros(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(_same_pad(x, 3, self.stride))) + self.bias.view(1, -1, 1, 1)


class DenseBlock(nn.Module):
    """face-api's ``denseBlock4``: o1 = relu(conv0(x)) (stride 2), o2 = conv1(o1), o3 = conv2(relu(o1 + o2)),
    o4 = conv3(relu(o1 + o2 + o3)); out = relu(o1 + o2 + o3 + o4). x: (B, I, H, W) -> (B, O, H/2, W/2)."""

    def __init__(self, cin: int, cout: int, first: bool) -> None:
        super().__init__()
        self.conv0 = TfConv(cin, cout, 2) if first else SeparableConv(cin, cout, 2)
        self.conv1 = SeparableConv(cout, cout, 1)
        self.conv2 = SeparableConv(cout, cout, 1)
        self.conv3 = SeparableConv(cout, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o1 = F.relu(self.conv0(x))
        o2 = self.conv1(o1)
        o3 = self.conv2(F.relu(o1 + o2))
        o4 = self.conv3(F.relu(o1 + o2 + o3))
        return F.relu(o1 + o2 + o3 + o4)


class FaceLandmark68Net(nn.Module):
    """x: (B, 3, 112, 112), RGB, ``(pixels - MEAN_RGB) / 255`` (``to_input``) -> (B, 136) raw outputs: x0, y0, x1,
    ... in [0, 1] of the padded square (``to_points`` maps them to the crop's pixels)."""

    def __init__(self) -> None:
        super().__init__()
        self.dense0 = DenseBlock(3, 32, first=True)
        self.dense1 = DenseBlock(32, 64, first=False)
        self.dense2 = DenseBlock(64, 128, first=False)
        self.dense3 = DenseBlock(128, 256, first=False)
        self.fc = nn.Linear(256, 136)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dense3(self.dense2(self.dense1(self.dense0(x))))
        return self.fc(F.avg_pool2d(x, 7, 2).flatten(1))


def to_input(rgb: np.ndarray) -> torch.Tensor:
    """One face crop (H, W, 3) RGB uint8 -> the net's input (3, 112, 112): zero-padded to a square (the extra pixel
    of an odd difference after), resized by TF's legacy bilinear rule, mean-subtracted and divided by 255."""
    x = torch.from_numpy(np.ascontiguousarray(rgb)).float()
    h, w = x.shape[:2]
    after = math.floor(abs(h - w) * 0.5 + 0.5)  # JavaScript's Math.round
    before = abs(h - w) - after
    if h > w:
        x = F.pad(x, (0, 0, before, after))
    elif w > h:
        x = F.pad(x, (0, 0, 0, 0, before, after))
    side = x.shape[0]
    if side != INPUT_SIZE:
        src = torch.arange(INPUT_SIZE, dtype=torch.float64) * (side / INPUT_SIZE)
        i0 = src.floor().long()
        i1 = (i0 + 1).clamp(max=side - 1)
        frac = (src - i0).float()
        x = x[i0] + (x[i1] - x[i0]) * frac.view(-1, 1, 1)
        x = x[:, i0] + (x[:, i1] - x[:, i0]) * frac.view(1, -1, 1)
    mean = torch.tensor(MEAN_RGB).view(1, 1, 3)
    return ((x - mean) / 255.0).permute(2, 0, 1)


def to_points(raw: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Raw outputs (B, 136) of crops of ``width`` x ``height`` -> (B, 68, 2) pixels of the crop, as face-api maps
    them (it takes the padding as half the difference on each side)."""
    scale = INPUT_SIZE / max(width, height)
    sw, sh = width * scale, height * scale
    pad_x = abs(sw - sh) / 2 if sw < sh else 0.0
    pad_y = abs(sw - sh) / 2 if sh < sw else 0.0
    xy = raw.view(-1, 68, 2) * INPUT_SIZE
    rel = torch.stack([(xy[..., 0] - pad_x) / sw, (xy[..., 1] - pad_y) / sh], -1)
    return rel * torch.tensor([width, height], dtype=rel.dtype)


def load_landmark_net(path: Path = SHIPPED) -> FaceLandmark68Net:
    """The converted weights (safetensors: tensors only, nothing unpickled), every key required."""
    from safetensors.torch import load_file

    net = FaceLandmark68Net()
    net.load_state_dict(load_file(str(path)), strict=True)
    return net.eval()


@torch.no_grad()
def landmarks(net: FaceLandmark68Net, image_bgr: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """The 68 points (68, 2) in image pixels of the face in ``box`` (x1, y1, x2, y2, as a face detector gives it;
    face-api feeds the box itself, no margin)."""
    height, width = image_bgr.shape[:2]
    x1, y1 = max(0, int(round(box[0]))), max(0, int(round(box[1])))
    x2, y2 = min(width, int(round(box[2]))), min(height, int(round(box[3])))
    if x2 - x1 < 2 or y2 - y1 < 2:
        raise ValueError(f"face box {box} holds no pixels of a {width}x{height} image")
    crop = image_bgr[y1:y2, x1:x2, ::-1]
    raw = net(to_input(crop)[None])
    return (to_points(raw, x2 - x1, y2 - y1)[0] + torch.tensor([x1, y1])).numpy()
