"""Investigators' decisions on claims: an append-only CSV that the next ``features@fraud`` run reads as labels.

One row per decision (``claim_id, decision, by, decided_at, note``): ``confirmed`` (the claim is fraud: label 1) or
``cleared`` (it is not: label 0). Rows are never changed or removed; a later decision on the same claim supersedes
the earlier ones (the latest ``decided_at`` wins, the later line on a tie). The file is committed to git (with its
header only at first), so DVC reruns the features stage when a decision is added.

Appends are serialised by an exclusive ``flock`` on the file itself and written as one ``write`` of one whole line
(``O_APPEND``), so concurrent ``shipa fraud decide`` runs never lose or interleave a line. Reading validates every
field and names the file, line and field of the first bad one.
"""

from __future__ import annotations

import csv
import fcntl
import io
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

import polars as pl

from pipelines.errors import InputError

DEFAULT_DECISIONS = Path("decisions/fraud_decisions.csv")
COLUMNS = ("claim_id", "decision", "by", "decided_at", "note")
HEADER = ",".join(COLUMNS) + "\n"
CLAIM_ID = re.compile(r"\A[0-9a-f]{32}\Z")
NAME = re.compile(r"\A[\w .'-]{1,64}\Z")
MAX_NOTE_CHARS = 500
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class Decision(StrEnum):
    """What an investigator found: the claim is fraud (``confirmed``) or it is not (``cleared``)."""

    confirmed = "confirmed"
    cleared = "cleared"

    @property
    def label(self) -> int:
        """The training label the decision gives: 1 confirmed, 0 cleared."""
        return 1 if self is Decision.confirmed else 0


@dataclass(frozen=True)
class DecisionRecord:
    """One investigator's decision on one claim.

    Attributes:
        claim_id: the claim's pseudonym (32 lowercase hex digits, as the worklist shows it).
        decision: confirmed or cleared.
        by: the investigator's name.
        decided_at: when (UTC, whole seconds).
        note: a free-text note, or None.
    """

    claim_id: str
    decision: Decision
    by: str
    decided_at: datetime
    note: str | None = None

    def row(self) -> list[str]:
        """The CSV cells in :data:`COLUMNS` order."""
        return [self.claim_id, self.decision.value, self.by, format_time(self.decided_at), self.note or ""]


class DecisionsFileError(InputError):
    """The decisions file cannot be read or appended to; the message names the file, line and field."""


def format_time(moment: datetime) -> str:
    """A UTC timestamp as written in the file, e.g. ``2026-12-07T19:55:55Z``."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime(TIME_FORMAT)


def check_claim_id(value: str) -> str:
    """A claim pseudonym as the worklist shows it (32 hex digits, upper case accepted), in lower case.

    Raises:
        InputError: anything else; the message does not repeat the value (it may be a real claim number).
    """
    text = value.lower()
    if not CLAIM_ID.match(text):
        raise InputError(
            f"claim id must be the pseudonymous id of the worklist: 32 hex digits (got {len(value)} characters); "
            "a Fund claim number is not accepted here"
        )
    return text


def check_name(value: str) -> str:
    """An investigator's name: 1-64 letters, digits, spaces, ``.``, ``'``, ``-`` or ``_``.

    Raises:
        InputError: an empty, over-long name or one with other characters (newlines, commas, quotes...).
    """
    if not NAME.match(value):
        raise InputError(
            "--by must be 1-64 letters, digits, spaces, '.', \"'\", '-' or '_' (no newline, comma or other sign)"
        )
    return value


def check_note(value: str | None) -> str | None:
    """A note of at most 500 printable characters on one line (None or blank: no note).

    Raises:
        InputError: a note with a line break or control character, or one that is too long.
    """
    if value is None or not value.strip():
        return None
    if len(value) > MAX_NOTE_CHARS or any(not ch.isprintable() for ch in value):
        raise InputError(f"--note must be one line of at most {MAX_NOTE_CHARS} printable characters")
    return value.strip()


def new_decision(
    claim_id: str, decision: Decision | str, by: str, *, note: str | None = None, decided_at: datetime | None = None
) -> DecisionRecord:
    """A validated decision (``decided_at`` defaults to now, UTC, whole seconds).

    Raises:
        InputError: a malformed claim id, decision, name or note.
    """
    try:
        chosen = Decision(decision)
    except ValueError:
        raise InputError(f"decision must be one of: {', '.join(d.value for d in Decision)}") from None
    moment = (decided_at or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    return DecisionRecord(check_claim_id(claim_id), chosen, check_name(by), moment, check_note(note))


def _csv_line(cells: list[str]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(cells)
    return buf.getvalue().encode("utf-8")


def init_decisions_file(path: Path) -> None:
    """Create an empty decisions file (header only) at ``path`` unless one exists."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            if os.fstat(fh.fileno()).st_size == 0:
                fh.write(HEADER.encode("utf-8"))
                fh.flush()
                os.fsync(fh.fileno())
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def append_decision(path: Path, record: DecisionRecord) -> None:
    """Append one decision to the file at ``path`` (created with its header if missing), under an exclusive lock.

    The line is written only after the file's header and its last byte are checked, so a line is never glued to a
    torn one; it is flushed and fsynced before the lock is released.

    Raises:
        DecisionsFileError: the file has another header or ends in a torn line (a crash while writing).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = _csv_line(record.row())
    with path.open("a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                fh.write(HEADER.encode("utf-8"))
            else:
                fh.seek(0)
                first = fh.readline(len(HEADER) + 1)
                if first != HEADER.encode("utf-8"):
                    raise DecisionsFileError(
                        f"{path}: line 1: header must be {HEADER.strip()!r}; not appending to another file's format"
                    )
                fh.seek(size - 1)
                if fh.read(1) != b"\n":
                    raise DecisionsFileError(
                        f"{path}: the last line is incomplete (a write was cut off); fix or remove it before "
                        "recording another decision"
                    )
            fh.write(line)  # "a" mode: O_APPEND, the write lands at the end whatever the position
            fh.flush()
            os.fsync(fh.fileno())
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _parse_row(path: Path, line: int, cells: dict[str, str]) -> DecisionRecord:
    def bad(field: str, why: str) -> DecisionsFileError:
        return DecisionsFileError(f"{path}: line {line}: field {field}: {why}")

    claim_id = cells["claim_id"]
    if not CLAIM_ID.match(claim_id):
        raise bad("claim_id", "must be 32 lowercase hex digits (a claim pseudonym)")
    try:
        decision = Decision(cells["decision"])
    except ValueError:
        raise bad("decision", f"must be one of: {', '.join(d.value for d in Decision)}") from None
    by = cells["by"]
    if not NAME.match(by):
        raise bad("by", "must be 1-64 letters, digits, spaces, '.', \"'\", '-' or '_'")
    text = cells["decided_at"]
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise bad("decided_at", "must be an ISO 8601 UTC time such as 2026-12-07T19:55:55Z") from None
    if moment.utcoffset() is None:
        raise bad("decided_at", "must carry its time zone (UTC, e.g. 2026-12-07T19:55:55Z)")
    note = cells.get("note") or None
    if note is not None and (len(note) > MAX_NOTE_CHARS or any(not ch.isprintable() for ch in note)):
        raise bad("note", f"must be one line of at most {MAX_NOTE_CHARS} printable characters")
    return DecisionRecord(claim_id, decision, by, moment.astimezone(UTC), note)


def read_decisions(path: Path) -> list[DecisionRecord]:
    """Every decision in the file, in file order, each field validated.

    Raises:
        DecisionsFileError: the file is missing or unreadable, its header is not :data:`COLUMNS` (``note`` may be
            left out), a row has too many or too few cells, or a field is malformed; the message names the file,
            the line and the field.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DecisionsFileError(f"{path}: decisions file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DecisionsFileError(f"{path}: cannot read the decisions file: {exc}") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        raise DecisionsFileError(f"{path}: line 1: the header is missing (expected {','.join(COLUMNS)})")
    if tuple(header) not in (COLUMNS, COLUMNS[:-1]):
        raise DecisionsFileError(f"{path}: line 1: header must be {','.join(COLUMNS)} (got {','.join(header)})")
    records = []
    for cells in reader:
        line = reader.line_num
        if not cells:
            continue  # a blank line
        if len(cells) != len(header):
            raise DecisionsFileError(f"{path}: line {line}: {len(cells)} fields where the header has {len(header)}")
        records.append(_parse_row(path, line, dict(zip(header, cells, strict=True))))
    if text and not text.endswith("\n"):
        raise DecisionsFileError(f"{path}: line {reader.line_num}: the last line is incomplete (no line end)")
    return records


def latest_decisions(records: Iterable[DecisionRecord]) -> dict[str, DecisionRecord]:
    """The decision in force for each claim: the latest ``decided_at``, the later record on a tie."""
    latest: dict[str, DecisionRecord] = {}
    for record in records:
        held = latest.get(record.claim_id)
        if held is None or record.decided_at >= held.decided_at:
            latest[record.claim_id] = record
    return latest


def decision_labels(records: Iterable[DecisionRecord]) -> pl.DataFrame:
    """One row per decided claim: ``claim_id``, ``label`` (1 confirmed, 0 cleared) and ``decision``, by claim id."""
    latest = latest_decisions(records)
    ids = sorted(latest)
    return pl.DataFrame(
        {
            "claim_id": ids,
            "label": [latest[c].decision.label for c in ids],
            "decision": [latest[c].decision.value for c in ids],
        },
        schema={"claim_id": pl.String, "label": pl.Int8, "decision": pl.String},
    )
