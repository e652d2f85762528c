"""FHIR ingest from files to tables: the first pass in a process pool, the second pass here.

The first pass streams work units to ``workers`` processes with at most ``workers * max_queue`` units in flight (so
memory stays flat whatever the input size) and collects their results in submission order (so every output is in
input order, whatever the number of workers). Between the passes the caller may run other work (the DICOM ingest);
the second pass then checks the whole dataset and writes the tables.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from pipelines.codes import DEFAULT_IIN_SYSTEMS
from pipelines.fhir import fastcheck
from pipelines.fhir.deid import Pseudonyms
from pipelines.fhir.finalize import ROW_GROUP, SecondPass, SecondPassResult, write_ndjson
from pipelines.fhir.index import DatasetIndex
from pipelines.fhir.pseudonym import Pseudonymizer
from pipelines.fhir.read import SourceFile, WorkUnit, work_units
from pipelines.fhir.schema import HISTORY, INGEST_FINDINGS, RESOURCE_TABLES, TableSpec
from pipelines.fhir.validate import SchemaValidator
from pipelines.fhir.worker import ChunkProcessor, ChunkResult, init_worker, run_unit

log = logging.getLogger(__name__)

# Models imported before the workers fork (each costs tens of ms to import; other types load on first use).
PRELOADED_TYPES = (*RESOURCE_TABLES, "Bundle", "Location", "Immunization", "DocumentReference", "Provenance")


@dataclass
class FirstPassResult:
    """Counts of the first pass."""

    units: int = 0
    read: Counter[str] = field(default_factory=Counter)
    quarantined: Counter[str] = field(default_factory=Counter)
    reasons: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    references: int = 0
    conditional_references: int = 0
    seconds: float = 0.0


class FhirIngest:
    """Ingest of the FHIR files of one input folder.

    Args:
        files: the FHIR sources (``pipelines.fhir.read.discover``), in output order.
        work_dir: an empty folder for temporary per-chunk files (the caller removes it).
        key: the pseudonymisation key.
        workers: processes for the first pass; 1 runs it in this process.
        chunk_size: resources per work unit.
        max_queue: work units in flight per worker.
        progress: show a progress bar (resources and resources/s).
        iin_systems: identifier systems whose values are IINs (``ingest.iin_systems``).
        strict: findings raised to errors (``ingest.strict``).
    """

    def __init__(
        self,
        files: list[SourceFile],
        work_dir: Path,
        *,
        key: str | bytes,
        workers: int,
        chunk_size: int,
        max_queue: int,
        progress: bool,
        iin_systems: frozenset[str] = DEFAULT_IIN_SYSTEMS,
        strict: frozenset[str] = frozenset(),
    ) -> None:
        self.files = files
        self.iin_systems = iin_systems
        self.strict = strict
        self.work_dir = work_dir
        self.key = key
        self.workers = max(1, workers)
        self.chunk_size = chunk_size
        self.max_queue = max_queue
        self.progress = progress
        self.index = DatasetIndex()
        self.first: FirstPassResult | None = None

    def first_pass(self, quarantine_path: Path) -> FirstPassResult:
        """Validate, de-identify and flatten every resource; write first-pass rejections to ``quarantine_path``."""
        start = time.perf_counter()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        result = FirstPassResult()
        units = work_units(self.files, self.chunk_size)
        with quarantine_path.open("wb") as qfile:

            def handle(chunk: ChunkResult, bar: tqdm) -> None:
                result.units += 1
                result.read.update(chunk.read)
                result.quarantined.update(chunk.quarantined)
                result.reasons.update(chunk.reasons)
                result.references += chunk.references
                result.conditional_references += chunk.conditional_references
                for rec in chunk.quarantine:
                    qfile.write(rec + b"\n")
                self.index.add(chunk)
                bar.update(sum(chunk.read.values()))

            if self.workers == 1:
                processor = ChunkProcessor(self.key, self.work_dir, self.iin_systems, self.strict)
                with self._bar() as bar:
                    for unit in units:
                        handle(processor.process(unit), bar)
            else:
                self._pooled(units, handle)
        result.seconds = time.perf_counter() - start
        total = sum(result.read.values())
        log.info(
            "FHIR first pass: %d resources in %d chunks, %.1f s (%.0f resources/s), %d rejected",
            total,
            result.units,
            result.seconds,
            total / result.seconds if result.seconds else 0.0,
            sum(result.quarantined.values()),
        )
        self.first = result
        return result

    def _bar(self) -> tqdm:
        return tqdm(disable=not self.progress, desc="fhir", unit=" res", unit_scale=True, dynamic_ncols=True)

    def _pooled(self, units: Iterator[WorkUnit], handle: Callable[[ChunkResult, tqdm], None]) -> None:
        # fork shares the already-imported fhir.resources models with the workers (each import costs seconds).
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        limit = self.workers * self.max_queue
        _warm_up()  # imported once here, shared by every forked worker
        gc.collect()
        # The workers exit when this process dies (pipelines.parent_watch), and install the cached checks when
        # this process did (a spawned worker does not inherit them).
        initargs = (self.key, self.work_dir, os.getpid(), fastcheck.is_installed(), self.iin_systems, self.strict)
        with ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=init_worker, initargs=initargs) as pool:
            pending: deque[Future[ChunkResult]] = deque()
            bar = None
            try:
                for unit in units:
                    pending.append(pool.submit(run_unit, unit))
                    if bar is None:  # created after the workers started, so no bar thread exists at fork time
                        bar = self._bar()
                    if len(pending) >= limit:
                        handle(pending.popleft().result(), bar)
                if bar is None:
                    bar = self._bar()
                while pending:
                    handle(pending.popleft().result(), bar)
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
            finally:
                if bar is not None:
                    bar.close()

    def second_pass(
        self, tables_dir: Path, quarantine_path: Path, study_counts: dict[str, int] | None
    ) -> SecondPassResult:
        """Versions, references and dates across the dataset; write the tables, findings, history, quarantine.

        Args:
            tables_dir: where the Parquet tables go (with ``findings.parquet`` and ``history.parquet``).
            quarantine_path: the first pass's quarantine file (second-pass records are appended);
                ``findings.ndjson`` and ``history.ndjson`` are written beside it.
            study_counts: DICOM images per pseudonymous study uid, or None when no DICOM was ingested.
        """
        if self.first is None:
            raise RuntimeError("second_pass() needs first_pass() first")
        start = time.perf_counter()
        duplicates = self.index.build()
        seqs = list(range(self.first.units))
        pseudonyms = Pseudonyms(Pseudonymizer(self.key), iin_systems=self.iin_systems)
        second = SecondPass(self.index, duplicates, self.work_dir, seqs, pseudonyms, self.strict)
        second.find_rejections()
        second.count_accepted()
        sources = {f.rel: f for f in self.files}
        write_ndjson(quarantine_path, second.quarantine_records(sources), append=True)
        tables_dir.mkdir(parents=True, exist_ok=True)
        with _RecordsAndTable(quarantine_path.parent / "findings.ndjson", tables_dir, INGEST_FINDINGS) as out:
            for record, rows in second.findings(sources):
                out.add(record, rows)
        with _RecordsAndTable(quarantine_path.parent / "history.ndjson", tables_dir, HISTORY) as out:
            for record, row in second.history(sources):
                out.add(record, [row])
        second.write_tables(tables_dir, study_counts)
        log.info(
            "FHIR second pass: %.1f s, %d more rejected, %d duplicates merged, %d superseded versions, "
            "%d resources kept with findings",
            time.perf_counter() - start,
            sum(second.result.quarantined.values()),
            sum(second.result.merged.values()),
            sum(second.result.superseded.values()),
            sum(second.result.with_findings.values()),
        )
        return second.result


def _warm_up() -> None:
    """The one-time imports of the workers, done before forking them so that they share them.

    The R4B models of the usual resource types, and pandas, which pyarrow imports on its first conversion of Python
    objects (0.2 s a process). Not the models of the elements those types hold: fhir_core imports each on its first
    validation, which costs less than importing them all (an eager walk of every field's type took 0.2-0.4 s more
    than the lazy imports of a Synthea sample's first 4,600 resources).
    """
    SchemaValidator().preload(PRELOADED_TYPES)
    pa.array([0], pa.int64())


class _RecordsAndTable:
    """An NDJSON file of records and the Parquet table of their de-identified rows, written together."""

    def __init__(self, ndjson: Path, tables_dir: Path, spec: TableSpec) -> None:
        self.fh = ndjson.open("wb")
        self.writer = pq.ParquetWriter(tables_dir / f"{spec.name}.parquet", spec.schema, compression="zstd")
        self.schema = spec.schema
        self.rows: list[dict[str, Any]] = []

    def __enter__(self) -> _RecordsAndTable:
        return self

    def add(self, record: bytes, rows: list[dict[str, Any]]) -> None:
        self.fh.write(record + b"\n")
        self.rows.extend(rows)
        if len(self.rows) >= ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        self.writer.write_table(pa.Table.from_pylist(self.rows, schema=self.schema), row_group_size=ROW_GROUP)
        self.rows = []

    def __exit__(self, *exc: object) -> None:
        if self.rows:
            self._flush()
        self.writer.close()
        self.fh.close()
