"""Read a generated cohort back for the tests: every FHIR record with its file and location, the manifests,
and helpers to resolve references. Independent of the generator's code on purpose."""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson


@dataclass
class Entry:
    """One record as written: parsed ``body`` (None when it is not JSON) and the ``raw`` bytes."""

    rtype: str
    rid: str
    body: dict[str, Any] | None
    raw: bytes
    file: str
    location: int
    full_url: str = ""


def _read_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.name.endswith(".gz") else data


def read_fhir(root: Path) -> list[Entry]:
    """All FHIR records under ``root/fhir`` (NDJSON lines, Bundle entries, or whole broken files)."""
    out: list[Entry] = []
    for path in sorted(p for p in (root / "fhir").rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        data = _read_bytes(path)
        if ".ndjson" in path.name:
            rtype = path.name.split(".")[0]
            for number, line in enumerate(data.split(b"\n"), 1):
                if not line:
                    continue
                try:
                    body = orjson.loads(line)
                except orjson.JSONDecodeError:
                    out.append(Entry(rtype, "", None, line, rel, number))
                    continue
                out.append(Entry(body["resourceType"], body["id"], body, line, rel, number))
            continue
        try:
            bundle = orjson.loads(data)
        except orjson.JSONDecodeError:
            out.append(Entry("", "", None, data, rel, 1))
            continue
        assert bundle["resourceType"] == "Bundle"
        for index, entry in enumerate(bundle["entry"]):
            body = entry["resource"]
            out.append(Entry(body["resourceType"], body["id"], body, orjson.dumps(body), rel, index, entry["fullUrl"]))
    return out


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV file as dicts."""
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def references(obj: Any) -> Iterator[tuple[str, str]]:
    """(path, reference text) of every ``reference`` in a resource."""
    stack: list[tuple[str, Any]] = [("", obj)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "reference" and isinstance(value, str):
                    yield path, value
                else:
                    stack.append((f"{path}.{key}" if path else key, value))
        elif isinstance(node, list):
            stack.extend((path, v) for v in node)


class Resolver:
    """Resolves references among the records of a cohort (NDJSON ``Type/id``, Bundle ``urn:uuid`` and
    conditional ``Type?identifier=system|value``)."""

    def __init__(self, entries: list[Entry]) -> None:
        self.entries = entries
        self.by_key: dict[tuple[str, str], Entry] = {}
        self.by_url: dict[tuple[str, str], Entry] = {}
        self.by_identifier: dict[tuple[str, str, str], list[Entry]] = {}
        for e in entries:
            if e.body is None:
                continue
            self.by_key.setdefault((e.rtype, e.rid), e)
            if e.full_url:
                self.by_url.setdefault((e.file, e.full_url), e)
            for ident in e.body.get("identifier", []) if e.rtype in ("Organization", "Practitioner") else []:
                self.by_identifier.setdefault((e.rtype, ident["system"], ident["value"]), []).append(e)

    def resolve(self, entry: Entry, ref: str) -> Entry | None:
        """The record a reference in ``entry`` points to, or None."""
        if ref.startswith("urn:uuid:"):
            return self.by_url.get((entry.file, ref))
        if "?identifier=" in ref:
            rtype, query = ref.split("?identifier=", 1)
            system, value = query.split("|", 1)
            found = self.by_identifier.get((rtype, system, value), [])
            return found[0] if len(found) == 1 else None
        rtype, rid = ref.split("/", 1)
        return self.by_key.get((rtype, rid))
