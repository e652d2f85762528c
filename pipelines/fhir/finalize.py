"""Second pass, in the coordinating process: checks that need the whole dataset, then the final tables.

1. Versions: the same type and id read more than once. The latest version is kept (``DatasetIndex.build``); a copy
   identical to it (or to an earlier copy) is merged (counted), any other is superseded: out of the tables, into
   ``history.ndjson`` and the ``history`` table, and the kept version gets the finding ``superseded_version``.
2. References: a literal reference must name a kept resource, a conditional one must match exactly one. One that
   does not is the finding ``dangling_reference`` (the table column is left null). With ``dangling_reference`` in
   ``ingest.strict`` it is an error instead, and since rejecting a resource can orphan others, the check then
   repeats until nothing new is rejected.
3. Dates: an Encounter / Observation / Condition / Procedure / ImagingStudy / DiagnosticReport dated before its
   patient's birth is the finding ``implausible_date`` (an error under ``ingest.strict``; a service after death is
   data and is kept).
4. Tables: rows of dropped resources removed, references to absent resources nulled, conditional references filled
   with their target's pseudonym, ``age_at_event`` computed from the full birth date, written as Parquet in input
   order (row groups of ``ROW_GROUP`` rows), so a rerun writes identical bytes; then the ``findings`` and
   ``history`` tables.
"""

from __future__ import annotations

import logging
import pickle
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.fhir import quarantine, refs
from pipelines.fhir.dates import to_utc
from pipelines.fhir.defects import (
    DANGLING_REFERENCE,
    IMPLAUSIBLE_DATE,
    INFORMATION,
    SUPERSEDED_VERSION,
    WARNING,
    Issue,
    primary_defect,
    reason_expression,
)
from pipelines.fhir.deid import Pseudonyms
from pipelines.fhir.index import AMBIGUOUS, FOUND, NOT_FOUND, DatasetIndex, Duplicate, pid_keys
from pipelines.fhir.keys import cond_key, id_key
from pipelines.fhir.read import SourceFile
from pipelines.fhir.schema import CK_SUFFIX, EVENT, ORD, TABLES, TableSpec
from pipelines.fhir.validate import EVENT_DATE_FIELDS

log = logging.getLogger(__name__)

ROW_GROUP = 16_384  # rows buffered per table before a row group is written (bounds memory)
MERGED, SUPERSEDED, DANGLING, IMPLAUSIBLE = "merged", "superseded", DANGLING_REFERENCE, IMPLAUSIBLE_DATE
_NOT_QUARANTINED = frozenset({MERGED, SUPERSEDED})


@dataclass
class SecondPassResult:
    """Counts and links produced by the second pass."""

    accepted: Counter[str] = field(default_factory=Counter)
    with_findings: Counter[str] = field(default_factory=Counter)
    quarantined: Counter[str] = field(default_factory=Counter)
    merged: Counter[str] = field(default_factory=Counter)
    superseded: Counter[str] = field(default_factory=Counter)
    reasons: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    findings: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    table_rows: dict[str, int] = field(default_factory=dict)
    study_links: dict[str, str] = field(default_factory=dict)  # pseudonymous study uid -> imaging_study_id
    unresolved_conditional: int = 0
    nulled_references: int = 0
    iterations: int = 0


def _load(path: Path) -> Any:
    with path.open("rb") as fh:
        return pickle.load(fh)


class SecondPass:
    """Runs the second pass over the first pass's temporary files.

    Args:
        index: the built dataset index.
        duplicates: the copies of ids that are not kept (``DatasetIndex.build``).
        work_dir: folder of the first pass's ``<seq>.meta.pkl`` / ``<seq>.tables.pkl`` files.
        seqs: the unit numbers, in order.
        pseudonyms: keyed pseudonyms (to explain references, and to name sources in the history table).
        strict: findings raised to errors (``ingest.strict``).
    """

    def __init__(
        self,
        index: DatasetIndex,
        duplicates: list[Duplicate],
        work_dir: Path,
        seqs: list[int],
        pseudonyms: Pseudonyms,
        strict: frozenset[str] = frozenset(),
    ) -> None:
        self.index = index
        self.work_dir = work_dir
        self.seqs = seqs
        self.pseudonyms = pseudonyms
        self.strict = strict
        # drops: resources left out of the tables (merged, superseded, or rejected here); notes: second-pass
        # findings on kept resources. Both unit -> ordinal -> kinds.
        self.drops: dict[int, dict[int, set[str]]] = {}
        self.notes: dict[int, dict[int, set[str]]] = {}
        self.superseded: list[Duplicate] = [d for d in duplicates if not d.merged]
        self.removed: set[int] = set()
        for dup in duplicates:
            self.drops.setdefault(dup.seq, {})[dup.ord] = {MERGED if dup.merged else SUPERSEDED}
            if not dup.merged:
                self.notes.setdefault(dup.kept_seq, {}).setdefault(dup.kept_ord, set()).add(SUPERSEDED_VERSION)
        self.result = SecondPassResult()

    def _meta(self, seq: int) -> dict[str, Any]:
        meta: dict[str, Any] = _load(self.work_dir / f"{seq:08d}.meta.pkl")  # the first pass pickled a dict
        return meta

    # --- checks --------------------------------------------------------------------------------------------------

    def find_rejections(self) -> None:
        """Reference and date checks: findings, or (under ``ingest.strict``) rejections repeated to a fixpoint."""
        first = True
        while True:
            self.result.iterations += 1
            new_keys: list[int] = []
            for seq in self.seqs:
                meta = self._meta(seq)
                drops = self.drops.setdefault(seq, {})
                bad = self._dangling(meta, drops)
                if first:
                    bad |= {(o, IMPLAUSIBLE) for o in self._before_birth(meta)}
                for ordinal, kind in sorted(bad):
                    if kind in self.strict:
                        if ordinal not in drops:
                            new_keys.append(int(meta["ord_key"][ordinal]))
                        drops.setdefault(ordinal, set()).add(kind)
                    elif ordinal not in drops:
                        self.notes.setdefault(seq, {}).setdefault(ordinal, set()).add(kind)
            first = False
            keys = np.asarray(sorted(set(new_keys)), np.uint64)
            self.removed.update(new_keys)
            self.index.remove(keys)
            if not new_keys:
                break
        log.debug("second pass converged after %d iteration(s)", self.result.iterations)

    def _dangling(self, meta: dict[str, Any], drops: dict[int, set[str]]) -> set[tuple[int, str]]:
        ref_ord, ref_key, ref_cond = meta["ref_ord"], meta["ref_key"], meta["ref_cond"]
        if not len(ref_ord):
            return set()
        live = ~np.isin(ref_ord, np.fromiter(drops, np.int32, len(drops))) if drops else np.ones(len(ref_ord), bool)
        ok = np.ones(len(ref_ord), np.bool_)
        lit = live & ~ref_cond
        ok[lit] = self.index.has(ref_key[lit])
        cond = live & ref_cond
        if cond.any():
            _, status = self.index.resolve(ref_key[cond])
            ok[cond] = status == FOUND
        return {(int(o), DANGLING) for o in np.unique(ref_ord[~ok])}

    def _before_birth(self, meta: dict[str, Any]) -> list[int]:
        ords, subjects, is_cond, events = (
            meta["date_ord"],
            meta["date_subject"],
            meta["date_subject_cond"],
            meta["date_event"],
        )
        if not len(ords):
            return []
        keys = subjects.copy()
        if is_cond.any():
            pids, status = self.index.resolve(subjects[is_cond])
            resolved = pid_keys(np.where(status == FOUND, pids, b"0" * 32))
            keys[is_cond] = resolved
        births = self.index.births(keys)
        bad = (births > 0) & (events > 0) & (events < births)
        return [int(o) for o in ords[bad]]

    def count_accepted(self) -> Counter[str]:
        """Kept resources per type, counted from the chunks (an independent check of the reconciliation)."""
        accepted: Counter[str] = Counter()
        for seq in self.seqs:
            meta = self._meta(seq)
            drops = self.drops.get(seq) or {}
            for ordinal, rtype in enumerate(meta["ord_type"]):
                if ordinal not in drops:
                    accepted[rtype] += 1
                elif drops[ordinal] == {MERGED}:
                    self.result.merged[rtype] += 1
                elif drops[ordinal] == {SUPERSEDED}:
                    self.result.superseded[rtype] += 1
        self.result.accepted = accepted
        return accepted

    # --- records -------------------------------------------------------------------------------------------------

    def quarantine_records(self, sources: dict[str, SourceFile]) -> Iterator[bytes]:
        """Quarantine records of the second pass's rejections (``ingest.strict`` only), in input order."""
        rereader = quarantine.Rereader(sources)
        for seq in self.seqs:
            chosen = {o: k - _NOT_QUARANTINED for o, k in (self.drops.get(seq) or {}).items() if k - _NOT_QUARANTINED}
            if not chosen:
                continue
            meta = self._meta(seq)
            for ordinal, (src, where, obj, raw, fullurls) in self._reread_unit(rereader, meta, chosen).items():
                rtype = meta["ord_type"][ordinal]
                issues = self._explain(obj, rtype, chosen[ordinal], fullurls, "error")
                main = next(i for i in issues if i.defect == primary_defect(issues))
                self.result.quarantined[rtype] += 1
                self.result.reasons[(main.defect, rtype, reason_expression(main.expression))] += 1
                yield quarantine.record(
                    source=src.rel,
                    where=quarantine.location(src.fmt, where),
                    resource_type=rtype,
                    resource_id=_raw_id(obj),
                    issues=issues,
                    raw=raw,
                )

    def findings(self, sources: dict[str, SourceFile]) -> Iterator[tuple[bytes, list[dict[str, Any]]]]:
        """Each kept resource's findings, in input order: (findings.ndjson record, rows of the findings table).

        First-pass findings come with their raw text in the unit's meta; a resource with second-pass findings is
        read again (to explain which reference dangles, and to keep its text).
        """
        rereader = quarantine.Rereader(sources)
        for seq in self.seqs:
            meta = self._meta(seq)
            drops = self.drops.get(seq) or {}
            first = {
                o: (issues, rid, raw)
                for o, issues, rid, raw in zip(
                    meta["find_ord"], meta["find_issues"], meta["find_rid"], meta["find_raw"], strict=True
                )
                if o not in drops
            }
            noted = {o: kinds for o, kinds in (self.notes.get(seq) or {}).items() if o not in drops}
            reread = self._reread_unit(rereader, meta, noted)
            for ordinal in sorted(set(first) | set(reread)):
                rtype = meta["ord_type"][ordinal]
                issues: list[Issue] = list(first[ordinal][0]) if ordinal in first else []
                if ordinal in reread:
                    src, where, obj, raw, fullurls = reread[ordinal]
                    issues += self._explain(obj, rtype, noted[ordinal], fullurls, None)
                    rid = _raw_id(obj) or (first[ordinal][1] if ordinal in first else None)
                else:
                    src = sources[meta["sources"][meta["ord_source"][ordinal]]]
                    where = int(meta["ord_location"][ordinal])
                    _, rid, raw = first[ordinal]
                if not issues:
                    continue
                pid = meta["ord_pid"][ordinal]
                self.result.with_findings[rtype] += 1
                rows = []
                for issue in issues:
                    self.result.findings[(issue.defect, rtype, reason_expression(issue.expression))] += 1
                    rows.append(
                        {
                            "resource_type": rtype,
                            "resource_id": pid,
                            "defect": issue.defect,
                            "severity": issue.severity,
                            "expression": issue.expression,
                            "diagnostics": issue.diagnostics,
                        }
                    )
                record = quarantine.record(
                    source=src.rel,
                    where=quarantine.location(src.fmt, where),
                    resource_type=rtype,
                    resource_id=rid,
                    issues=issues,
                    raw=raw,
                    rejected=False,
                )
                yield record, rows

    def history(self, sources: dict[str, SourceFile]) -> Iterator[tuple[bytes, dict[str, Any]]]:
        """Each superseded version, in input order: (history.ndjson record, row of the history table)."""
        kept = {(d.seq, d.ord): (d.kept_seq, d.kept_ord) for d in self.superseded}
        kept_sources: dict[tuple[int, int], tuple[str, int]] = {}
        by_seq: dict[int, list[int]] = {}
        for seq, ordinal in kept.values():
            by_seq.setdefault(seq, []).append(ordinal)
        for seq, ords in by_seq.items():
            meta = self._meta(seq)
            for o in ords:
                kept_sources[(seq, o)] = (meta["sources"][meta["ord_source"][o]], int(meta["ord_location"][o]))
        rereader = quarantine.Rereader(sources)
        for seq in self.seqs:
            chosen = {o: k for o, k in (self.drops.get(seq) or {}).items() if SUPERSEDED in k}
            if not chosen:
                continue
            meta = self._meta(seq)
            for ordinal, (src, where, obj, raw, _) in self._reread_unit(rereader, meta, chosen).items():
                kept_rel, kept_where = kept_sources[kept[(seq, ordinal)]]
                meta_field = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
                version = meta_field.get("versionId")
                updated = meta_field.get("lastUpdated")
                version = version if isinstance(version, str) else None
                updated = updated if isinstance(updated, str) else None
                kept_where_obj = quarantine.location(sources[kept_rel].fmt, kept_where)
                record = quarantine.record(
                    source=src.rel,
                    where=quarantine.location(src.fmt, where),
                    resource_type=meta["ord_type"][ordinal],
                    resource_id=_raw_id(obj),
                    issues=[],
                    raw=raw,
                    rejected=False,
                    extra={
                        "version_id": version,
                        "last_updated": updated,
                        "kept": {"source": kept_rel, "location": kept_where_obj},
                    },
                )
                row = {
                    "resource_type": meta["ord_type"][ordinal],
                    "resource_id": meta["ord_pid"][ordinal],
                    "version_id": version,
                    "last_updated": to_utc(updated),
                    "source_id": self.pseudonyms.identifier("source-file", src.rel),
                    "kept_source_id": self.pseudonyms.identifier("source-file", kept_rel),
                }
                yield record, row

    @staticmethod
    def _reread_unit(
        rereader: quarantine.Rereader, meta: dict[str, Any], ordinals: Iterable[int]
    ) -> dict[int, tuple[SourceFile, int, Any, bytes | str, dict[str, str] | None]]:
        """Read a unit's chosen resources again (in input order): ordinal -> (source, location, parsed, raw, urls)."""
        by_source: dict[str, dict[int, int]] = {}
        for ordinal in ordinals:
            rel = meta["sources"][meta["ord_source"][ordinal]]
            by_source.setdefault(rel, {})[int(meta["ord_location"][ordinal])] = ordinal
        out: dict[int, tuple[SourceFile, int, Any, bytes | str, dict[str, str] | None]] = {}
        for rel in sorted(by_source, key=meta["sources"].index):
            for where, obj, raw, fullurls in rereader.take(rel, set(by_source[rel])):
                out[by_source[rel][where]] = (rereader.source(rel), where, obj, raw, fullurls)
        return dict(sorted(out.items()))

    def _explain(
        self,
        obj: dict[str, Any],
        rtype: str,
        kinds: set[str],
        fullurls: dict[str, str] | None,
        severity: str | None,
    ) -> list[Issue]:
        """The issues of second-pass kinds; ``severity`` None gives each finding its own severity."""
        issues: list[Issue] = []
        if SUPERSEDED_VERSION in kinds:
            issues.append(
                Issue(
                    SUPERSEDED_VERSION,
                    f"{rtype}.meta",
                    f"{rtype}: this is the latest of several versions read; the others are in the history",
                    INFORMATION,
                )
            )
        if IMPLAUSIBLE in kinds:
            expr = EVENT_DATE_FIELDS[rtype][0]
            issues.append(
                Issue(IMPLAUSIBLE_DATE, expr, f"{expr} is before the patient's birth date", severity or WARNING)
            )
        if DANGLING in kinds:
            found = self._reference_issues(obj, rtype, fullurls, severity or WARNING)
            if not found:
                found = [
                    Issue(
                        DANGLING_REFERENCE,
                        rtype,
                        f"{rtype} refers to a resource that was quarantined",
                        severity or WARNING,
                    )
                ]
            issues.extend(found)
        return issues

    def _reference_issues(
        self, obj: dict[str, Any], rtype: str, fullurls: dict[str, str] | None, severity: str
    ) -> list[Issue]:
        issues = []
        for expr, ref in refs.reference_paths(obj, rtype):
            parsed = refs.parse_reference(ref, fullurls)
            if parsed.kind == refs.LITERAL:
                key = id_key(self.pseudonyms.resource(parsed.type, parsed.id))
                if self.index.has(np.asarray([key], np.uint64))[0]:
                    continue
                gone = key in self.removed or self.index.was_rejected(np.asarray([key], np.uint64))[0]
                what = "was quarantined" if gone else "is not in the dataset"
                article = "an" if parsed.type[:1] in "AEIOU" else "a"
                issues.append(
                    Issue(DANGLING_REFERENCE, expr, f"{expr} refers to {article} {parsed.type} that {what}", severity)
                )
            elif parsed.kind == refs.CONDITIONAL:
                ck = cond_key(parsed.type, parsed.system, self.pseudonyms.identifier(parsed.system, parsed.value))
                status = int(self.index.resolve(np.asarray([ck], np.uint64))[1][0])
                if status == FOUND:
                    continue
                what = {
                    NOT_FOUND: f"matches no {parsed.type} identifier in the dataset",
                    AMBIGUOUS: f"matches more than one {parsed.type}",
                }.get(status, f"matches a {parsed.type} that was quarantined")
                issues.append(Issue(DANGLING_REFERENCE, expr, f"{expr}: conditional reference {what}", severity))
        return issues

    # --- tables --------------------------------------------------------------------------------------------------

    def write_tables(self, tables_dir: Path, study_counts: dict[str, int] | None) -> None:
        """Write every table to ``tables_dir`` (a temporary folder the caller renames into place)."""
        writers = _Writers(tables_dir)
        for seq in self.seqs:
            tables = _load(self.work_dir / f"{seq:08d}.tables.pkl")
            drops = self.drops.get(seq) or {}
            dropped = pa.array(sorted(drops), pa.int32())
            for name, table in tables.items():
                if len(dropped):
                    table = table.filter(pc.invert(pc.is_in(table[ORD], value_set=dropped)))
                if table.num_rows:
                    writers.add(name, self._finish_table(TABLES[name], table, study_counts))
        self.result.table_rows = writers.close()

    def _finish_table(self, spec: TableSpec, table: pa.Table, study_counts: dict[str, int] | None) -> pa.Table:
        # Arrow column operations: only the resolved conditional targets are made in Python, row by row.
        for column in spec.ref_columns:
            ck = pc.fill_null(table[column + CK_SUFFIX], 0).to_numpy(zero_copy_only=False)
            conditional = ck != 0
            values = table[column]
            new = None
            pending = np.flatnonzero(conditional)
            if len(pending):
                pids, status = self.index.resolve(ck[pending])
                found = status == FOUND
                self.result.unresolved_conditional += int(len(found) - np.count_nonzero(found))
                targets = pa.array(
                    [pid.decode() if ok else None for pid, ok in zip(pids, found, strict=True)], pa.string()
                )
                new = pc.replace_with_mask(values.combine_chunks(), pa.array(conditional), targets)
            # A literal reference to a resource that is not kept (absent, or quarantined) is a finding; its column
            # is null, so no join can find a row that does not exist.
            literal = np.flatnonzero(values.is_valid().to_numpy(zero_copy_only=False) & ~conditional)
            if len(literal):
                alive = self.index.has(pid_keys(np.asarray(values.take(literal).to_pylist(), "S32")))
                if not alive.all():
                    dead = np.zeros(len(ck), bool)
                    dead[literal[~alive]] = True
                    self.result.nulled_references += int(len(alive) - np.count_nonzero(alive))
                    base = new if new is not None else values.combine_chunks()
                    new = pc.if_else(pa.array(dead), pa.scalar(None, pa.string()), base)
            if new is not None:
                table = table.set_column(table.schema.get_field_index(column), column, new)
        columns: dict[str, pa.Array | pa.ChunkedArray] = {}
        if spec.event_age:
            columns["age_at_event"] = self._ages(table)
        if spec.name == "imaging_studies":
            uids = table["study_uid"].to_pylist()
            ids = table["imaging_study_id"].to_pylist()
            for uid, sid in zip(uids, ids, strict=True):
                if uid:
                    self.result.study_links.setdefault(uid, sid)
            if study_counts is not None:
                columns["image_count"] = pa.array([study_counts.get(u, 0) if u else 0 for u in uids], pa.int32())
        names = set(table.column_names)
        arrays = [columns.get(f.name, table[f.name] if f.name in names else None) for f in spec.schema]
        arrays = [
            a if a is not None else pa.nulls(table.num_rows, f.type) for a, f in zip(arrays, spec.schema, strict=True)
        ]
        return pa.Table.from_arrays(arrays, schema=spec.schema)

    def _ages(self, table: pa.Table) -> pa.Array:
        patients = table["patient_id"].to_pylist()
        keys = np.array([int(p[:16], 16) if p else 0 for p in patients], dtype=np.uint64)
        births = self.index.births(keys)
        events = pc.fill_null(table[EVENT], 0).to_numpy(zero_copy_only=False)
        valid = (births > 0) & (events > 0) & (events >= births)
        ages = np.where(valid, (events - births) // 10000, 0).astype(np.int16)
        return pa.array(ages, pa.int16(), mask=~valid)


class _Writers:
    """One Parquet writer per table; rows are buffered into row groups of ``ROW_GROUP`` rows."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.buffers: dict[str, list[pa.Table]] = {}
        self.buffered: Counter[str] = Counter()
        self.rows: Counter[str] = Counter()
        self.writers: dict[str, pq.ParquetWriter] = {}

    def _writer(self, name: str) -> pq.ParquetWriter:
        writer = self.writers.get(name)
        if writer is None:
            writer = self.writers[name] = pq.ParquetWriter(
                self.out_dir / f"{name}.parquet", TABLES[name].schema, compression="zstd"
            )
        return writer

    def add(self, name: str, table: pa.Table) -> None:
        self.buffers.setdefault(name, []).append(table)
        self.buffered[name] += table.num_rows
        self.rows[name] += table.num_rows
        while self.buffered[name] >= ROW_GROUP:
            merged = pa.concat_tables(self.buffers[name])
            self._writer(name).write_table(merged.slice(0, ROW_GROUP), row_group_size=ROW_GROUP)
            rest = merged.slice(ROW_GROUP)
            self.buffers[name] = [rest] if rest.num_rows else []
            self.buffered[name] = rest.num_rows

    def close(self) -> dict[str, int]:
        for name, spec in sorted(TABLES.items()):
            if self.buffers.get(name):
                self._writer(name).write_table(pa.concat_tables(self.buffers[name]), row_group_size=ROW_GROUP)
            if name in self.writers:
                self.writers[name].close()
            else:
                pq.write_table(spec.schema.empty_table(), self.out_dir / f"{name}.parquet", compression="zstd")
        return {name: int(self.rows[name]) for name in sorted(TABLES)}


def _raw_id(obj: dict[str, Any]) -> str | None:
    rid = obj.get("id")
    return rid if isinstance(rid, str) else None


def write_ndjson(path: Path, records: Iterator[bytes], *, append: bool = False) -> int:
    """Write JSON lines; return how many."""
    n = 0
    with path.open("ab" if append else "wb") as fh:
        for rec in records:
            fh.write(rec)
            fh.write(b"\n")
            n += 1
    return n


def dumps(obj: Any) -> bytes:
    """Deterministic, indented JSON (sorted keys) for reports."""
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
