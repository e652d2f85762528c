"""Second pass, in the coordinating process: checks that need the whole dataset, then the final tables.

1. Duplicates: a later copy of an id is merged (counted, not quarantined) when it is byte-identical after canonical
   JSON, else quarantined as ``duplicate_id`` (the first copy wins).
2. References: every literal reference must name an accepted resource; every conditional reference must match
   exactly one. Rejecting a resource can orphan others, so this repeats until nothing new is rejected.
3. Dates: an Encounter / Observation / Condition / Procedure / ImagingStudy / DiagnosticReport dated before its
   patient's birth is ``implausible_date`` (a service after death is data and is kept).
4. Tables: rows of rejected resources dropped, conditional references filled with their target's pseudonym,
   ``age_at_event`` computed from the full birth date, written as Parquet in input order (row groups of
   ``ROW_GROUP`` rows), so a rerun writes identical bytes.
"""

from __future__ import annotations

import logging
import pickle
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.fhir import quarantine, refs
from pipelines.fhir.defects import (
    DANGLING_REFERENCE,
    DUPLICATE_ID,
    IMPLAUSIBLE_DATE,
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
MERGED, CONFLICT, DANGLING, IMPLAUSIBLE = "merged", DUPLICATE_ID, DANGLING_REFERENCE, IMPLAUSIBLE_DATE


@dataclass
class SecondPassResult:
    """Counts and links produced by the second pass."""

    accepted: Counter[str] = field(default_factory=Counter)
    quarantined: Counter[str] = field(default_factory=Counter)
    merged: Counter[str] = field(default_factory=Counter)
    reasons: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    table_rows: dict[str, int] = field(default_factory=dict)
    study_links: dict[str, str] = field(default_factory=dict)  # pseudonymous study uid -> imaging_study_id
    unresolved_conditional: int = 0
    iterations: int = 0


def _load(path: Path) -> Any:
    with path.open("rb") as fh:
        return pickle.load(fh)


class SecondPass:
    """Runs the second pass over the first pass's temporary files.

    Args:
        index: the built dataset index.
        duplicates: later copies of ids found when the index was built.
        work_dir: folder of the first pass's ``<seq>.meta.pkl`` / ``<seq>.tables.pkl`` files.
        seqs: the unit numbers, in order.
        pseudonyms: keyed pseudonyms (to explain rejected references).
    """

    def __init__(
        self, index: DatasetIndex, duplicates: list[Duplicate], work_dir: Path, seqs: list[int], pseudonyms: Pseudonyms
    ) -> None:
        self.index = index
        self.work_dir = work_dir
        self.seqs = seqs
        self.pseudonyms = pseudonyms
        self.drops: dict[int, dict[int, set[str]]] = {}
        self.removed: set[int] = set()
        for dup in duplicates:
            self.drops.setdefault(dup.seq, {})[dup.ord] = {MERGED if dup.merged else CONFLICT}
        self.result = SecondPassResult()

    def _meta(self, seq: int) -> dict[str, Any]:
        meta: dict[str, Any] = _load(self.work_dir / f"{seq:08d}.meta.pkl")  # the first pass pickled a dict
        return meta

    # --- rejections ----------------------------------------------------------------------------------------------

    def find_rejections(self) -> None:
        """Reference and date checks, repeated until no new resource is rejected."""
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
                    if ordinal not in drops:
                        new_keys.append(int(meta["ord_key"][ordinal]))
                    drops.setdefault(ordinal, set()).add(kind)
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
        """Accepted resources per type, counted from the chunks (an independent check of the reconciliation)."""
        accepted: Counter[str] = Counter()
        for seq in self.seqs:
            meta = self._meta(seq)
            drops = self.drops.get(seq) or {}
            for ordinal, rtype in enumerate(meta["ord_type"]):
                if ordinal not in drops:
                    accepted[rtype] += 1
        self.result.accepted = accepted
        return accepted

    # --- quarantine ----------------------------------------------------------------------------------------------

    def quarantine_records(self, sources: dict[str, SourceFile]) -> Iterator[bytes]:
        """Quarantine records of the second pass's rejections, in input order (the merged duplicates are counted)."""
        wanted: dict[str, dict[int, tuple[int, int, str, set[str]]]] = {}
        for seq in self.seqs:
            drops = self.drops.get(seq)
            if not drops:
                continue
            meta = self._meta(seq)
            for ordinal, kinds in drops.items():
                rtype = meta["ord_type"][ordinal]
                if kinds == {MERGED}:
                    self.result.merged[rtype] += 1
                    continue
                source = meta["sources"][meta["ord_source"][ordinal]]
                where = int(meta["ord_location"][ordinal])
                wanted.setdefault(source, {})[where] = (seq, ordinal, rtype, kinds - {MERGED})
        out: list[tuple[tuple[int, int], bytes]] = []
        for source, by_location in wanted.items():
            src = sources[source]
            for where, obj, raw, fullurls in quarantine.reread(src, set(by_location)):
                seq, ordinal, rtype, kinds = by_location[where]
                issues = self._explain(obj, rtype, kinds, fullurls)
                main = next(i for i in issues if i.defect == primary_defect(issues))
                self.result.quarantined[rtype] += 1
                self.result.reasons[(main.defect, rtype, reason_expression(main.expression))] += 1
                rid = obj.get("id") if isinstance(obj.get("id"), str) else None
                rec = quarantine.record(
                    source=source,
                    where=quarantine.location(src.fmt, where),
                    resource_type=rtype,
                    resource_id=rid,
                    issues=issues,
                    raw=raw,
                )
                out.append(((seq, ordinal), rec))
        for _, rec in sorted(out, key=lambda item: item[0]):
            yield rec

    def _explain(
        self, obj: dict[str, Any], rtype: str, kinds: set[str], fullurls: dict[str, str] | None
    ) -> list[Issue]:
        issues: list[Issue] = []
        if CONFLICT in kinds:
            issues.append(
                Issue(
                    DUPLICATE_ID,
                    f"{rtype}.id",
                    f"{rtype}.id: another {rtype} with the same id but different content was read first and kept",
                )
            )
        if IMPLAUSIBLE in kinds:
            expr = EVENT_DATE_FIELDS[rtype][0]
            issues.append(Issue(IMPLAUSIBLE_DATE, expr, f"{expr} is before the patient's birth date"))
        if DANGLING in kinds:
            issues.extend(self._reference_issues(obj, rtype, fullurls))
            if not any(i.defect == DANGLING_REFERENCE for i in issues):
                issues.append(Issue(DANGLING_REFERENCE, rtype, f"{rtype} refers to a resource that was quarantined"))
        return issues

    def _reference_issues(self, obj: dict[str, Any], rtype: str, fullurls: dict[str, str] | None) -> list[Issue]:
        issues = []
        for expr, ref in refs.reference_paths(obj, rtype):
            parsed = refs.parse_reference(ref, fullurls)
            if parsed.kind == refs.LITERAL:
                key = id_key(self.pseudonyms.resource(parsed.type, parsed.id))
                if self.index.has(np.asarray([key], np.uint64))[0]:
                    continue
                gone = key in self.removed or self.index.was_rejected(np.asarray([key], np.uint64))[0]
                what = "was quarantined" if gone else "is not in the dataset"
                issues.append(Issue(DANGLING_REFERENCE, expr, f"{expr} refers to a {parsed.type} that {what}"))
            elif parsed.kind == refs.CONDITIONAL:
                ck = cond_key(parsed.type, parsed.system, self.pseudonyms.identifier(parsed.system, parsed.value))
                status = int(self.index.resolve(np.asarray([ck], np.uint64))[1][0])
                if status == FOUND:
                    continue
                what = {
                    NOT_FOUND: f"matches no {parsed.type} identifier in the dataset",
                    AMBIGUOUS: f"matches more than one {parsed.type}",
                }.get(status, f"matches a {parsed.type} that was quarantined")
                issues.append(Issue(DANGLING_REFERENCE, expr, f"{expr}: conditional reference {what}"))
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
        for column in spec.ref_columns:
            ck = pc.fill_null(table[column + CK_SUFFIX], 0).to_numpy(zero_copy_only=False)
            pending = np.flatnonzero(ck != 0)
            if len(pending):
                pids, status = self.index.resolve(ck[pending])
                values = table[column].to_pylist()
                for i, pid, st in zip(pending, pids, status, strict=True):
                    values[i] = pid.decode() if st == FOUND else None
                    self.result.unresolved_conditional += int(st != FOUND)
                table = table.set_column(table.schema.get_field_index(column), column, pa.array(values, pa.string()))
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
        arrays = [columns.get(f.name, table[f.name] if f.name in table.column_names else None) for f in spec.schema]
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
