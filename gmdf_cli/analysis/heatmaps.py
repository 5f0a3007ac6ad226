"""Where the detector looks: Grad-CAM (pytorch-grad-cam) on the last transformer block, toward the "fake" class."""

from __future__ import annotations

import cv2
import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from ..data.faces import to_model_input
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
    with GradCAM(model=model, target_layers=[model.visual.cam_target()], reshape_transform=reshape) as cam:
        for start in range(0, len(crops), batch_size):
            chunk = crops[start : start + batch_size]
            inputs = to_model_input(chunk).requires_grad_(True)
            maps.append(cam(input_tensor=inputs, targets=[ClassifierOutputTarget(FAKE)] * len(chunk)))
    return np.concatenate(maps) if maps else np.zeros((0, 1, 1), dtype=np.float32)


def overlay(crop: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """Heatmap over the face: BGR crop (S, S, 3) + map (s, s), resized to S -> BGR uint8 (S, S, 3)."""
    if cam.shape[:2] != crop.shape[:2]:
        cam = cv2.resize(cam, (crop.shape[1], crop.shape[0]), interpolation=cv2.INTER_LINEAR)
    rgb = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
    return cv2.cvtColor(show_cam_on_image(rgb, cam, use_rgb=True, image_weight=0.55), cv2.COLOR_RGB2BGR)


def contact_sheet(tiles: list[np.ndarray], captions: list[str], columns: int = 4, tile: int = 224) -> np.ndarray:
    """Grid of BGR tiles with a caption under each -> one BGR image."""
    columns = max(1, min(columns, len(tiles)))
    rows = (len(tiles) + columns - 1) // columns
    band = 28
    sheet = np.full((rows * (tile + band), columns * tile, 3), 255, dtype=np.uint8)
    for i, (img, text) in enumerate(zip(tiles, captions, strict=True)):
        r, c = divmod(i, columns)
        y, x = r * (tile + band), c * tile
        sheet[y : y + tile, x : x + tile] = cv2.resize(img, (tile, tile), interpolation=cv2.INTER_AREA)
        cv2.putText(sheet, text, (x + 6, y + tile + 19), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (20, 20, 20), 1, cv2.LINE_AA)
    return sheet
