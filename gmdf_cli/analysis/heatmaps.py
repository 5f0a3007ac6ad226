"""Where the detector looks: Grad-CAM (pytorch-grad-cam) on the last transformer block, toward the "fake" class."""

from __future__ import annotations

import cv2
import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from ..data.faces import CROP_SCALE, InputFormat, to_model_input
from ..model import GMDF

FAKE = 1


def _tokens_to_grid(tokens: torch.Tensor) -> torch.Tensor:
    """ViT tokens (B, 1 + g*g, D) -> (B, D, g, g), dropping the class token, as Grad-CAM wants a feature map."""
    patches = tokens[:, 1:, :]
    grid = int(round(patches.shape[1] ** 0.5))
    return patches.reshape(patches.shape[0], grid, grid, patches.shape[2]).permute(0, 3, 1, 2)


def gradcam_maps(model: GMDF, crops: list[np.ndarray], batch_size: int = 8) -> np.ndarray:
    """Grad-CAM maps for BGR face crops (N, S, S, 3) -> (N, S, S) in [0, 1], explaining P(fake)."""
    maps = []
    reshape = _tokens_to_grid if model.config.vision.kind == "vit" else None
    fmt = InputFormat.of(model.config.vision)
    with GradCAM(model=model, target_layers=[model.visual.cam_target()], reshape_transform=reshape) as cam:
        for start in range(0, len(crops), batch_size):
            chunk = crops[start : start + batch_size]
            inputs = to_model_input([fmt(c) for c in chunk]).requires_grad_(True)
            maps.append(cam(input_tensor=inputs, targets=[ClassifierOutputTarget(FAKE)] * len(chunk)))
    return np.concatenate(maps) if maps else np.zeros((0, 1, 1), dtype=np.float32)


def overlay(crop: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """Heatmap over the face: BGR crop (S, S, 3) + map (s, s), resized to S -> BGR uint8 (S, S, 3)."""
    if cam.shape[:2] != crop.shape[:2]:
        cam = cv2.resize(cam, (crop.shape[1], crop.shape[0]), interpolation=cv2.INTER_LINEAR)
    rgb = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
    return cv2.cvtColor(show_cam_on_image(rgb, cam, use_rgb=True, image_weight=0.55), cv2.COLOR_RGB2BGR)


def cam_note(cam: np.ndarray, crop_scale: float = CROP_SCALE) -> str | None:
    """What a reader should know about one Grad-CAM map (s, s) in [0, 1] over a face crop: that it is empty (no
    evidence toward fake), or that most of its weight falls outside the face (the crop is ``crop_scale`` times the
    face box, centred, so the face is its middle 1 / crop_scale)."""
    total = float(cam.sum())
    if total <= 1e-6 * cam.size:
        return "empty map: Grad-CAM found nothing that raises the fake score on this face"
    h, w = cam.shape
    mh, mw = round(h * (1 - 1 / crop_scale) / 2), round(w * (1 - 1 / crop_scale) / 2)
    inside = float(cam[mh : h - mh, mw : w - mw].sum()) / total
    if inside < 0.5:
        return f"only {inside:.0%} of the attention lies on the face: the score leans on the background"
    return None
