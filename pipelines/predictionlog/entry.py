"""A stored prediction-log entry, with its place in the hash chain.

Apart from :mod:`pipelines.predictionlog.log` so that the FHIR rendering (:mod:`pipelines.predictionlog.fhir`)
can name it without importing the log, which imports the rendering: imports go one way.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class LogEntry:
    """A stored prediction-log record, with its place in the chain."""

    seq: int
    event_id: str
    recorded: str
    token_name: str
    role: str
    purpose_of_use: str
    endpoint: str
    model_name: str
    model_version: str
    model_alias: str
    input_sha256: str
    patient_pseudonym: str | None
    output_json: str
    latency_us: int
    outcome: str
    outcome_desc: str | None
    prev_hash: str
    hash: str

    @property
    def output(self) -> Any:
        """The recorded output, parsed."""
        return json.loads(self.output_json)

    @property
    def latency_ms(self) -> float:
        """Latency in milliseconds."""
        return self.latency_us / 1000.0

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form (``?format=json``): every stored field plus parsed output and latency_ms."""
        data = asdict(self)
        data["output"] = self.output
        data["latency_ms"] = self.latency_ms
        del data["output_json"]
        return data
