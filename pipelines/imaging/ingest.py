"""The DICOM half of ingest: files in, normalised images, a pseudonymous manifest and quarantine records out.

For each file: parse and check it (:func:`~pipelines.imaging.dicom.read_dicom`), refuse burned-in annotations, compute
the age at the study before the birth date is dropped, de-identify the header
(:func:`~pipelines.imaging.deid.deidentify_dataset`), normalise and resample the first frame, and write

- ``<out_images>/<sop_uid>.npy``: the image, float16, ``size x size``, values in [0, 1] (float16 keeps about three
  decimal digits, far finer than any radiograph's noise, at half the disk of float32; cast to float32 to use);
- ``<out_images>/<sop_uid>.json``: the de-identified header without pixels, in the DICOM JSON model;

where ``<sop_uid>`` is the pseudonymous SOP Instance UID. Files that fail become quarantine records (reason code and
plain-words diagnostics, never a header value). More than a handful of files run in a process pool with a bounded
number of files in flight. Rows come back sorted by image path and quarantine records by source path, so the same
inputs give the same outputs.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import multiprocessing
import os
import time
from collections.abc import Iterable, Iterator, Sized
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
from pydicom.dataset import Dataset
from tqdm import tqdm

from pipelines.fhir.pseudonym import Pseudonymizer
from pipelines.imaging.deid import age_at_study, deidentify_dataset, header_json
from pipelines.imaging.dicom import normalize_pixels, number_of_frames, parse_da, read_dicom, resample
from pipelines.imaging.errors import DicomError
from pipelines.parent_watch import die_with_parent

logger = logging.getLogger(__name__)

# Below this many files the pool costs more to start than it saves.
_POOL_THRESHOLD = 16
# Files in flight per worker: enough to keep workers busy, few enough to bound memory.
_IN_FLIGHT_PER_WORKER = 4

_SEX = {"M": "male", "F": "female", "O": "other"}

MANIFEST_SCHEMA = pa.schema(
    [
        ("patient_pseudo_id", pa.string()),
        ("study_uid", pa.string()),
        ("series_uid", pa.string()),
        ("sop_uid", pa.string()),
        ("modality", pa.string()),
        ("rows", pa.int32()),
        ("columns", pa.int32()),
        ("frames", pa.int32()),
        ("pixel_spacing_row", pa.float64()),
        ("pixel_spacing_col", pa.float64()),
        ("photometric", pa.string()),
        ("view_position", pa.string()),
        ("study_date", pa.date32()),
        ("sex", pa.string()),
        ("age_years", pa.int32()),
        ("image_path", pa.string()),
        ("header_path", pa.string()),
    ]
)

QUARANTINE_SCHEMA = pa.schema([("source", pa.string()), ("reason", pa.string()), ("diagnostics", pa.string())])


@dataclass(frozen=True)
class ImageRecord:
    """One manifest row: a stored image and its de-identified facts.

    ``study_uid``, ``series_uid`` and ``sop_uid`` are ``pseudonymizer.uid`` of the original UIDs; ``study_uid`` is
    the link key to FHIR ImagingStudy (whose identifier ``urn:oid:<StudyInstanceUID>`` the FHIR side pseudonymises
    the same way). ``patient_pseudo_id`` is ``pseudonymizer.id("iin", PatientID)``. ``study_date`` is the full study
    date; ``age_years`` is whole years at the study. ``image_path`` and ``header_path`` are relative to
    ``out_images``.
    """

    patient_pseudo_id: str | None
    study_uid: str | None
    series_uid: str | None
    sop_uid: str
    modality: str | None
    rows: int
    columns: int
    frames: int
    pixel_spacing_row: float | None
    pixel_spacing_col: float | None
    photometric: str
    view_position: str | None
    study_date: dt.date | None
    sex: str | None
    age_years: int | None
    image_path: str
    header_path: str


@dataclass(frozen=True)
class QuarantineRecord:
    """A file that could not be ingested: its path relative to ``root``, a reason code and plain-words diagnostics."""

    source: str
    reason: str
    diagnostics: str


@dataclass
class DicomIngestResult:
    """What :func:`ingest_dicom` produced.

    Attributes:
        records: manifest rows, sorted by ``image_path``.
        quarantine: rejected files, sorted by ``source``.
        duplicates: files whose SOP Instance UID was already ingested from an earlier file (in path order); they
            are counted, not quarantined.
        seconds: wall time of the run.
    """

    records: list[ImageRecord] = field(default_factory=list)
    quarantine: list[QuarantineRecord] = field(default_factory=list)
    duplicates: int = 0
    seconds: float = 0.0

    def manifest_table(self) -> pa.Table:
        """The manifest as a pyarrow Table with :data:`MANIFEST_SCHEMA`."""
        return pa.Table.from_pylist([asdict(r) for r in self.records], schema=MANIFEST_SCHEMA)

    def quarantine_table(self) -> pa.Table:
        """Quarantine records as a pyarrow Table with :data:`QUARANTINE_SCHEMA`."""
        return pa.Table.from_pylist([asdict(q) for q in self.quarantine], schema=QUARANTINE_SCHEMA)

    def reason_counts(self) -> dict[str, int]:
        """Quarantined files per reason code."""
        counts: dict[str, int] = {}
        for q in self.quarantine:
            counts[q.reason] = counts.get(q.reason, 0) + 1
        return dict(sorted(counts.items()))


@dataclass(frozen=True)
class _Job:
    root: Path
    out_images: Path
    pseudonymizer: Pseudonymizer
    size: int


def ingest_dicom(
    files: Iterable[Path],
    *,
    root: Path,
    out_images: Path,
    pseudonymizer: Pseudonymizer,
    size: int,
    workers: int,
    progress: bool,
) -> DicomIngestResult:
    """Ingest DICOM files into normalised images and a pseudonymous manifest.

    Args:
        files: DICOM files (any iterable; consumed lazily).
        root: the folder quarantine paths are relative to (e.g. ``data/raw``).
        out_images: where ``.npy`` images and ``.json`` headers go (created).
        pseudonymizer: the keyed pseudonymiser shared with the FHIR side.
        size: side of the stored square images.
        workers: processes; 0 or less means one per core; 1 runs in this process.
        progress: show a progress bar.

    Returns:
        The manifest rows, quarantine records and counts. A bad file never stops the run.
    """
    start = time.perf_counter()
    out_images.mkdir(parents=True, exist_ok=True)
    job = _Job(root=root, out_images=out_images, pseudonymizer=pseudonymizer, size=size)
    n_workers = workers if workers > 0 else (os.cpu_count() or 1)
    iterator = iter(files)
    head = list(itertools.islice(iterator, _POOL_THRESHOLD))
    total = len(files) if isinstance(files, Sized) else None
    paths = itertools.chain(head, iterator)
    outcomes: list[tuple[str, ImageRecord | QuarantineRecord]] = []
    with tqdm(total=total, disable=not progress, desc="dicom", unit="file") as bar:
        if n_workers == 1 or len(head) < _POOL_THRESHOLD:
            for path in paths:
                outcomes.append(_process_file(path, job))
                bar.update()
        else:
            for outcome in _run_pool(paths, job, n_workers):
                outcomes.append(outcome)
                bar.update()

    result = _collect(outcomes)
    result.seconds = time.perf_counter() - start
    logger.info(
        "DICOM ingest: %d images, %d quarantined %s, %d duplicates in %.1f s",
        len(result.records),
        len(result.quarantine),
        result.reason_counts(),
        result.duplicates,
        result.seconds,
    )
    return result


def _run_pool(paths: Iterator[Path], job: _Job, n_workers: int) -> Iterator[tuple[str, ImageRecord | QuarantineRecord]]:
    # spawn, not fork: the parent may hold threads (torch, progress bars) that a forked child would inherit locked.
    context = multiprocessing.get_context("spawn")
    limit = n_workers * _IN_FLIGHT_PER_WORKER
    # The workers exit when this process dies, even by SIGKILL (pipelines.parent_watch).
    with ProcessPoolExecutor(
        max_workers=n_workers, mp_context=context, initializer=die_with_parent, initargs=(os.getpid(),)
    ) as pool:
        pending: set[Future[tuple[str, ImageRecord | QuarantineRecord]]] = set()
        for path in paths:
            pending.add(pool.submit(_process_file, path, job))
            if len(pending) >= limit:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        for future in pending:
            yield future.result()


def _collect(outcomes: list[tuple[str, ImageRecord | QuarantineRecord]]) -> DicomIngestResult:
    result = DicomIngestResult()
    seen: set[str] = set()
    for _source, outcome in sorted(outcomes, key=lambda o: o[0]):
        if isinstance(outcome, QuarantineRecord):
            result.quarantine.append(outcome)
        elif outcome.sop_uid in seen:
            result.duplicates += 1
        else:
            seen.add(outcome.sop_uid)
            result.records.append(outcome)
    result.records.sort(key=lambda r: r.image_path)
    if result.duplicates:
        logger.warning("DICOM ingest: %d files repeated an SOP Instance UID already ingested", result.duplicates)
    return result


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def _process_file(path: Path, job: _Job) -> tuple[str, ImageRecord | QuarantineRecord]:
    """Ingest one file; every failure becomes a quarantine record (this runs in a worker)."""
    source = _relative(path, job.root)
    try:
        return source, _ingest_one(path, job)
    except DicomError as exc:
        return source, QuarantineRecord(source=source, reason=exc.reason, diagnostics=exc.detail)
    except OSError as exc:
        return source, QuarantineRecord(
            source=source, reason="dicom_unreadable", diagnostics=f"the file cannot be read ({type(exc).__name__})"
        )
    except Exception as exc:  # one odd file must not stop a national ingest run
        logger.warning("unexpected %s while ingesting a DICOM file; quarantined", type(exc).__name__)
        return source, QuarantineRecord(
            source=source,
            reason="dicom_unreadable",
            diagnostics=f"unexpected error while reading the file ({type(exc).__name__})",
        )


def _ingest_one(path: Path, job: _Job) -> ImageRecord:
    ds = read_dicom(path)
    if str(ds.get("SOPInstanceUID", "") or "").strip() == "":
        raise DicomError("dicom_unreadable", "the dataset has no SOP Instance UID")
    if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
        raise DicomError("dicom_unsupported", "burned-in annotation: the pixels may show identifying text")
    image = resample(normalize_pixels(ds), job.size)
    age = age_at_study(ds)
    clean = deidentify_dataset(ds, job.pseudonymizer, keep_pixels=False)

    sop_uid = str(clean.SOPInstanceUID)
    image_name, header_name = f"{sop_uid}.npy", f"{sop_uid}.json"
    _write_npy(job.out_images / image_name, image.astype(np.float16))
    _write_bytes(job.out_images / header_name, orjson.dumps(header_json(clean), option=orjson.OPT_SORT_KEYS))

    row_spacing, col_spacing = _pixel_spacing(ds)
    patient_id = str(clean.get("PatientID", "") or "")
    return ImageRecord(
        patient_pseudo_id=patient_id or None,
        study_uid=_text(clean, "StudyInstanceUID"),
        series_uid=_text(clean, "SeriesInstanceUID"),
        sop_uid=sop_uid,
        modality=_text(ds, "Modality"),
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        frames=number_of_frames(ds),
        pixel_spacing_row=row_spacing,
        pixel_spacing_col=col_spacing,
        photometric=str(ds.PhotometricInterpretation).strip(),
        view_position=_text(ds, "ViewPosition"),
        study_date=parse_da(ds.get("StudyDate")),
        sex=_SEX.get(str(ds.get("PatientSex", "") or "").strip().upper()),
        age_years=age,
        image_path=image_name,
        header_path=header_name,
    )


def _text(ds: Dataset, keyword: str) -> str | None:
    value = str(ds.get(keyword, "") or "").strip()
    return value or None


def _pixel_spacing(ds: Dataset) -> tuple[float | None, float | None]:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        try:
            if value is not None and len(value) == 2:
                return float(value[0]), float(value[1])
        except (TypeError, ValueError):
            continue
    return None, None


def _write_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    with tmp.open("wb") as handle:
        np.save(handle, array)
    os.replace(tmp, path)


def _write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def load_image_array(path: Path) -> np.ndarray:
    """Load a stored ingest image as float32 (the stored arrays are float16)."""
    image: np.ndarray = np.load(path).astype(np.float32)
    return image
