"""Find FHIR files and cut them into work units (chunks) for the validation workers.

Inputs, plain or gzipped: bulk NDJSON (``*.ndjson``, ``*.jsonl``, one resource a line) and JSON documents
(``*.json``: a Bundle of any type — collection, transaction, batch, searchset... — or a single resource). The FHIR
folder is ``<input>/fhir`` when it exists, else ``<input>`` itself (minus ``dicom/``, ``labels/``, ``manifest/``).

NDJSON is read line by line here and sent to workers as raw bytes (parsing happens there). A JSON document is sent
as its path, and the worker reads it whole (a Bundle's entries must be read together to resolve its ``urn:uuid``
references): the coordinating process neither reads nor pickles it, which keeps it off the workers' cores.
A gzip stream that ends early gives every complete line before the break, then one ``FailedPart`` for the rest.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

NDJSON_SUFFIXES = (".ndjson", ".jsonl")
JSON_SUFFIXES = (".json",)
_SKIP_DIRS = frozenset({"dicom", "labels", "manifest"})
_SKIP_FILES = frozenset({"COHORT.json"})
_BLOCK = 1 << 20
# Expected resources per byte of a JSON document, to size chunks before the document is parsed.
_BYTES_PER_RESOURCE = 1500


@dataclass(frozen=True)
class SourceFile:
    """An input file: absolute path, path relative to the input folder, format and compression."""

    path: Path
    rel: str
    fmt: str  # "ndjson" or "json"
    gz: bool


@dataclass(frozen=True, slots=True)
class LinesPart:
    """Consecutive non-blank NDJSON lines of one file with their 1-based line numbers."""

    source: str
    line_numbers: list[int]
    lines: list[bytes]


@dataclass(frozen=True, slots=True)
class DocumentPart:
    """One JSON document (a Bundle or a single resource), read by the worker (gzip undone there)."""

    source: str
    path: Path
    gz: bool


@dataclass(frozen=True, slots=True)
class FailedPart:
    """The unreadable rest of a file (truncated or corrupt gzip, I/O error)."""

    source: str
    line: int | None
    raw_text: str | None
    diagnostics: str


Part = LinesPart | DocumentPart | FailedPart


@dataclass(slots=True)
class WorkUnit:
    """A chunk of input for one worker call; ``seq`` orders the output deterministically."""

    seq: int
    parts: list[Part] = field(default_factory=list)
    size: int = 0


def fhir_root(input_dir: Path) -> Path:
    """The folder holding FHIR files: ``<input>/fhir`` when present, else the input folder itself."""
    sub = input_dir / "fhir"
    return sub if sub.is_dir() else input_dir


def discover(input_dir: Path) -> list[SourceFile]:
    """Every FHIR file under the input folder, sorted by relative path (the order of all outputs)."""
    root = fhir_root(input_dir)
    found = []
    for path in root.rglob("*"):
        rel_parts = path.relative_to(root).parts
        if any(p.startswith(".") for p in rel_parts) or not path.is_file():
            continue
        if root == input_dir and (rel_parts[0] in _SKIP_DIRS or path.name in _SKIP_FILES):
            continue
        name = path.name
        gz = name.endswith(".gz")
        base = name[:-3] if gz else name
        if base.endswith(NDJSON_SUFFIXES):
            fmt = "ndjson"
        elif base.endswith(JSON_SUFFIXES):
            fmt = "json"
        else:
            continue
        found.append(SourceFile(path, path.relative_to(input_dir).as_posix(), fmt, gz))
    return sorted(found, key=lambda f: f.rel)


def read_lines(source: SourceFile) -> Iterator[tuple[int, bytes] | FailedPart]:
    """Yield (line number, line) for each non-blank line, then a FailedPart if the file breaks off."""
    if source.gz:
        yield from _gzip_lines(source)
        return
    try:
        with source.path.open("rb") as fh:
            for number, line in enumerate(fh, start=1):
                line = line.strip()
                if line:
                    yield number, line
    except OSError as exc:
        yield FailedPart(source.rel, None, None, f"file could not be read: {exc.strerror or type(exc).__name__}")


def _gzip_lines(source: SourceFile) -> Iterator[tuple[int, bytes] | FailedPart]:
    number = 0
    pending = b""
    decomp = zlib.decompressobj(wbits=31)
    fed = False
    try:
        with source.path.open("rb") as fh:
            while block := fh.read(_BLOCK):
                data = decomp.decompress(block)
                fed = True
                # A gzip file may hold several members one after another.
                while decomp.eof and decomp.unused_data:
                    rest = decomp.unused_data
                    decomp = zlib.decompressobj(wbits=31)
                    data += decomp.decompress(rest)
                pending += data
                *complete, pending = pending.split(b"\n")
                for line in complete:
                    number += 1
                    line = line.strip()
                    if line:
                        yield number, line
    except (OSError, zlib.error) as exc:
        yield FailedPart(
            source.rel, number + 1, _text(pending), f"gzip data is corrupt after line {number}: {type(exc).__name__}"
        )
        return
    if fed and not decomp.eof:
        yield FailedPart(
            source.rel,
            number + 1,
            _text(pending),
            f"gzip stream is truncated after line {number}; the rest of the file could not be read",
        )
        return
    if pending.strip():
        yield number + 1, pending.strip()


def _text(data: bytes) -> str | None:
    data = data.strip()
    return data.decode("utf-8", errors="replace") if data else None


def work_units(files: list[SourceFile], chunk_size: int) -> Iterator[WorkUnit]:
    """Cut the files into units of about ``chunk_size`` resources, in file order.

    Args:
        files: the sources, in the order outputs should follow.
        chunk_size: resources per unit (a JSON document is never split; its size is estimated from its bytes).
    """
    seq = 0
    unit = WorkUnit(seq)
    for source in files:
        if source.fmt == "json":
            try:
                size = source.path.stat().st_size
            except OSError as exc:
                unit.parts.append(FailedPart(source.rel, None, None, f"file could not be read: {exc.strerror}"))
                unit.size += 1
            else:
                unit.parts.append(DocumentPart(source.rel, source.path, source.gz))
                unit.size += max(1, size // (_BYTES_PER_RESOURCE * (4 if source.gz else 1)))
        else:
            numbers: list[int] = []
            lines: list[bytes] = []
            for item in read_lines(source):
                if isinstance(item, FailedPart):
                    if lines:
                        unit.parts.append(LinesPart(source.rel, numbers, lines))
                        numbers, lines = [], []
                    unit.parts.append(item)
                    unit.size += 1
                    continue
                numbers.append(item[0])
                lines.append(item[1])
                if unit.size + len(lines) >= chunk_size:
                    unit.parts.append(LinesPart(source.rel, numbers, lines))
                    unit.size += len(lines)
                    numbers, lines = [], []
                    yield unit
                    seq += 1
                    unit = WorkUnit(seq)
            if lines:
                unit.parts.append(LinesPart(source.rel, numbers, lines))
                unit.size += len(lines)
        if unit.size >= chunk_size:
            yield unit
            seq += 1
            unit = WorkUnit(seq)
    if unit.parts:
        yield unit
