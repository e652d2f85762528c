"""Per-epoch training history, written as JSON and CSV (DVC plots read either).

The files hold what training computed, never how long it took: DVC hashes a stage's outputs into ``dvc.lock``,
so a wall-clock figure in them would make every run a new output. Timings go to MLflow and the log instead.
"""

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


# Fields of a record that measure the machine, not the model: left out of the files.
TIMING_FIELDS = ("seconds", "samples_per_s")
WRITTEN_FIELDS = tuple(f.name for f in fields(EpochRecord) if f.name not in TIMING_FIELDS)


def write_history(records: Sequence[EpochRecord], out_dir: Path) -> tuple[Path, Path]:
    """Write ``history.json`` (a list of records) and ``history.csv`` (one row per epoch) atomically.

    Both leave out :data:`TIMING_FIELDS`, so the same training gives the same bytes.

    Returns:
        The paths of the JSON and CSV files.
    """
    rows = [{k: v for k, v in r.to_dict().items() if k in WRITTEN_FIELDS} for r in records]
    json_path = out_dir / "history.json"
    csv_path = out_dir / "history.csv"
    atomic_write_text(json_path, json.dumps(rows, indent=2) + "\n")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(WRITTEN_FIELDS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(csv_path, buffer.getvalue())
    return json_path, csv_path
