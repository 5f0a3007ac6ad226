"""Where the detector looks: Grad-CAM (pytorch-grad-cam) on the last transformer block, toward the "fake" class."""

from __future__ import annotations

import cv2
import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from ..data.faces import InputFormat, to_model_input
from ..model import GMDF
from ..model.config import TOWER_KINDS

FAKE = 1


def _tokens_to_grid(tokens: torch.Tensor) -> torch.Tensor:
    """ViT tokens (B, 1 + g*g, D) -> (B, D, g, g), dropping the class token, as Grad-CAM wants a feature map."""
    patches = tokens[:, 1:, :]
    grid = int(round(patches.shape[1] ** 0.5))
    return patches.reshape(patches.shape[0], grid, grid, patches.shape[2]).permute(0, 3, 1, 2)


def gradcam_maps(model: GMDF, crops: list[np.ndarray], batch_size: int = 8) -> np.ndarray:
    """Grad-CAM maps for BGR face crops (N, S, S, 3) -> (N, S, S) in [0, 1], explaining P(fake)."""
    maps = []
    reshape = _tokens_to_grid if TOWER_KINDS[model.config.vision.kind].cam_tokens else None
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


HEAT_LEVEL = 0.5
"""A map's heat is its mass where it reaches at least this share of its peak: what the overlay shows warm (the
faint floor a Grad-CAM map keeps everywhere says nothing of where the model looked)."""


def heat_on_face(cam: np.ndarray, face_box: tuple[float, float, float, float]) -> float:
    """Share of a Grad-CAM map's heat (s, s) that lies inside the face box (x1, y1, x2, y2 in the map's pixels, as
    ``face_box_in_crop`` gives it); a pixel is inside when its centre is. 1.0 for an empty map."""
    heat = np.where(cam >= HEAT_LEVEL * float(cam.max()), cam, 0.0)
    total = float(heat.sum())
    if total <= 0:
        return 1.0
    x1, y1, x2, y2 = face_box
    rows, cols = np.arange(cam.shape[0]) + 0.5, np.arange(cam.shape[1]) + 0.5
    inside = ((rows >= y1) & (rows < y2))[:, None] & ((cols >= x1) & (cols < x2))[None, :]
    return float(heat[inside].sum()) / total


def cam_note(cam: np.ndarray, face_box: tuple[float, float, float, float]) -> str | None:
    """What a reader should know about one Grad-CAM map (s, s) in [0, 1] over a face crop: that it is empty (no
    evidence toward fake), or that most of its heat lies outside the face box (x1, y1, x2, y2 in the map's pixels:
    the detector's box, narrower than the square crop around it)."""
    if float(cam.sum()) <= 1e-6 * cam.size:
        return "empty map: Grad-CAM found nothing that raises the fake score on this face"
    inside = heat_on_face(cam, face_box)
    if inside < 0.5:
        return (
            f"only {inside:.0%} of the heat lies on the face (the detector's box): the score may lean on what is "
            "around it (background, hair, clothes)"
        )
    return None
