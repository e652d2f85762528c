"""Typed options of the diagnosis training engine and the metadata saved beside a trained model."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Mode = Literal["fused", "image", "ehr"]
Precision = Literal["auto", "fp32", "bf16"]
Scheduler = Literal["cosine", "onecycle", "none"]

IMAGE_NETWORKS: tuple[str, ...] = ("densenet-tiny", "densenet121", "resnet18", "resnet34", "efficientnet-b0")
MODES: tuple[str, ...] = ("fused", "image", "ehr")


@dataclass(frozen=True)
class TrainOptions:
    """Everything that decides the model and how it is trained (the seed, data and device come separately).

    Attributes:
        network: image backbone, one of :data:`IMAGE_NETWORKS`.
        mode: ``fused`` (image + EHR, late fusion), ``image`` only or ``ehr`` only.
        image_size: side in pixels that images are resized to.
        embed_dim: width of the image embedding (the backbone's output features).
        ehr_hidden: width of the EHR MLP (hidden layer and embedding).
        dropout: dropout before the head and inside the EHR MLP.
        epochs: maximum number of epochs.
        batch_size: training batch size (per process under DDP).
        eval_batch_size: batch size of validation and prediction.
        lr: peak learning rate of AdamW.
        weight_decay: AdamW weight decay.
        scheduler: per-step learning-rate schedule: ``cosine`` annealing, ``onecycle`` or ``none``.
        patience: epochs without a better validation AUROC before stopping early.
        augment: random flip/rotate/zoom of training images.
        cache: keep the deterministic preprocessing of every image in memory (MONAI CacheDataset).
        num_workers: DataLoader worker processes; 0 loads in the training process.
        num_threads: torch intra-op threads on CPU; 0 means one per available core.
        precision: ``auto`` is bf16 autocast on CUDA and on CPUs with AMX tiles, fp32 elsewhere.
        channels_last: NHWC memory format; ``None`` decides by device and precision (see engine).
        compile: wrap the model in ``torch.compile``.
    """

    network: str = "densenet-tiny"
    mode: Mode = "fused"
    image_size: int = 64
    embed_dim: int = 32
    ehr_hidden: int = 32
    dropout: float = 0.1
    epochs: int = 20
    batch_size: int = 32
    eval_batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    scheduler: Scheduler = "cosine"
    patience: int = 5
    augment: bool = True
    cache: bool = True
    num_workers: int = 0
    num_threads: int = 0
    precision: Precision = "auto"
    channels_last: bool | None = None
    compile: bool = False

    def __post_init__(self) -> None:
        if self.network not in IMAGE_NETWORKS:
            raise ValueError(f"network '{self.network}' is unknown (known: {', '.join(IMAGE_NETWORKS)})")
        if self.mode not in MODES:
            raise ValueError(f"mode '{self.mode}' is unknown (known: {', '.join(MODES)})")
        for name in (
            "image_size",
            "embed_dim",
            "ehr_hidden",
            "epochs",
            "batch_size",
            "eval_batch_size",
            "patience",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError("lr must be positive and weight_decay non-negative")
        if self.num_workers < 0 or self.num_threads < 0:
            raise ValueError("num_workers and num_threads must be non-negative")

    def to_dict(self) -> dict[str, Any]:
        """The options as a JSON-ready mapping."""
        return asdict(self)

    def fingerprint_dict(self) -> dict[str, Any]:
        """The options that change the trained weights (resuming under others would mix two runs)."""
        volatile = {"num_workers", "num_threads", "cache", "eval_batch_size"}
        return {k: v for k, v in self.to_dict().items() if k not in volatile}


class ModelMeta(BaseModel):
    """What ``model.json`` holds: enough to rebuild the network and its preprocessing for inference.

    ``thresholds`` are placeholders that the evaluation stage fills (decision threshold and operating points).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    format_version: int = 1
    task: str = "diagnosis"
    network: str
    mode: Mode
    image_size: int
    in_channels: int = 1
    embed_dim: int
    ehr_hidden: int
    dropout: float
    ehr_columns: list[str]
    precision: Literal["fp32", "bf16"] = "fp32"
    channels_last: bool = False
    thresholds: dict[str, float | None] = Field(
        default_factory=lambda: {"decision": 0.5, "high_sensitivity": None, "high_specificity": None}
    )
    best_epoch: int
    best_val_auroc: float
    seed: int
    torch_version: str
    monai_version: str
