"""Image backbones (MONAI), the EHR MLP and the late-fusion diagnosis network (one logit per study)."""

from __future__ import annotations

import torch
from torch import nn

from pipelines.modeling.options import IMAGE_NETWORKS, MODES


def build_image_net(name: str, *, in_channels: int = 1, out_features: int, spatial_dims: int = 2) -> nn.Module:
    """Build an image backbone that maps ``(B, C, *spatial)`` to ``(B, out_features)``; nothing is downloaded.

    Args:
        name: one of :data:`IMAGE_NETWORKS`; ``densenet-tiny`` is a small DenseNet sized for CPU at 64 px.
        in_channels: image channels.
        out_features: width of the embedding the backbone's final linear layer produces.
        spatial_dims: 2 for radiographs, 3 for volumes.

    Raises:
        ValueError: the name is unknown.
    """
    from monai.networks import nets

    if name == "densenet-tiny":
        # Three short dense blocks of narrow layers: at 64 px this learns the synthetic findings in a few
        # epochs while running about 15x faster than DenseNet121 on two CPU cores.
        return nets.DenseNet(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=out_features,
            init_features=16,
            growth_rate=12,
            block_config=(3, 6, 6),
            bn_size=2,
        )
    if name == "densenet121":
        return nets.DenseNet121(
            spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_features, pretrained=False
        )
    if name in ("resnet18", "resnet34"):
        factory = nets.resnet18 if name == "resnet18" else nets.resnet34
        return factory(
            pretrained=False,
            spatial_dims=spatial_dims,
            n_input_channels=in_channels,
            num_classes=out_features,
        )
    if name == "efficientnet-b0":
        return nets.EfficientNetBN(
            "efficientnet-b0",
            pretrained=False,
            progress=False,
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            num_classes=out_features,
        )
    raise ValueError(f"image network '{name}' is unknown (known: {', '.join(IMAGE_NETWORKS)})")


class EhrMLP(nn.Sequential):
    """Two linear layers over scaled EHR features and missingness flags: ``(B, n) -> (B, out_features)``."""

    def __init__(self, in_features: int, hidden: int, out_features: int, dropout: float = 0.0) -> None:
        """Build the MLP.

        Args:
            in_features: number of EHR columns.
            hidden: width of the hidden layer.
            out_features: width of the embedding.
            dropout: dropout after the hidden activation.
        """
        if in_features < 1:
            raise ValueError("the EHR MLP needs at least one EHR column")
        super().__init__(
            nn.Linear(in_features, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, out_features),
        )


class FusionNet(nn.Module):
    """Late fusion of an image embedding and an EHR embedding into one logit.

    ``mode="fused"`` concatenates both embeddings before the head; ``"image"`` and ``"ehr"`` use one branch
    only (the other is not built), so the three can be compared on the same data.
    """

    def __init__(
        self,
        mode: str,
        *,
        image_net: nn.Module | None,
        image_features: int,
        ehr_net: nn.Module | None,
        ehr_features: int,
        dropout: float = 0.0,
    ) -> None:
        """Assemble the branches and the head.

        Args:
            mode: ``fused``, ``image`` or ``ehr``.
            image_net: the image backbone (required unless mode is ``ehr``).
            image_features: width of the image embedding.
            ehr_net: the EHR MLP (required unless mode is ``image``).
            ehr_features: width of the EHR embedding.
            dropout: dropout before the final linear layer.
        """
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode '{mode}' is unknown (known: {', '.join(MODES)})")
        self.mode = mode
        self.uses_image = mode in ("fused", "image")
        self.uses_ehr = mode in ("fused", "ehr")
        if self.uses_image and image_net is None:
            raise ValueError(f"mode '{mode}' needs an image network")
        if self.uses_ehr and ehr_net is None:
            raise ValueError(f"mode '{mode}' needs an EHR network")
        self.image_net = image_net if self.uses_image else None
        self.ehr_net = ehr_net if self.uses_ehr else None
        width = (image_features if self.uses_image else 0) + (ehr_features if self.uses_ehr else 0)
        # Both embeddings end in a linear layer, so the head starts with the non-linearity.
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(dropout), nn.Linear(width, 1))

    def forward(self, image: torch.Tensor | None = None, ehr: torch.Tensor | None = None) -> torch.Tensor:
        """Return one logit per sample, shape ``(B,)``; inputs the mode does not use may be ``None``."""
        parts = []
        if self.image_net is not None:
            if image is None:
                raise ValueError(f"mode '{self.mode}' needs an image batch")
            parts.append(self.image_net(image))
        if self.ehr_net is not None:
            if ehr is None:
                raise ValueError(f"mode '{self.mode}' needs an EHR batch")
            parts.append(self.ehr_net(ehr))
        joined = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        logits: torch.Tensor = self.head(joined)
        return logits.squeeze(1)


def build_model(
    network: str,
    mode: str,
    n_ehr: int,
    *,
    embed_dim: int = 32,
    ehr_hidden: int = 32,
    dropout: float = 0.0,
    in_channels: int = 1,
    spatial_dims: int = 2,
) -> FusionNet:
    """Build the diagnosis network for one mode.

    Args:
        network: image backbone name (ignored in ``ehr`` mode).
        mode: ``fused``, ``image`` or ``ehr``.
        n_ehr: number of EHR columns (ignored in ``image`` mode).
        embed_dim: image embedding width.
        ehr_hidden: EHR MLP width.
        dropout: dropout in the EHR MLP and before the head.
        in_channels: image channels.
        spatial_dims: 2 or 3.
    """
    if mode not in MODES:
        raise ValueError(f"mode '{mode}' is unknown (known: {', '.join(MODES)})")
    image_net = None
    ehr_net = None
    if mode in ("fused", "image"):
        image_net = build_image_net(network, in_channels=in_channels, out_features=embed_dim, spatial_dims=spatial_dims)
    if mode in ("fused", "ehr"):
        ehr_net = EhrMLP(n_ehr, ehr_hidden, ehr_hidden, dropout)
    return FusionNet(
        mode,
        image_net=image_net,
        image_features=embed_dim,
        ehr_net=ehr_net,
        ehr_features=ehr_hidden,
        dropout=dropout,
    )
