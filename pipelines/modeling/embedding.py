"""The image embedding of a diagnosis network, captured during an ordinary forward pass.

The embedding is the input of the image branch's last linear layer: for MONAI's DenseNet the pooled features
after the final ReLU, for its ResNet and EfficientNet the pooled features before ``fc``/``_fc``. A forward hook
reads it while :func:`pipelines.modeling.engine.predict_arrays` runs, so the service scores a study's
out-of-distribution distance from the same pass that gives its probability (no second network call).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipelines.modeling.engine import predict_arrays
from pipelines.modeling.errors import ModelingError
from pipelines.modeling.networks import FusionNet
from pipelines.modeling.options import ModelMeta


def embedding_layer(model: nn.Module) -> nn.Linear:
    """The image branch's last linear layer (its input is the embedding).

    Raises:
        ModelingError: the model is not a :class:`FusionNet` with an image branch, or the branch has no linear
            layer.
    """
    image_net = model.image_net if isinstance(model, FusionNet) else None
    if image_net is None:
        raise ModelingError(f"{type(model).__name__} ({getattr(model, 'mode', '?')}) has no image branch to embed")
    linears = [m for m in image_net.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ModelingError("the image branch has no linear layer to read the embedding from")
    return linears[-1]


@contextmanager
def capture_embeddings(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect the image embedding of every batch that runs through ``model`` inside the block.

    Yields:
        A list that receives one ``(batch, d)`` float32 tensor per forward pass, in call order.
    """
    captured: list[torch.Tensor] = []

    def hook(_module: nn.Module, inputs: tuple[Any, ...], _output: Any) -> None:
        captured.append(inputs[0].detach().float())

    handle = embedding_layer(model).register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def joined(captured: list[torch.Tensor], width: int | None = None) -> np.ndarray:
    """The captured batches as one ``(n, d)`` float64 array (``(0, width)`` when nothing ran)."""
    if not captured:
        return np.zeros((0, width or 0), dtype=np.float64)
    return torch.cat(captured).cpu().numpy().astype(np.float64)


def predict_with_embeddings(
    model: nn.Module,
    meta: ModelMeta,
    images: Sequence[np.ndarray | str | Path],
    ehr: np.ndarray | None,
    *,
    batch_size: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, embeddings) of the studies from one pass of :func:`~pipelines.modeling.engine.predict_arrays`.

    Raises:
        ModelingError: the model has no image branch.
    """
    with capture_embeddings(model) as captured:
        probs = predict_arrays(model, meta, images, ehr, n=len(images), batch_size=batch_size)
    return probs, joined(captured, embedding_layer(model).in_features)
