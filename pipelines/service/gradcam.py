"""Grad-CAM saliency of the diagnosis network's image branch (``monai.visualize.GradCAM``) as a PNG overlay.

The map is computed on a private copy of the network: GradCAM registers forward and backward hooks on its
target layer (and turns in-place activations off), which must not touch the copy that answers predictions.
One explainer serves one request at a time (the hooks keep per-call state); the caller holds its lock.

The map is scaled by its own peak (:func:`scale_to_peak`): MONAI's default post-processing maps each map's
(min, max) to (1, 0) and so flips it (its docstring says so; Project-MONAI/tutorials#1796), which made the served
maps light up the regions the model found least important, the image's corners and border
(``docs/gradcam.md``).
"""

from __future__ import annotations

import copy
import io
import threading
from typing import Any

import numpy as np
import torch
from torch import nn

MIN_PNG_SIDE = 256
OVERLAY_ALPHA = 0.45


class _LogitAsClass(nn.Module):
    """Presents the fusion network's one logit as a one-class score ``(B, 1)``, the shape GradCAM expects."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor, ehr: torch.Tensor | None = None) -> torch.Tensor:
        logits: torch.Tensor = self.net(image, ehr)
        return logits.reshape(-1, 1)


def scale_to_peak(cam: torch.Tensor) -> torch.Tensor:
    """Each map divided by its own maximum: the most important region is 1, no importance (ReLU's 0) stays 0."""
    flat = cam.reshape(cam.shape[0], -1)
    peak = flat.max(dim=1).values.clamp_min(torch.finfo(cam.dtype).tiny)
    scaled: torch.Tensor = (flat.clamp_min(0.0) / peak[:, None]).reshape(cam.shape)
    return scaled


def last_conv_layer(module: nn.Module, prefix: str = "") -> str:
    """Name (relative to ``module``, under ``prefix``) of its last 2-D convolution: the Grad-CAM target layer.

    Raises:
        ValueError: the module has no 2-D convolution.
    """
    name = None
    for child_name, child in module.named_modules():
        if isinstance(child, nn.Conv2d):
            name = child_name
    if name is None:
        raise ValueError("the image network has no 2-D convolution to explain")
    return f"{prefix}{name}"


class SaliencyExplainer:
    """Grad-CAM maps of a fusion network's image branch.

    Args:
        network: the diagnosis network (a ``FusionNet`` with an image branch).
        copy_network: explain a deep copy (True) or take ``network`` over (False: nothing else may use it, the
            hooks stay on it).
    """

    def __init__(self, network: nn.Module, *, copy_network: bool = True) -> None:
        from monai.visualize.class_activation_maps import GradCAM

        image_net = getattr(network, "image_net", None)
        if image_net is None:
            raise ValueError("the model has no image branch to explain")
        self._wrapped = _LogitAsClass(copy.deepcopy(network) if copy_network else network).eval()
        for parameter in self._wrapped.parameters():
            parameter.requires_grad_(True)
        self.target_layer = last_conv_layer(image_net, prefix="net.image_net.")
        self._cam = GradCAM(nn_module=self._wrapped, target_layers=self.target_layer, postprocessing=scale_to_peak)
        self.lock = threading.Lock()

    def saliency(self, image: torch.Tensor, ehr: torch.Tensor | None) -> np.ndarray:
        """The Grad-CAM map of one preprocessed image, ``(size, size)`` float32 in [0, 1].

        Args:
            image: ``(1, size, size)`` as the training preprocessing returns it.
            ehr: ``(1, n_ehr)`` model inputs, or None for an image-only model.
        """
        device = next(self._wrapped.parameters()).device
        x = image.unsqueeze(0).to(device)
        kwargs: dict[str, Any] = {}
        if ehr is not None:
            kwargs["ehr"] = ehr.to(device)
        with self.lock, torch.enable_grad():
            cam = self._cam(x, class_idx=0, **kwargs)
        out = cam.detach().float().cpu().numpy()[0, 0]
        out = np.nan_to_num(out, nan=0.0, posinf=1.0, neginf=0.0)
        clipped: np.ndarray = np.clip(out, 0.0, 1.0).astype(np.float32)
        return clipped


def _colormap(values: np.ndarray) -> np.ndarray:
    """An RGB heat colour scale (black-red-yellow-white, like ``hot``) for values in [0, 1], uint8."""
    v = np.clip(values, 0.0, 1.0)
    red = np.clip(v * 3.0, 0.0, 1.0)
    green = np.clip(v * 3.0 - 1.0, 0.0, 1.0)
    blue = np.clip(v * 3.0 - 2.0, 0.0, 1.0)
    rgb: np.ndarray = (np.stack([red, green, blue], axis=-1) * 255.0).round().astype(np.uint8)
    return rgb


def overlay_png(image: np.ndarray, saliency: np.ndarray, *, min_side: int = MIN_PNG_SIDE) -> bytes:
    """The radiograph in grey with the saliency map blended over it in heat colours, as PNG bytes.

    Args:
        image: 2-D image in [0, 1] (the model's input).
        saliency: 2-D map in [0, 1] of the same shape.
        min_side: small images are enlarged (bilinear) to at least this side so that a person can read them.
    """
    from PIL import Image

    if image.shape != saliency.shape:
        raise ValueError(f"image {image.shape} and saliency {saliency.shape} differ in shape")
    grey = np.repeat((np.clip(image, 0.0, 1.0) * 255.0)[..., None], 3, axis=-1)
    heat = _colormap(saliency).astype(np.float32)
    weight = OVERLAY_ALPHA * np.clip(saliency, 0.0, 1.0)[..., None]
    blended = (grey * (1.0 - weight) + heat * weight).round().astype(np.uint8)
    picture = Image.fromarray(blended, mode="RGB")
    side = max(picture.size)
    if side < min_side:
        scale = -(-min_side // side)
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
