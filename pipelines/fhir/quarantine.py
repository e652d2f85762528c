"""Quarantine records: each rejected resource, unchanged, with where it came from and why it was rejected.

One NDJSON record per rejected resource (or unreadable piece of input)::

    {"source": "fhir/Observation.ndjson", "location": {"line": 12},      # or {"entry": 3} in a Bundle, or null
     "resource_type": "Observation", "resource_id": "...", "defect": "missing_required_field",
     "outcome": {OperationOutcome}, "resource": {...as read...}}       # or "raw_text": "..." when not JSON

Quarantine holds the input as it was, personal data included: it is the data steward's place to fix records at the
source (keep it access-controlled, like the raw input); nothing downstream of ingest reads it.
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from pipelines.fhir.defects import Issue, operation_outcome, primary_defect
from pipelines.fhir.read import SourceFile, read_lines

_TYPE_IN_TEXT = re.compile(rb'"resourceType"\s*:\s*"([A-Za-z]+)"')


def location(fmt: str, value: int | None) -> dict[str, int] | None:
    """The location object of a record: NDJSON line (1-based) or Bundle entry index (0-based)."""
    if value is None or value < 0:
        return None
    return {"line": value} if fmt == "ndjson" else {"entry": value}


def record(
    *,
    source: str,
    where: dict[str, int] | None,
    resource_type: str | None,
    resource_id: str | None,
    issues: Iterable[Issue],
    raw: bytes | None = None,
    raw_text: str | None = None,
) -> bytes:
    """One quarantine record as a JSON line (without the newline).

    Args:
        source: input file, relative to the input folder.
        where: see :func:`location`.
        resource_type: the resource's type, or None when it could not be read.
        resource_id: the resource's id as read (quarantine is the one place raw ids are kept).
        issues: the problems; the first error by priority names the record's ``defect``.
        raw: the resource's JSON exactly as read (embedded unchanged).
        raw_text: the text of input that is not JSON.
    """
    issues = list(issues)
    out: dict[str, Any] = {
        "source": source,
        "location": where,
        "resource_type": resource_type,
        "resource_id": resource_id,
        "defect": primary_defect(issues),
        "outcome": operation_outcome(issues),
    }
    if raw is not None:
        out["resource"] = orjson.Fragment(raw)
    else:
        out["raw_text"] = raw_text
    return orjson.dumps(out)


def type_in_text(raw: bytes) -> str | None:
    """The resourceType written in text that is not valid JSON, if one can be seen."""
    m = _TYPE_IN_TEXT.search(raw)
    return m.group(1).decode() if m else None


def reread(source: SourceFile, locations: set[int]) -> Iterator[tuple[int, Any, bytes, dict[str, str] | None]]:
    """Read the resources at the given locations of a file again (for rejections found in the second pass).

    Yields:
        (location, parsed resource, raw JSON bytes as read, the Bundle's fullUrl map or None).
    """
    from pipelines.fhir.refs import bundle_fullurl_map

    if source.fmt == "ndjson":
        for item in read_lines(source):
            if isinstance(item, tuple) and item[0] in locations:
                yield item[0], orjson.loads(item[1]), item[1], None
        return
    data = source.path.read_bytes()
    if source.gz:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error):
            return
    doc = orjson.loads(data)
    if doc.get("resourceType") != "Bundle":
        if -1 in locations:
            yield -1, doc, data, None
        return
    entries = doc.get("entry") or []
    fullurls = bundle_fullurl_map(entries)
    for index in sorted(locations):
        resource = entries[index]["resource"]
        yield index, resource, orjson.dumps(resource), fullurls
