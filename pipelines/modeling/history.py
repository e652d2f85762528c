"""Per-epoch training history, written as JSON and CSV (DVC plots read either)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from pipelines.modeling.checkpoint import atomic_write_text


@dataclass(frozen=True)
class EpochRecord:
    """One epoch of training (``epoch`` counts from 1; ``samples_per_s`` is training throughput)."""

    epoch: int
    train_loss: float
    val_loss: float
    val_auroc: float
    lr: float
    seconds: float
    samples_per_s: float

    def to_dict(self) -> dict[str, Any]:
        """The record as a JSON-ready mapping."""
        return asdict(self)


def write_history(records: Sequence[EpochRecord], out_dir: Path) -> tuple[Path, Path]:
    """Write ``history.json`` (a list of records) and ``history.csv`` (one row per epoch) atomically.

    Returns:
        The paths of the JSON and CSV files.
    """
    rows = [r.to_dict() for r in records]
    json_path = out_dir / "history.json"
    csv_path = out_dir / "history.csv"
    atomic_write_text(json_path, json.dumps(rows, indent=2) + "\n")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[f.name for f in fields(EpochRecord)], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(csv_path, buffer.getvalue())
    return json_path, csv_path
