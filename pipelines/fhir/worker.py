"""First pass, run in worker processes: parse, validate, de-identify and flatten one work unit.

For each unit the worker writes two temporary pickles in the work folder (``<seq>.meta.pkl``: what the second pass
checks, and the findings of kept resources with their raw text; ``<seq>.tables.pkl``: flattened rows as Arrow
tables) and returns a small :class:`ChunkResult`: counts, quarantine records, and its part of the dataset-wide index
(ids, versions, identifiers, birth dates) as compact arrays. Index keys are derived from keyed pseudonyms.

Identity: a resource's id is its ``id``; a Bundle entry without one takes it from its ``fullUrl``
(:func:`pipelines.fhir.refs.id_from_fullurl`); a resource with neither gets ``content-<32 hex>``, the first 16 bytes
of the BLAKE2b digest of its canonical JSON (sorted keys, no whitespace), so the same content always gets the same
id (and an identical copy merges), with the finding ``content_id``.
"""

from __future__ import annotations

import gc
import gzip
import hashlib
import logging
import pickle
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from pipelines import codes
from pipelines.codes import DEFAULT_IIN_SYSTEMS
from pipelines.fhir import fastcheck, quarantine, refs
from pipelines.fhir.dates import to_utc, ymd_bounds
from pipelines.fhir.defects import (
    CONTENT_ID,
    DANGLING_REFERENCE,
    INFORMATION,
    INVALID_JSON,
    INVALID_RESOURCE,
    WARNING,
    Issue,
    is_error,
    primary_defect,
    raise_strict,
    reason_expression,
)
from pipelines.fhir.deid import Pseudonyms, deidentify
from pipelines.fhir.flatten import Flattener
from pipelines.fhir.keys import cond_key, id_key
from pipelines.fhir.pseudonym import Pseudonymizer
from pipelines.fhir.read import DocumentPart, FailedPart, LinesPart, WorkUnit
from pipelines.fhir.schema import ORD, RESOURCE_TABLES, TABLES, temp_schema
from pipelines.fhir.validate import EVENT_DATE_FIELDS, SchemaValidator, content_issues, event_date
from pipelines.parent_watch import die_with_parent

log = logging.getLogger(__name__)

UNKNOWN_TYPE = "unknown"
_SKIPPED_METHODS = frozenset({"DELETE", "GET", "HEAD"})
_RESOURCE, _UNREADABLE = object(), object()  # kinds of pending records
CONTENT_ID_PREFIX = "content-"


@dataclass
class ChunkResult:
    """What one work unit gives back to the coordinating process."""

    seq: int
    read: Counter[str] = field(default_factory=Counter)
    quarantined: Counter[str] = field(default_factory=Counter)
    reasons: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    quarantine: list[bytes] = field(default_factory=list)
    ids: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint64))
    hashes: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint64))
    versions: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    updated: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    ords: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))
    rejected_ids: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint64))
    ident_keys: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint64))
    ident_pids: np.ndarray = field(default_factory=lambda: np.empty(0, "S32"))
    patient_keys: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint64))
    patient_births: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))
    references: int = 0
    conditional_references: int = 0


@dataclass
class _Prepared:
    """Everything an accepted resource adds to its unit, computed before any of it is added."""

    rtype: str
    pid: str
    key: int
    content_hash: int
    ref_keys: list[tuple[int, bool]]
    findings: list[Issue]
    version: int = -1
    updated: int = -1
    identifier_keys: list[int] = field(default_factory=list)
    birth: int | None = None
    subject: tuple[int, bool, int] | None = None
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


class _Builder:
    """Accumulates one unit's outputs."""

    def __init__(self, seq: int) -> None:
        self.result = ChunkResult(seq)
        self.ids: list[int] = []
        self.hashes: list[int] = []
        self.versions: list[int] = []
        self.updated: list[int] = []
        self.ords: list[int] = []
        self.rejected: list[int] = []
        self.ident_keys: list[int] = []
        self.ident_pids: list[bytes] = []
        self.patient_keys: list[int] = []
        self.patient_births: list[int] = []
        # meta for the second pass, per accepted ordinal
        self.sources: list[str] = []
        self.source_index: dict[str, int] = {}
        self.ord_source: list[int] = []
        self.ord_location: list[int] = []
        self.ord_type: list[str] = []
        self.ord_key: list[int] = []
        self.ord_pid: list[str] = []
        self.ref_ord: list[int] = []
        self.ref_key: list[int] = []
        self.ref_cond: list[bool] = []
        self.date_ord: list[int] = []
        self.date_subject: list[int] = []
        self.date_subject_cond: list[bool] = []
        self.date_event: list[int] = []
        # findings of accepted resources: ordinal, issues, raw id and text as read (for the findings file)
        self.find_ord: list[int] = []
        self.find_issues: list[list[Issue]] = []
        self.find_rid: list[str | None] = []
        self.find_raw: list[bytes | str] = []
        self.rows: dict[str, list[dict[str, Any]]] = {}
        # records of the unit in input order, validated together before the rest of their processing
        self.pending: list[tuple[Any, ...]] = []


class ChunkProcessor:
    """Processes work units; one instance per worker process.

    Args:
        key: the pseudonymisation key.
        work_dir: folder for the temporary per-unit files.
        iin_systems: identifier systems whose values are IINs (``ingest.iin_systems``).
        strict: findings raised to errors (``ingest.strict``).
    """

    def __init__(
        self,
        key: str | bytes,
        work_dir: Path,
        iin_systems: frozenset[str] = DEFAULT_IIN_SYSTEMS,
        strict: frozenset[str] = frozenset(),
    ) -> None:
        self.pseudonyms = Pseudonyms(Pseudonymizer(key), iin_systems=iin_systems)
        self.validator = SchemaValidator()
        fund = self.pseudonyms.identifier(codes.ORG_ID_SYSTEM, codes.FSMS_ORG_IDENTIFIER)
        self.flattener = Flattener(fund, iin_systems)
        self.iin_systems = iin_systems
        self.strict = strict
        self.work_dir = work_dir

    def process(self, unit: WorkUnit) -> ChunkResult:
        """Run the first pass over one unit, write its temporary files and return its result."""
        b = _Builder(unit.seq)
        was_enabled = gc.isenabled()
        gc.disable()  # the collector dominates the cost of many short-lived dicts; chunks are bounded
        try:
            for part in unit.parts:
                if isinstance(part, LinesPart):
                    self._lines(b, part)
                elif isinstance(part, DocumentPart):
                    self._document(b, part)
                elif isinstance(part, FailedPart):
                    self._failed(b, part)
            # R4B validation of the whole unit in one tight loop runs ~10 % faster than interleaved with the rest.
            # SchemaValidator.validate turns a resource that breaks the library into an issue (it never raises).
            validate = self.validator.validate
            schema = [validate(item[1]) if item[0] is _RESOURCE else [] for item in b.pending]
            for item, issues in zip(b.pending, schema, strict=True):
                if item[0] is _RESOURCE:
                    self._resource(b, *item[1:], schema_issues=issues)
                else:
                    self._unreadable(b, *item[1:])
            b.pending.clear()
            self._write(b)
        finally:
            if was_enabled:
                gc.enable()
        return self._finish(b)

    # --- input forms ---------------------------------------------------------------------------------------------

    def _lines(self, b: _Builder, part: LinesPart) -> None:
        for number, line in zip(part.line_numbers, part.lines, strict=True):
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                b.pending.append(
                    (_UNREADABLE, part.source, "ndjson", number, line, f"line {number} is not valid JSON: {exc}")
                )
                continue
            if not isinstance(obj, dict) or not isinstance(obj.get("resourceType"), str):
                b.pending.append(
                    (_UNREADABLE, part.source, "ndjson", number, line, f"line {number} is not a FHIR resource")
                )
                continue
            b.pending.append((_RESOURCE, obj, line, part.source, "ndjson", number, None, obj.get("id")))

    def _document(self, b: _Builder, part: DocumentPart) -> None:
        try:
            data = part.path.read_bytes()
        except OSError as exc:
            diagnostics = f"file could not be read: {exc.strerror or type(exc).__name__}"
            b.pending.append((_UNREADABLE, part.source, "json", None, None, diagnostics))
            return
        if part.gz:
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError, zlib.error) as exc:
                b.pending.append(
                    (_UNREADABLE, part.source, "json", None, None, f"gzip data is truncated or corrupt: {exc}")
                )
                return
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            b.pending.append((_UNREADABLE, part.source, "json", None, data, f"file is not valid JSON: {exc}"))
            return
        if not isinstance(doc, dict) or not isinstance(doc.get("resourceType"), str):
            b.pending.append((_UNREADABLE, part.source, "json", None, data, "file is not a FHIR resource or Bundle"))
            return
        if doc["resourceType"] != "Bundle" or not isinstance(doc.get("entry"), list):
            b.pending.append((_RESOURCE, doc, data, part.source, "json", -1, None, doc.get("id")))
            return
        entries = doc["entry"]
        fullurls = refs.bundle_fullurl_map(entries)
        texts = _EntryTexts(data)
        for index, entry in enumerate(entries):
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if resource is None and isinstance(entry, dict):
                method = (entry.get("request") or {}).get("method") if isinstance(entry.get("request"), dict) else None
                if method in _SKIPPED_METHODS:
                    continue  # a request without a resource (DELETE, GET): nothing to ingest
            if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
                raw = orjson.dumps(entry) if entry is not None else None
                diagnostics = f"Bundle.entry[{index}] does not hold a FHIR resource"
                b.pending.append((_UNREADABLE, part.source, "json", index, raw, diagnostics))
                continue
            rid = resource.get("id") or refs.id_from_fullurl(entry.get("fullUrl"), resource["resourceType"])
            b.pending.append((_RESOURCE, resource, texts.at(index), part.source, "json", index, fullurls, rid))

    def _failed(self, b: _Builder, part: FailedPart) -> None:
        raw = part.raw_text.encode() if part.raw_text else None
        b.pending.append((_UNREADABLE, part.source, "ndjson", part.line, raw, part.diagnostics))

    def _unreadable(
        self,
        b: _Builder,
        source: str,
        fmt: str,
        where: int | None,
        raw: bytes | None,
        diagnostics: str,
    ) -> None:
        rtype = (quarantine.type_in_text(raw) if raw else None) or UNKNOWN_TYPE
        issue = Issue(INVALID_JSON, "", diagnostics)
        b.result.read[rtype] += 1
        b.result.quarantined[rtype] += 1
        b.result.reasons[(INVALID_JSON, rtype, "")] += 1
        b.result.quarantine.append(
            quarantine.record(
                source=source,
                where=quarantine.location(fmt, where),
                resource_type=None if rtype == UNKNOWN_TYPE else rtype,
                resource_id=None,
                issues=[issue],
                raw=raw,
                max_raw=quarantine.MAX_RAW,
            )
        )

    # --- one resource --------------------------------------------------------------------------------------------

    def _resource(
        self,
        b: _Builder,
        obj: dict[str, Any],
        raw: bytes | _EntryText,
        source: str,
        fmt: str,
        where: int,
        fullurls: dict[str, str] | None,
        rid: Any,
        *,
        schema_issues: list[Issue],
    ) -> None:
        """Check one resource; ``raw`` is its text as read (for a Bundle entry, cut from its document on demand)."""
        rtype = obj["resourceType"]
        b.result.read[rtype] += 1
        try:
            issues, prepared = self._examine(obj, rtype, rid, fullurls, schema_issues)
        except Exception as exc:  # one odd resource must not stop a national ingest run
            log.warning("unexpected %s while processing a %s resource; it is quarantined", type(exc).__name__, rtype)
            diagnostics = f"{rtype} could not be processed ({type(exc).__name__})"
            issues, prepared = [Issue(INVALID_RESOURCE, rtype, diagnostics)], None
        if prepared is not None:
            if prepared.findings:
                b.find_ord.append(len(b.ord_key))
                b.find_issues.append(prepared.findings)
                b.find_rid.append(rid if isinstance(rid, str) and rid else None)
                b.find_raw.append(_text_of(raw, obj))
            self._commit(b, prepared, source, where)
            return
        errors = [i for i in issues if is_error(i)]
        b.result.quarantined[rtype] += 1
        main = next(i for i in errors if i.defect == primary_defect(errors))
        b.result.reasons[(main.defect, rtype, reason_expression(main.expression))] += 1
        if isinstance(rid, str) and rid:
            b.rejected.append(id_key(self.pseudonyms.resource(rtype, rid)))
        b.result.quarantine.append(
            quarantine.record(
                source=source,
                where=quarantine.location(fmt, where),
                resource_type=rtype,
                resource_id=rid if isinstance(rid, str) else None,
                issues=issues,
                raw=_text_of(raw, obj),
            )
        )

    def _examine(
        self,
        obj: dict[str, Any],
        rtype: str,
        rid: Any,
        fullurls: dict[str, str] | None,
        schema_issues: list[Issue],
    ) -> tuple[list[Issue], _Prepared | None]:
        """Check a schema-validated resource; when it passes, prepare all it adds to the unit (nothing added yet)."""
        issues = list(schema_issues)
        if not issues:
            issues = content_issues(obj, self.iin_systems)
        if any(is_error(i) for i in issues):
            return issues, None
        # Sorted-key JSON serves the duplicate hash, the content id and the reference scan (one serialisation).
        canonical = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
        if not isinstance(rid, str) or not rid:
            rid = CONTENT_ID_PREFIX + hashlib.blake2b(canonical, digest_size=16).hexdigest()
            diagnostics = f"{rtype} has no id (nor a Bundle fullUrl that gives one): it was given a content-derived id"
            issues.append(Issue(CONTENT_ID, f"{rtype}.id", diagnostics, INFORMATION))
        ref_keys = self._references(obj, canonical, rtype, fullurls, issues)
        issues = raise_strict(issues, self.strict)
        if any(is_error(i) for i in issues):
            return issues, None
        pid = self.pseudonyms.resource(rtype, rid)
        meta = obj.get("meta")
        prep = _Prepared(
            rtype=rtype,
            pid=pid,
            key=id_key(pid),
            content_hash=int.from_bytes(hashlib.blake2b(canonical, digest_size=8).digest(), "big"),
            ref_keys=ref_keys,
            findings=issues,
        )
        if isinstance(meta, dict):
            prep.version, prep.updated = _version_order(meta)
        identifiers = obj.get("identifier")
        if isinstance(identifiers, dict):
            identifiers = [identifiers]
        for ident in identifiers or ():
            value = ident.get("value") if isinstance(ident, dict) else None
            if isinstance(value, str):
                system = ident.get("system") or ""
                prep.identifier_keys.append(cond_key(rtype, system, self.pseudonyms.identifier(system, value)))
        if rtype == "Patient":
            birth = ymd_bounds(obj.get("birthDate"))
            prep.birth = birth[0] if birth else 0
        if rtype in EVENT_DATE_FIELDS:
            prep.subject = self._event_subject(obj, fullurls)
        if rtype in RESOURCE_TABLES:
            clean = deidentify(obj if obj.get("id") == rid else {**obj, "id": rid}, self.pseudonyms, fullurls)
            prep.rows = self.flattener.rows(clean)
        return issues, prep

    def _references(
        self,
        obj: dict[str, Any],
        raw: bytes,
        rtype: str,
        fullurls: dict[str, str] | None,
        issues: list[Issue],
    ) -> list[tuple[int, bool]]:
        out: list[tuple[int, bool]] = []
        bad: list[str] = []
        lookup = self.pseudonyms.reference
        for ref in refs.references_in_json(raw):
            pseudo = lookup(fullurls.get(ref, ref) if fullurls else ref)
            if pseudo is None:
                bad.append(ref)
            elif pseudo.key:
                out.append((pseudo.key, pseudo.conditional))
        if bad:
            paths = dict((value, expr) for expr, value in refs.reference_paths(obj, rtype))
            for ref in bad:
                expr = paths.get(ref, rtype)
                reason = refs.parse_reference(ref, fullurls).reason
                issues.append(Issue(DANGLING_REFERENCE, expr, f"{expr} cannot resolve: {reason}", WARNING))
        return out

    def _event_subject(self, obj: dict[str, Any], fullurls: dict[str, str] | None) -> tuple[int, bool, int] | None:
        """(patient key, whether conditional, event date high end) for the before-birth check, if it applies."""
        bounds = ymd_bounds(event_date(obj))
        subject = obj.get("subject")
        if bounds is None or not isinstance(subject, dict) or not isinstance(subject.get("reference"), str):
            return None
        ref: str = subject["reference"]  # a str, checked above
        pseudo = self.pseudonyms.reference(fullurls.get(ref, ref) if fullurls else ref)
        if pseudo is None or not pseudo.key or not pseudo.reference.startswith(("Patient/", "Patient?")):
            return None
        return pseudo.key, pseudo.conditional, bounds[1]

    def _commit(self, b: _Builder, prep: _Prepared, source: str, where: int) -> None:
        ordinal = len(b.ord_key)
        b.ids.append(prep.key)
        b.hashes.append(prep.content_hash)
        b.versions.append(prep.version)
        b.updated.append(prep.updated)
        b.ords.append(ordinal)
        src = b.source_index.get(source)
        if src is None:
            src = b.source_index[source] = len(b.sources)
            b.sources.append(source)
        b.ord_source.append(src)
        b.ord_location.append(where)
        b.ord_type.append(prep.rtype)
        b.ord_key.append(prep.key)
        b.ord_pid.append(prep.pid)
        if prep.ref_keys:
            keys, conds = zip(*prep.ref_keys, strict=True)
            b.ref_ord.extend([ordinal] * len(keys))
            b.ref_key.extend(keys)
            b.ref_cond.extend(conds)
            b.result.references += len(keys)
            b.result.conditional_references += sum(conds)
        if prep.identifier_keys:
            b.ident_keys.extend(prep.identifier_keys)
            b.ident_pids.extend([prep.pid.encode()] * len(prep.identifier_keys))
        if prep.birth is not None:
            b.patient_keys.append(prep.key)
            b.patient_births.append(prep.birth)
        if prep.subject is not None:
            b.date_ord.append(ordinal)
            b.date_subject.append(prep.subject[0])
            b.date_subject_cond.append(prep.subject[1])
            b.date_event.append(prep.subject[2])
        for table, rows in prep.rows.items():
            for row in rows:
                row[ORD] = ordinal
            b.rows.setdefault(table, []).extend(rows)

    # --- output --------------------------------------------------------------------------------------------------

    def _write(self, b: _Builder) -> None:
        meta = {
            "sources": b.sources,
            "ord_source": np.asarray(b.ord_source, np.int32),
            "ord_location": np.asarray(b.ord_location, np.int32),
            "ord_type": b.ord_type,
            "ord_key": np.asarray(b.ord_key, np.uint64),
            "ord_pid": b.ord_pid,
            "ref_ord": np.asarray(b.ref_ord, np.int32),
            "ref_key": np.asarray(b.ref_key, np.uint64),
            "ref_cond": np.asarray(b.ref_cond, np.bool_),
            "date_ord": np.asarray(b.date_ord, np.int32),
            "date_subject": np.asarray(b.date_subject, np.uint64),
            "date_subject_cond": np.asarray(b.date_subject_cond, np.bool_),
            "date_event": np.asarray(b.date_event, np.int32),
            "find_ord": b.find_ord,
            "find_issues": b.find_issues,
            "find_rid": b.find_rid,
            "find_raw": b.find_raw,
        }
        tables = {
            name: pa.Table.from_pylist(rows, schema=temp_schema(TABLES[name])) for name, rows in sorted(b.rows.items())
        }
        seq = b.result.seq
        with (self.work_dir / f"{seq:08d}.meta.pkl").open("wb") as fh:
            pickle.dump(meta, fh, protocol=pickle.HIGHEST_PROTOCOL)
        with (self.work_dir / f"{seq:08d}.tables.pkl").open("wb") as fh:
            pickle.dump(tables, fh, protocol=pickle.HIGHEST_PROTOCOL)

    def _finish(self, b: _Builder) -> ChunkResult:
        r = b.result
        r.ids = np.asarray(b.ids, np.uint64)
        r.hashes = np.asarray(b.hashes, np.uint64)
        r.versions = np.asarray(b.versions, np.int64)
        r.updated = np.asarray(b.updated, np.int64)
        r.ords = np.asarray(b.ords, np.int32)
        r.rejected_ids = np.asarray(b.rejected, np.uint64)
        r.ident_keys = np.asarray(b.ident_keys, np.uint64)
        r.ident_pids = np.asarray(b.ident_pids, "S32")
        r.patient_keys = np.asarray(b.patient_keys, np.uint64)
        r.patient_births = np.asarray(b.patient_births, np.int32)
        return r


class _EntryTexts:
    """The exact texts of a Bundle's entries, cut from the document only if one of them is needed."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._texts: dict[int, str] | None = None

    def at(self, index: int) -> _EntryText:
        return _EntryText(self, index)

    def text(self, index: int) -> str | None:
        if self._texts is None:
            self._texts = quarantine.entry_resource_texts(self._data.decode("utf-8"))
        return self._texts.get(index)


@dataclass(frozen=True, slots=True)
class _EntryText:
    """A lazy handle on one Bundle entry's text."""

    doc: _EntryTexts
    index: int


def _text_of(raw: bytes | _EntryText, obj: dict[str, Any]) -> bytes | str:
    """A resource's text as read (a Bundle entry's cut from its document; serialised only if that fails)."""
    if isinstance(raw, _EntryText):
        return raw.doc.text(raw.index) or orjson.dumps(obj)
    return raw


def _version_order(meta: dict[str, Any]) -> tuple[int, int]:
    """(``meta.versionId`` as a number, ``meta.lastUpdated`` in µs since 1970); -1 where absent or not comparable.

    Which of two versions is the latest compares these in that order, then input order (docs/raw-data.md). A
    versionId that is not a whole number cannot be ordered (FHIR makes it opaque), so it does not count.
    """
    vid = meta.get("versionId")
    version = int(vid) if isinstance(vid, str) and vid.isdigit() and len(vid) < 18 else -1
    when = to_utc(meta.get("lastUpdated"))
    updated = int(when.timestamp() * 1_000_000) if when is not None else -1
    return version, updated


# Per-process state of a pool worker (set once by the pool initializer, read by run_unit).
_PROCESSOR: list[ChunkProcessor] = []


def init_worker(
    key: str | bytes,
    work_dir: Path,
    parent_pid: int,
    fast_checks: bool,
    iin_systems: frozenset[str] = DEFAULT_IIN_SYSTEMS,
    strict: frozenset[str] = frozenset(),
) -> None:
    """Pool initializer: exit with the parent, build this process's processor, freeze the objects imported so far.

    Args:
        key: the pseudonymisation key.
        work_dir: folder for the temporary per-unit files.
        parent_pid: the pid of the process that made the pool (the worker exits when it dies, even by SIGKILL).
        fast_checks: whether the parent installed :mod:`pipelines.fhir.fastcheck`; a spawned worker (not Linux)
            starts without it and installs it here, a forked one inherits it. Only after the parent's install
            succeeded, so a version mismatch is warned about once, by the parent.
        iin_systems: see :class:`ChunkProcessor`.
        strict: see :class:`ChunkProcessor`.
    """
    die_with_parent(parent_pid)
    if fast_checks:
        fastcheck.install()
    _PROCESSOR[:] = [ChunkProcessor(key, work_dir, iin_systems, strict)]
    gc.freeze()


def run_unit(unit: WorkUnit) -> ChunkResult:
    """Pool task: process one unit with this process's processor."""
    return _PROCESSOR[0].process(unit)
