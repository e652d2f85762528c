"""Stage ``ingest``: raw FHIR + DICOM -> validated, de-identified tables, images, quarantine and a report.

Writes ``<output>/tables/*.parquet`` (with ``findings`` and ``history``), ``<output>/images/``,
``<output>/quarantine/`` (``fhir.ndjson``, ``findings.ndjson``, ``history.ndjson``, ``dicom.ndjson``) and
``<output>/ingest_report.json``. Everything is built in ``<output>/.ingest-tmp-<pid>/`` and renamed into place at
the end (the report last, after the previous report was removed), so a killed run leaves no table that looks
complete. Two ingests must not write to the same output folder at the same time.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.config import DEMO_PSEUDONYM_KEY, IngestParams
from pipelines.fhir import fastcheck
from pipelines.fhir.deid import Pseudonyms
from pipelines.fhir.errors import DemoKeyRefusedError, IngestError, InputNotFoundError, PseudonymKeyError
from pipelines.fhir.ingest_report import fhir_report
from pipelines.fhir.labels import fund_findings_table
from pipelines.fhir.pipeline import FhirIngest
from pipelines.fhir.pseudonym import Pseudonymizer
from pipelines.fhir.read import SourceFile, discover

log = logging.getLogger(__name__)

COHORT_MARKER = "COHORT.json"
COHORT_GENERATOR = "shipa-synthesize"
MIN_KEY_BYTES = 16

__all__ = ["DemoKeyRefusedError", "IngestError", "InputNotFoundError", "PseudonymKeyError", "run"]


def is_builtin_cohort(input_dir: Path) -> bool:
    """Whether the input carries the built-in synthetic cohort's ``COHORT.json`` marker."""
    marker = input_dir / COHORT_MARKER
    try:
        data = orjson.loads(marker.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return False
    return isinstance(data, dict) and data.get("generator") == COHORT_GENERATOR


def resolve_key(key: str | None, input_dir: Path) -> str:
    """The key to pseudonymise with: the given one, or the demo key, which only the built-in cohort may use.

    Raises:
        DemoKeyRefusedError: the demo key (or no key) on data without the cohort marker.
        PseudonymKeyError: a key shorter than 16 bytes.
    """
    key = DEMO_PSEUDONYM_KEY if key is None else key
    if key == DEMO_PSEUDONYM_KEY and not is_builtin_cohort(input_dir):
        raise DemoKeyRefusedError(
            f"{input_dir}: the demo pseudonymisation key is accepted only for the built-in synthetic cohort "
            f"(no valid {COHORT_MARKER} there); set SHIPA_PSEUDONYM_KEY to a secret key of at least "
            f"{MIN_KEY_BYTES} bytes"
        )
    if len(key.encode("utf-8")) < MIN_KEY_BYTES:
        raise PseudonymKeyError(f"SHIPA_PSEUDONYM_KEY must be at least {MIN_KEY_BYTES} bytes long")
    return key


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def run(
    params: IngestParams, input_dir: Path, output_dir: Path, *, key: str | None, progress: bool = True
) -> dict[str, Any]:
    """Ingest one input folder.

    Args:
        params: the ``ingest`` section of params.yaml.
        input_dir: the raw data (``fhir/``, ``dicom/``, ``labels/``; or FHIR files directly).
        output_dir: where tables, images, quarantine and the report go.
        key: the pseudonymisation key from the environment; None means the demo key (built-in cohort only).
        progress: show progress bars.

    Returns:
        The report written to ``<output>/ingest_report.json``.

    Raises:
        InputNotFoundError: the input folder is missing or has no FHIR/DICOM files.
        DemoKeyRefusedError: the demo key on data that is not the built-in cohort.
        PseudonymKeyError: a key that is too short.
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        raise InputNotFoundError(f"{input_dir}: input folder not found")
    files = discover(input_dir)
    dicom_dir = input_dir / "dicom"
    dicom_files = sorted(dicom_dir.rglob("*.dcm")) if dicom_dir.is_dir() else []
    if not files and not dicom_files:
        raise InputNotFoundError(f"{input_dir}: no FHIR (.ndjson/.json, optionally .gz) or DICOM (.dcm) files found")
    key = resolve_key(key, input_dir)
    workers = params.workers or _cores()
    fastcheck.install()  # before any R4B model class is built; the stock library on another fhir_core version

    output_dir.mkdir(parents=True, exist_ok=True)
    for stale in output_dir.glob(".ingest-tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = output_dir / f".ingest-tmp-{os.getpid()}"
    try:
        report = _ingest(params, input_dir, tmp, files, dicom_files, key, workers, progress)
        _publish(tmp, output_dir, report)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def _ingest(
    params: IngestParams,
    input_dir: Path,
    tmp: Path,
    files: list[SourceFile],
    dicom_files: list[Path],
    key: str,
    workers: int,
    progress: bool,
) -> dict[str, Any]:
    tables_dir, quarantine_dir = tmp / "tables", tmp / "quarantine"
    tables_dir.mkdir(parents=True)
    quarantine_dir.mkdir()
    (tmp / "images").mkdir()  # always present (a DVC out), empty when there is no DICOM
    fhir = FhirIngest(
        files,
        tmp / "work",
        key=key,
        workers=workers,
        chunk_size=params.chunk_size,
        max_queue=params.max_queue,
        progress=progress,
        iin_systems=frozenset(params.iin_systems),
        strict=frozenset(params.strict),
    )
    first = fhir.first_pass(quarantine_dir / "fhir.ndjson")

    dicom_section: dict[str, Any] | None = None
    study_counts: dict[str, int] | None = None
    manifest: pa.Table | None = None
    if dicom_files:
        from pipelines.imaging.ingest import ingest_dicom

        dicom = ingest_dicom(
            dicom_files,
            root=input_dir,
            out_images=tmp / "images",
            pseudonymizer=Pseudonymizer(key),
            size=params.image_size,
            workers=workers,
            progress=progress,
        )
        manifest = dicom.manifest_table()
        study_counts = dict(Counter(u for u in manifest["study_uid"].to_pylist() if u))
        with (quarantine_dir / "dicom.ndjson").open("wb") as fh:
            for row in dicom.quarantine_table().to_pylist():
                fh.write(orjson.dumps(row) + b"\n")
        dicom_section = {
            "files": len(dicom_files),
            "images": len(dicom.records),
            "quarantined": len(dicom.quarantine),
            "duplicates": dicom.duplicates,
            "by_reason": dicom.reason_counts(),
        }

    second = fhir.second_pass(tables_dir, quarantine_dir / "fhir.ndjson", study_counts)
    report: dict[str, Any] = {"fhir": fhir_report(first, second, len(files))}

    if manifest is not None and dicom_section is not None:
        links = second.study_links
        study_ids = [links.get(u) if u else None for u in manifest["study_uid"].to_pylist()]
        images = manifest.append_column("imaging_study_id", pa.array(study_ids, pa.string()))
        pq.write_table(images, tables_dir / "images.parquet", compression="zstd")
        linked_studies = {u for u in manifest["study_uid"].to_pylist() if u in links}
        dicom_section["linked_to_imaging_study"] = sum(1 for s in study_ids if s is not None)
        dicom_section["unlinked_images"] = sum(1 for s in study_ids if s is None)
        dicom_section["imaging_studies_without_images"] = len(set(links) - linked_studies)
        if dicom_section["unlinked_images"]:
            log.warning("%d DICOM images have no ImagingStudy with their study uid", dicom_section["unlinked_images"])
    report["dicom"] = dicom_section

    labels = input_dir / "labels" / "audit_findings.csv"
    if labels.is_file():
        pseudonyms = Pseudonyms(Pseudonymizer(key), iin_systems=frozenset(params.iin_systems))
        findings = fund_findings_table(labels, fhir.index, pseudonyms)
        pq.write_table(findings, tables_dir / "audit_findings.parquet", compression="zstd")
        report["audit_findings"] = {
            "rows": findings.num_rows,
            "claims_unresolved": findings.num_rows - sum(findings["claim_resolved"].to_pylist()),
            "providers_unresolved": findings.num_rows - sum(findings["provider_resolved"].to_pylist()),
        }
    report["quarantined_total"] = report["fhir"]["resources"]["quarantined"] + (
        dicom_section["quarantined"] if dicom_section else 0
    )
    shutil.rmtree(tmp / "work", ignore_errors=True)
    return report


def _publish(tmp: Path, output_dir: Path, report: dict[str, Any]) -> None:
    report_path = output_dir / "ingest_report.json"
    report_path.unlink(missing_ok=True)  # no report while the folders are swapped: the run is not complete
    for name in ("tables", "quarantine", "images"):
        new, final = tmp / name, output_dir / name
        old = output_dir / f".{name}.old-{os.getpid()}"
        if final.exists():
            final.rename(old)
        if new.exists():
            new.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    tmp_report = tmp / "ingest_report.json"
    tmp_report.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
    os.replace(tmp_report, report_path)
