"""The data steward's records: quarantined resources, findings on kept ones, superseded versions.

Three NDJSON files under ``<output>/quarantine/``, one record a line, each with the input kept exactly::

    fhir.ndjson      a rejected resource (or unreadable piece of input) and why:
    {"source": "fhir/Observation.ndjson", "location": {"line": 12},      # or {"entry": 3} in a Bundle, or null
     "resource_type": "Observation", "resource_id": "...", "defect": "missing_required_field",
     "outcome": {OperationOutcome}, "raw": "<the input text, exactly>"}
    findings.ndjson  a kept resource with data-quality findings: the same keys, without "defect"
    history.ndjson   a superseded version: the same keys plus "version_id", "last_updated" and "kept" (where the
                     version that was kept came from)

``raw`` is the resource's text exactly as read (an NDJSON line, a whole JSON document, or a Bundle entry's
``resource`` value cut from its document), as a JSON string; input that is not UTF-8 is kept as ``raw_base64``
instead, and ``raw_truncated`` marks unreadable input cut at :data:`MAX_RAW` bytes.

These files hold the input as it was, personal data included: they are the data steward's place to fix records at
the source (keep them access-controlled, like the raw input); nothing downstream of ingest reads them.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import zlib
from collections.abc import Iterable, Iterator
from json.decoder import scanstring  # type: ignore[attr-defined]  # public in CPython, not in typeshed
from typing import Any

import orjson

from pipelines.fhir.defects import Issue, operation_outcome, primary_defect
from pipelines.fhir.read import FailedPart, SourceFile, read_lines

_TYPE_IN_TEXT = re.compile(rb'"resourceType"\s*:\s*"([A-Za-z]+)"')
_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
MAX_RAW = 1 << 20  # unreadable input is kept up to 1 MiB (a whole broken file can be large)


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
    raw: bytes | str | None,
    rejected: bool = True,
    extra: dict[str, Any] | None = None,
    max_raw: int | None = None,
) -> bytes:
    """One record as a JSON line (without the newline).

    Args:
        source: input file, relative to the input folder.
        where: see :func:`location`.
        resource_type: the resource's type, or None when it could not be read.
        resource_id: the resource's id as read (these files are the one place raw ids are kept).
        issues: the problems; for a rejection the first error by priority names the record's ``defect``.
        raw: the input exactly as read (None when nothing could be read).
        rejected: a quarantine record (with ``defect``); False for findings and history records.
        extra: more keys (history records).
        max_raw: cut ``raw`` to this many bytes (and mark it): only for unreadable input, which can be a whole
            broken file; a resource is always kept whole.
    """
    issues = list(issues)
    out: dict[str, Any] = {
        "source": source,
        "location": where,
        "resource_type": resource_type,
        "resource_id": resource_id,
    }
    if rejected:
        out["defect"] = primary_defect(issues)
    if issues:
        out["outcome"] = operation_outcome(issues)
    if extra:
        out.update(extra)
    out.update(raw_fields(raw, max_raw))
    return orjson.dumps(out)


def raw_fields(raw: bytes | str | None, max_raw: int | None = None) -> dict[str, Any]:
    """``{"raw": text}`` for UTF-8 input, else ``{"raw_base64": ...}``; cut (and marked) beyond ``max_raw`` bytes."""
    if raw is None:
        return {"raw": None}
    if isinstance(raw, str) and max_raw is None:
        return {"raw": raw}
    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    out: dict[str, Any] = {}
    if max_raw is not None and len(data) > max_raw:
        data = data[:max_raw]
        out["raw_truncated"] = True
    try:
        out["raw"] = data.decode("utf-8")
    except UnicodeDecodeError:
        out["raw_base64"] = base64.b64encode(data).decode("ascii")
    return out


def entry_resource_texts(text: str) -> dict[int, str]:
    """The exact text of each ``entry[i].resource`` of a Bundle's JSON text, by entry index.

    Walks the document's structure with the stdlib scanner (values that are not entries are skipped whole), so
    quarantine and findings keep a Bundle entry as written: key order, whitespace and number spellings included.
    Returns an empty dict for text that is not a JSON object.
    """
    spans: dict[int, str] = {}
    try:
        i = _WS.match(text, 0).end()  # type: ignore[union-attr]
        if text[i] != "{":
            return spans
        i += 1
        while True:
            i = _WS.match(text, i).end()  # type: ignore[union-attr]
            if text[i] == "}":
                return spans
            key, i = scanstring(text, i + 1)
            i = _WS.match(text, i).end() + 1  # type: ignore[union-attr]  # past ":"
            i = _WS.match(text, i).end()  # type: ignore[union-attr]
            if key == "entry" and text[i] == "[":
                spans = {}
                i = _entries(text, i + 1, spans)
            else:
                i = _DECODER.raw_decode(text, i)[1]
            i = _WS.match(text, i).end()  # type: ignore[union-attr]
            if text[i] == "}":
                return spans
            i += 1  # ","
    except (IndexError, ValueError):
        return spans


def _entries(text: str, i: int, spans: dict[int, str]) -> int:
    index = 0
    while True:
        i = _WS.match(text, i).end()  # type: ignore[union-attr]
        if text[i] == "]":
            return i + 1
        if text[i] == "{":
            i += 1
            while True:
                i = _WS.match(text, i).end()  # type: ignore[union-attr]
                if text[i] == "}":
                    i += 1
                    break
                key, i = scanstring(text, i + 1)
                i = _WS.match(text, i).end() + 1  # type: ignore[union-attr]
                i = _WS.match(text, i).end()  # type: ignore[union-attr]
                end = _DECODER.raw_decode(text, i)[1]
                if key == "resource":
                    spans[index] = text[i:end]
                i = _WS.match(text, end).end()  # type: ignore[union-attr]
                if text[i] == "}":
                    i += 1
                    break
                i += 1
        else:
            i = _DECODER.raw_decode(text, i)[1]
        index += 1
        i = _WS.match(text, i).end()  # type: ignore[union-attr]
        if text[i] == "]":
            return i + 1
        i += 1


def type_in_text(raw: bytes) -> str | None:
    """The resourceType written in text that is not valid JSON, if one can be seen."""
    m = _TYPE_IN_TEXT.search(raw)
    return m.group(1).decode() if m else None


def _reread_document(
    source: SourceFile, locations: set[int]
) -> Iterator[tuple[int, Any, bytes | str, dict[str, str] | None]]:
    """Read the resources at the given locations (entry indexes, or -1 for the whole file) of a JSON document again.

    Yields:
        (location, parsed resource, its text exactly as read, the Bundle's fullUrl map or None).
    """
    from pipelines.fhir.refs import bundle_fullurl_map

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
    texts = entry_resource_texts(data.decode("utf-8"))
    for index in sorted(locations):
        resource = entries[index]["resource"]
        yield index, resource, texts.get(index) or orjson.dumps(resource), fullurls


class Rereader:
    """Reads resources again in input order, each NDJSON file at most once from start to end.

    For records made unit by unit (findings): a unit asks for locations after those of the units before it, so one
    cursor per NDJSON file serves them all, and memory holds one unit's records, whatever the input size.

    Args:
        sources: the input files by relative path.
    """

    def __init__(self, sources: dict[str, SourceFile]) -> None:
        self._sources = sources
        self._cursors: dict[str, tuple[Iterator[tuple[int, bytes] | FailedPart], list[tuple[int, bytes]]]] = {}

    def source(self, rel: str) -> SourceFile:
        """The input file of a relative path."""
        return self._sources[rel]

    def take(self, rel: str, locations: set[int]) -> Iterator[tuple[int, Any, bytes | str, dict[str, str] | None]]:
        """The resources at ``locations`` of file ``rel`` (later than any asked for before), in file order."""
        source = self._sources[rel]
        if source.fmt != "ndjson":
            yield from _reread_document(source, locations)
            return
        if rel not in self._cursors:
            self._cursors[rel] = (read_lines(source), [])
        lines, held = self._cursors[rel]
        for wanted in sorted(locations):
            while not held or held[0][0] < wanted:
                item = next(lines, None)
                if item is None:
                    return
                if isinstance(item, tuple):
                    held[:] = [item]
            if held[0][0] == wanted:
                yield wanted, orjson.loads(held[0][1]), held[0][1], None
