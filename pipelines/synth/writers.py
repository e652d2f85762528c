"""Output files: FHIR as bulk NDJSON (one file per resource type) or one transaction Bundle per patient, and the
CSV manifests. Everything is streamed; gzip headers carry no time or name, so reruns are byte-identical.
"""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path
from typing import IO, Any

import orjson

from pipelines.synth.chart import Rec

_FLUSH_BYTES = 1 << 18
_GZIP_LEVEL = 6


def _open_binary(path: Path, compress: bool) -> tuple[io.BufferedIOBase, io.BufferedIOBase]:
    raw = path.open("wb")
    if compress:
        # filename="" and mtime=0: the header must not depend on the temporary path or the clock.
        return raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=_GZIP_LEVEL)
    return raw, raw


def _write_file(path: Path, data: bytes, compress: bool) -> None:
    path.write_bytes(gzip.compress(data, compresslevel=_GZIP_LEVEL, mtime=0) if compress else data)


class _LineFile:
    """One NDJSON file, buffered; counts its lines."""

    def __init__(self, path: Path, compress: bool) -> None:
        self._raw, self._out = _open_binary(path, compress)
        self._buffer: list[bytes] = []
        self._size = 0
        self.lines = 0

    def add(self, line: bytes) -> int:
        self._buffer.append(line)
        self._size += len(line) + 1
        self.lines += 1
        if self._size >= _FLUSH_BYTES:
            self.flush()
        return self.lines

    def flush(self) -> None:
        if self._buffer:
            self._out.write(b"\n".join(self._buffer) + b"\n")
            self._buffer.clear()
            self._size = 0

    def close(self) -> None:
        self.flush()
        if self._out is not self._raw:
            self._out.close()
        self._raw.close()


class NdjsonSink:
    """Bulk-export layout: ``fhir/<ResourceType>.ndjson[.gz]``, one resource per line.

    Args:
        root: the cohort folder.
        compress: gzip every file.
    """

    def __init__(self, root: Path, *, compress: bool) -> None:
        self.root = root
        self.compress = compress
        self.suffix = ".ndjson.gz" if compress else ".ndjson"
        (root / "fhir").mkdir(parents=True, exist_ok=True)
        self._files: dict[str, _LineFile] = {}

    def _file(self, rtype: str) -> _LineFile:
        f = self._files.get(rtype)
        if f is None:
            f = self._files[rtype] = _LineFile(self.root / "fhir" / f"{rtype}{self.suffix}", self.compress)
        return f

    def write_directory(self, resources: list[dict[str, Any]]) -> None:
        """Organizations, practitioners and roles, one line each."""
        for r in resources:
            self._file(r["resourceType"]).add(orjson.dumps(r))

    def write_patient(self, index: int, recs: list[Rec]) -> list[tuple[str, int]]:
        """Write one patient's records; returns (file, 1-based line) per record."""
        out = []
        dumps = orjson.dumps
        for rec in recs:
            line = rec.raw.encode() if rec.raw is not None else dumps(rec.body)
            out.append((f"fhir/{rec.rtype}{self.suffix}", self._file(rec.rtype).add(line)))
        return out

    def close(self) -> None:
        """Flush and close every file."""
        for f in self._files.values():
            f.close()


class BundleSink:
    """Bundle layout: ``fhir/organizations.json[.gz]`` (batch) and ``fhir/patients/<n>.json[.gz]`` (transaction).

    A broken-JSON record cannot live inside a Bundle, so it goes to its own file ``patients/<n>-invalid-<k>.json``.

    Args:
        root: the cohort folder.
        compress: gzip every file.
    """

    def __init__(self, root: Path, *, compress: bool) -> None:
        self.root = root
        self.compress = compress
        self.suffix = ".json.gz" if compress else ".json"
        (root / "fhir" / "patients").mkdir(parents=True, exist_ok=True)

    def write_directory(self, resources: list[dict[str, Any]]) -> None:
        """One batch Bundle with conditional creates keyed on the registry identifiers."""
        entries = []
        for r in resources:
            request: dict[str, str] = {"method": "POST", "url": r["resourceType"]}
            if r["resourceType"] in ("Organization", "Practitioner"):
                ident = r["identifier"][0]
                request["ifNoneExist"] = f"identifier={ident['system']}|{ident['value']}"
            entries.append({"fullUrl": f"urn:uuid:{r['id']}", "resource": r, "request": request})
        bundle = {"resourceType": "Bundle", "type": "batch", "entry": entries}
        _write_file(self.root / "fhir" / f"organizations{self.suffix}", orjson.dumps(bundle), self.compress)

    def write_patient(self, index: int, recs: list[Rec]) -> list[tuple[str, int]]:
        """Write one patient's transaction Bundle; returns (file, 0-based entry index) per record."""
        out = []
        entries: list[dict[str, Any]] = []
        broken = 0
        name = f"fhir/patients/{index}{self.suffix}"
        for rec in recs:
            if rec.raw is not None:
                broken += 1
                raw_name = f"fhir/patients/{index}-invalid-{broken}{self.suffix}"
                _write_file(self.root / raw_name, rec.raw.encode(), self.compress)
                out.append((raw_name, 1))
                continue
            out.append((name, len(entries)))
            entries.append(
                {
                    "fullUrl": f"urn:uuid:{rec.rid}",
                    "resource": rec.body,
                    "request": {"method": "POST", "url": rec.rtype},
                }
            )
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        _write_file(self.root / name, orjson.dumps(bundle), self.compress)
        return out

    def close(self) -> None:
        """Nothing stays open."""


class Manifests:
    """``labels/audit_findings.csv``, ``manifest/fraud_truth.csv`` and ``manifest/dirty.csv``, streamed."""

    def __init__(self, root: Path) -> None:
        (root / "labels").mkdir(parents=True, exist_ok=True)
        (root / "manifest").mkdir(parents=True, exist_ok=True)
        self._handles: list[IO[str]] = []
        self.audit = self._csv(
            root / "labels" / "audit_findings.csv", ["claim_id", "provider_id", "pattern", "finding_date"]
        )
        self.truth = self._csv(
            root / "manifest" / "fraud_truth.csv", ["claim_id", "provider_id", "pattern", "labelled"]
        )
        self.dirty = self._csv(
            root / "manifest" / "dirty.csv", ["defect", "resource_type", "resource_id", "file", "location", "field"]
        )

    def _csv(self, path: Path, header: list[str]) -> Any:
        handle = path.open("w", encoding="utf-8", newline="")
        self._handles.append(handle)
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        return writer

    def close(self) -> None:
        """Close every CSV."""
        for h in self._handles:
            h.close()


def defect_ids(root: Path) -> frozenset[str]:
    """Ids of the resources written with an injected defect (``manifest/dirty.csv``)."""
    with (root / "manifest" / "dirty.csv").open(newline="", encoding="utf-8") as f:
        return frozenset(row["resource_id"] for row in csv.DictReader(f) if row["resource_id"])


def read_resources(root: Path, rtype: str, *, without_defects: bool = True) -> list[dict[str, Any]]:
    """The resources of one type in an uncompressed bulk-NDJSON cohort (:class:`NdjsonSink`), for tests and
    benchmarks that send cohort records as requests.

    The deliberately broken lines (not JSON) are skipped, and with ``without_defects`` so are the resources that
    carry an injected defect (:func:`defect_ids`). A type the cohort has no file for gives an empty list.
    """
    path = root / "fhir" / f"{rtype}.ndjson"
    if not path.exists():
        return []
    skip = defect_ids(root) if without_defects else frozenset()
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            resource = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if resource.get("id") not in skip:
            out.append(resource)
    return out
