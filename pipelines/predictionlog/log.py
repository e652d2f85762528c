"""The prediction log: append-only and hash-chained, one record for every request that reaches a model.

Each record carries ``prev_hash`` (the hash of the record before it) and ``hash`` (HMAC-SHA256 under the audit key
over its canonical JSON, ``prev_hash`` included), and a one-row ``audit_head`` table holds the last sequence number
and hash, written in the same transaction. So :meth:`PredictionLog.verify` finds any record altered or deleted from
the middle, and, since only holders of the key can compute a hash, a chain recomputed wholesale. Cutting records off
the end and moving the head back leaves a valid shorter chain: the signed checkpoints of the head that each commit
appends to a file outside the database (:mod:`pipelines.predictionlog.checkpoints`) show it. Works on any SQLAlchemy
backend (plain portable SQL; SQLite in WAL mode by default).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError

from pipelines.predictionlog.checkpoints import Checkpoint, CheckpointFile
from pipelines.predictionlog.db import create_tables, make_engine
from pipelines.predictionlog.entry import LogEntry
from pipelines.predictionlog.fhir import audit_event_to_fhir
from pipelines.predictionlog.roles import PURPOSE_OF_USE, Role

log = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
# The key of demo mode and of tests only: it is public, so a chain hashed under it proves nothing.
DEMO_AUDIT_KEY = b"shipa-demo-audit-key-not-for-production"
MAX_OUTPUT_BYTES = 64 * 1024
APPEND_ATTEMPTS = 20
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_IIN_LIKE = re.compile(r"^\d{12}$")


class AuditOutcome(StrEnum):
    """FHIR R4 AuditEvent.outcome codes."""

    success = "0"
    minor_failure = "4"
    serious_failure = "8"
    major_failure = "12"


def parse_outcome(value: str) -> AuditOutcome:
    """An outcome from its code (``0``) or name (``success``, ``minor_failure`` ...)."""
    text = value.strip().lower().replace("-", "_")
    if text in AuditOutcome.__members__:
        return AuditOutcome[text]
    return AuditOutcome(text)


metadata = MetaData()
events_table = Table(
    "audit_events",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("recorded", String(32), nullable=False, index=True),
    Column("token_name", String(64), nullable=False),
    Column("role", String(16), nullable=False, index=True),
    Column("purpose_of_use", String(32), nullable=False),
    Column("endpoint", String(200), nullable=False),
    Column("model_name", String(200), nullable=False, index=True),
    Column("model_version", String(64), nullable=False),
    Column("model_alias", String(64), nullable=False),
    Column("input_sha256", String(64), nullable=False),
    Column("patient_pseudonym", String(64), nullable=True),
    Column("output_json", Text, nullable=False),
    Column("latency_us", BigInteger, nullable=False),
    Column("outcome", String(4), nullable=False, index=True),
    Column("outcome_desc", String(500), nullable=True),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)
head_table = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)
_HASHED_FIELDS = tuple(c.name for c in events_table.columns if c.name != "hash")
# Checked before writing: PostgreSQL would refuse an over-long value, SQLite would silently keep it.
_STRING_LIMITS = {c.name: c.type.length for c in events_table.columns if isinstance(c.type, String) and c.type.length}
_REQUIRED_TEXT = frozenset({"token_name", "role", "endpoint", "model_name", "model_version", "model_alias"})

# Built once: statements executed with parameter dicts skip SQLAlchemy's per-call value coercion (3x faster).
_SELECT_HEAD = select(head_table.c.seq, head_table.c.hash).where(head_table.c.id == 1)
_MOVE_HEAD = (
    update(head_table)
    .where(
        head_table.c.id == 1,
        head_table.c.seq == bindparam("old_seq"),
        head_table.c.hash == bindparam("old_hash"),
    )
    .values(seq=bindparam("new_seq"), hash=bindparam("new_hash"))
)
_INSERT_EVENT = insert(events_table)


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of ``data`` (the input hash recorded for a request body)."""
    return hashlib.sha256(data).hexdigest()


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy scalars and small arrays
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def compact_json(value: Any) -> str:
    """Canonical compact JSON (sorted keys, no spaces, UTF-8, no NaN)."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_json_default
    )


def format_time(moment: datetime) -> str:
    """A UTC timestamp in the fixed-width form stored in the log (sorts as text on every backend)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime(TIME_FORMAT)


@dataclass(frozen=True)
class PredictionRecord:
    """One request that reached a model, as the route hands it to :meth:`PredictionLog.append`.

    Attributes:
        token_name: the name of the bearer token (the agent).
        role: the token's role.
        endpoint: the route template, e.g. ``/diagnosis``.
        model_name: registered model name; model_version and model_alias (``champion``) say which one answered.
        input_sha256: sha256 hex of the request body (:func:`sha256_hex`).
        output: the answer in compact form (scores, labels, reasons; never images).
        latency_ms: time from request start to answer.
        outcome: success or a failure code.
        purpose_of_use: a v3 ActReason code; empty means the role's default (TREAT, FRAUD ...).
        patient_pseudonym: the pseudonymous patient id (never an IIN); None for requests about no one patient.
        outcome_desc: a short description of a failure, without personal data.
        recorded: when it happened (default: now, UTC).
    """

    token_name: str
    role: str
    endpoint: str
    model_name: str
    model_version: str
    model_alias: str
    input_sha256: str
    output: Any
    latency_ms: float
    outcome: AuditOutcome | str = AuditOutcome.success
    purpose_of_use: str = ""
    patient_pseudonym: str | None = None
    outcome_desc: str | None = None
    recorded: datetime | None = None


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of walking the chain and checking it against the checkpoint file.

    Attributes:
        ok: every record is present, unaltered and chained, and every checkpoint is signed and matches the chain.
        checked: records checked before the first bad one (all of them when ok).
        first_bad_id: sequence number of the first bad (altered or missing) record, or None.
        reason: what is wrong with it, or None.
        head_hash: the last record's hash when ok.
        first_bad_checkpoint: line number in the checkpoint file of the first bad checkpoint, or None.
        checkpoints: checkpoint lines read (0 when the log has no checkpoint file).
        anchored: the highest record count a valid checkpoint vouches for (records after it are not anchored yet).
    """

    ok: bool
    checked: int
    first_bad_id: int | None = None
    reason: str | None = None
    head_hash: str | None = None
    first_bad_checkpoint: int | None = None
    checkpoints: int = 0
    anchored: int = 0


@dataclass(frozen=True)
class LogPage:
    """One page of a query, newest first."""

    items: list[LogEntry]
    total: int
    page: int
    page_size: int

    @property
    def has_next(self) -> bool:
        """Whether another page follows."""
        return self.page * self.page_size < self.total


def record_hash(row: Mapping[Any, Any], key: bytes | hmac.HMAC) -> str:
    """HMAC-SHA256 under the audit key over the canonical JSON of every stored field but ``hash`` (``prev_hash`` in).

    Args:
        row: the stored fields.
        key: the audit key, or an HMAC keyed with it (:func:`audit_hmac`; copied, so a hash costs no key set-up).
    """
    payload = compact_json({name: row[name] for name in _HASHED_FIELDS}).encode("utf-8")
    keyed = key.copy() if isinstance(key, hmac.HMAC) else audit_hmac(key)
    keyed.update(payload)
    return keyed.hexdigest()


def audit_hmac(key: bytes) -> hmac.HMAC:
    """An HMAC-SHA256 keyed with the audit key, nothing hashed yet (raises ValueError on an empty key)."""
    if not key:
        raise ValueError("the audit key is empty")
    return hmac.new(key, digestmod=hashlib.sha256)


def _validated_row(record: PredictionRecord) -> dict[str, Any]:
    """The stored columns of a record (without seq, prev_hash, hash); raises ValueError on unusable values."""
    if not _SHA256.match(record.input_sha256):
        raise ValueError("input_sha256 must be 64 lowercase hex characters")
    pseudonym = record.patient_pseudonym
    if pseudonym is not None and (_IIN_LIKE.match(pseudonym) or not _FHIR_ID.match(pseudonym)):
        raise ValueError("patient_pseudonym must be a pseudonymous id (never an IIN)")
    try:
        output_json = compact_json(record.output)
    except TypeError as exc:
        raise ValueError(f"audit output is not JSON: {exc}") from None
    if len(output_json.encode("utf-8")) > MAX_OUTPUT_BYTES:
        raise ValueError(f"audit output is over {MAX_OUTPUT_BYTES} bytes: record scores, not images")
    outcome = record.outcome if isinstance(record.outcome, AuditOutcome) else parse_outcome(record.outcome)
    purpose = record.purpose_of_use
    if not purpose:
        try:
            purpose = PURPOSE_OF_USE[Role(record.role)]
        except ValueError:
            purpose = "HOPERAT"
    row = {
        "event_id": str(uuid.uuid4()),
        "recorded": format_time(record.recorded or datetime.now(UTC)),
        "token_name": record.token_name,
        "role": str(record.role),
        "purpose_of_use": purpose,
        "endpoint": record.endpoint,
        "model_name": record.model_name,
        "model_version": str(record.model_version),
        "model_alias": record.model_alias,
        "input_sha256": record.input_sha256,
        "patient_pseudonym": pseudonym,
        "output_json": output_json,
        "latency_us": max(0, round(record.latency_ms * 1000)),
        "outcome": outcome.value,
        # A failure's text may quote the input (a DICOM value padded with NUL): kept, with the NUL made visible.
        "outcome_desc": record.outcome_desc[:500].replace("\x00", "\ufffd") if record.outcome_desc else None,
    }
    for name, limit in _STRING_LIMITS.items():
        value = row.get(name)
        if isinstance(value, str) and (len(value) > limit or (not value and name in _REQUIRED_TEXT)):
            raise ValueError(f"{name} must be 1-{limit} characters")
        # PostgreSQL refuses NUL in text (and would fail every record of the group commit); SQLite would keep it.
        if isinstance(value, str) and "\x00" in value:
            raise ValueError(f"{name} must not contain NUL characters")
    return row


class _ChainMoved(Exception):
    """Another writer appended between our read of the head and our update of it."""


@dataclass(eq=False)
class _Pending:
    """A validated record waiting for a writer, and what became of it."""

    row: dict[str, Any]
    stored: LogEntry | None = None
    error: BaseException | None = None


class PredictionLog:
    """The hash-chained audit log in an SQLAlchemy database.

    Args:
        url_or_engine: a database URL (the log then owns its engine) or the service's shared engine.
        observer: the name of this service in ``AuditEvent.source.observer``.
        key: the audit key every record hash is an HMAC under (the service's ``SHIPA_SERVICE_AUDIT_KEY``); the
            public :data:`DEMO_AUDIT_KEY` when left out, for demos and tests only.
        checkpoints: the checkpoint file each commit appends the signed head to and :meth:`verify` checks the
            chain against; None for none (the chain then cannot show records cut off its end).
    """

    def __init__(
        self,
        url_or_engine: str | Engine,
        observer: str = "shipa-service",
        *,
        key: bytes | None = None,
        checkpoints: str | Path | None = None,
    ) -> None:
        key = DEMO_AUDIT_KEY if key is None else key
        self._hmac = audit_hmac(key)
        self._checkpoints = CheckpointFile(checkpoints, key) if checkpoints is not None else None
        self._owns_engine = isinstance(url_or_engine, str)
        self._engine = make_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
        self._lock = threading.Lock()  # one writer at a time
        self._pending_lock = threading.Lock()  # guards _pending only (held for microseconds)
        self._pending: list[_Pending] = []
        self._turn: list[tuple[_Pending, asyncio.Future[LogEntry]]] = []  # see append_on_loop
        self._head: tuple[int, str] | None = None
        self.observer = observer
        create_tables(metadata, self._engine)
        self._ensure_head()

    @property
    def engine(self) -> Engine:
        """The engine the log writes through."""
        return self._engine

    @property
    def checkpoint_path(self) -> Path | None:
        """The checkpoint file, or None when the log keeps none."""
        return self._checkpoints.path if self._checkpoints is not None else None

    def close(self) -> None:
        """Dispose of the engine if this log created it."""
        if self._owns_engine:
            self._engine.dispose()

    def _ensure_head(self) -> None:
        for attempt in range(APPEND_ATTEMPTS):
            try:
                with self._engine.begin() as conn:
                    if conn.execute(select(head_table.c.id).where(head_table.c.id == 1)).first() is None:
                        conn.execute(insert(head_table).values(id=1, seq=0, hash=GENESIS_HASH))
                return
            except IntegrityError:  # another process created it first
                return
            except OperationalError:  # SQLite: another process wrote since this one read (busy snapshot)
                if attempt == APPEND_ATTEMPTS - 1:
                    raise
                time.sleep(0.001 * (attempt + 1))

    def append(self, record: PredictionRecord) -> LogEntry:
        """Append one record at the end of the chain and return it as stored.

        Appends are serialised in process by a lock, and across processes by a conditional update of the head
        row in the same transaction as the insert (a writer that lost the race retries), so the chain never forks.
        Records appended by concurrent threads while another append is being written are committed together, in
        arrival order, in the next transaction (group commit): one head update and one commit for all of them.

        Raises:
            ValueError: the record holds an unusable value (bad hash, IIN-like patient id, oversized output).
        """
        pending = _Pending(_validated_row(record))
        with self._pending_lock:
            self._pending.append(pending)
        with self._lock:
            if pending.stored is None and pending.error is None:  # nobody wrote it yet: write every waiting record
                with self._pending_lock:
                    group, self._pending = self._pending, []
                try:
                    stored = self._append_rows([p.row for p in group])
                except BaseException as exc:
                    for p in group:
                        p.error = exc
                else:
                    for p, event in zip(group, stored, strict=True):
                        p.stored = event
        if pending.error is not None:
            raise pending.error
        assert pending.stored is not None
        return pending.stored

    async def append_on_loop(self, record: PredictionRecord) -> LogEntry:
        """:meth:`append` for a coroutine on the event loop, committed with the records of the same turn of the loop.

        The first record of a turn schedules one commit after the callbacks already ready: the requests answered by
        one model call all add their records before it runs, and share one transaction instead of one each. The
        commit runs on the loop (a few hundred microseconds on SQLite, less than a hand-over to a thread costs).

        Raises:
            ValueError: as :meth:`append`; a failed commit is raised in every request of its turn.
        """
        pending = _Pending(_validated_row(record))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[LogEntry] = loop.create_future()
        self._turn.append((pending, future))
        if len(self._turn) == 1:
            loop.call_soon(self._commit_turn)
        return await future

    def _commit_turn(self) -> None:
        turn, self._turn = self._turn, []
        try:
            with self._lock:  # a thread's append may be writing
                stored = self._append_rows([p.row for p, _ in turn])
        except BaseException as exc:
            for _, future in turn:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), event in zip(turn, stored, strict=True):
            if not future.done():  # the request may have been cancelled; its record stays written
                future.set_result(event)

    def _append_rows(self, rows: list[dict[str, Any]]) -> list[LogEntry]:
        """Write ``rows`` at the end of the chain in one transaction (retried when another writer moved the head)."""
        for attempt in range(APPEND_ATTEMPTS):
            try:
                return self._append_once(rows)
            except (_ChainMoved, IntegrityError, OperationalError):
                self._head = None
                if attempt == APPEND_ATTEMPTS - 1:
                    raise
                time.sleep(0.001 * (attempt + 1))
            except BaseException:
                self._head = None
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _append_once(self, rows: list[dict[str, Any]]) -> list[LogEntry]:
        if self._checkpoints is not None:
            try:
                self._checkpoints.ensure()
            except OSError as exc:  # reported as _write_checkpoint reports it; the records still go in
                log.error("audit checkpoint file %s cannot be created: %s", self._checkpoints.path, exc)
        with self._engine.begin() as conn:
            # The head this process wrote last; if another process appended since, the conditional update
            # below matches no row and the retry reads the head afresh.
            seq, prev = self._head or tuple(conn.execute(_SELECT_HEAD).one())
            old_seq, old_hash = seq, prev
            chained = []
            for row in rows:
                seq += 1
                full = {**row, "seq": seq, "prev_hash": prev}
                full["hash"] = prev = record_hash(full, self._hmac)
                chained.append(full)
            params = {"old_seq": old_seq, "old_hash": old_hash, "new_seq": seq, "new_hash": prev}
            if conn.execute(_MOVE_HEAD, params).rowcount != 1:
                raise _ChainMoved
            conn.execute(_INSERT_EVENT, chained[0] if len(chained) == 1 else chained)
        self._head = (seq, prev)
        self._write_checkpoint(seq, prev)
        return [LogEntry(**full) for full in chained]

    def _write_checkpoint(self, seq: int, head_hash: str) -> None:
        """One signed line for the transaction just committed (not per record: group commit keeps one write)."""
        if self._checkpoints is None:
            return
        try:
            self._checkpoints.write(seq, head_hash)
        except OSError as exc:
            # The records are committed: failing the request now would make its caller retry and log it twice.
            # The next commit's line vouches for these records too; until then they are only unanchored.
            log.error("audit checkpoint for record %d not written to %s: %s", seq, self._checkpoints.path, exc)

    def verify(self) -> VerifyResult:
        """Walk the whole chain, then check it against the checkpoint file; report the first fault found.

        In order: a record missing, altered, hashed under another key or unchained; a record that differs from a
        signed checkpoint of it; a head row past the last record or unlike the record at its count (records
        committed after the head was read follow it: verifying while the service appends is no fault); a chain
        shorter than a signed
        checkpoint (records cut off the end and the head moved back); a checkpoint line that is unreadable or not
        signed with the audit key; no checkpoint file for a chain that has records.
        """
        wanted: dict[int, list[Checkpoint]] = {}
        first_unsigned: Checkpoint | None = None
        lines = 0
        cp_file = self._checkpoints
        file_missing = cp_file is not None and not cp_file.exists()
        if cp_file is not None and not file_missing:
            for checkpoint in cp_file.read():
                lines += 1
                if checkpoint.valid:
                    wanted.setdefault(checkpoint.seq, []).append(checkpoint)
                elif first_unsigned is None:
                    first_unsigned = checkpoint

        def fail(checked: int, bad_id: int | None, reason: str, line: int | None = None) -> VerifyResult:
            return VerifyResult(False, checked, bad_id, reason, first_bad_checkpoint=line, checkpoints=lines)

        expected_seq, prev_hash, checked = 1, GENESIS_HASH, 0
        with self._engine.connect() as conn:
            # Read before the records, each in its own statement: records committed in between (the service
            # appending while an auditor verifies) follow the head. They are accepted, keyed and chained as all
            # others; the head row must match the record at its own count.
            head = conn.execute(_SELECT_HEAD).first()
            head_seq = head.seq if head is not None else -1
            hash_at_head = GENESIS_HASH if head_seq == 0 else None
            rows = conn.execution_options(yield_per=2000).execute(select(events_table).order_by(events_table.c.seq))
            for row in rows.mappings():
                seq = row["seq"]
                if seq != expected_seq:
                    return fail(
                        checked,
                        expected_seq,
                        f"record {expected_seq} is missing (deleted): record {seq} follows record {expected_seq - 1}",
                    )
                if record_hash(row, self._hmac) != row["hash"]:
                    return fail(
                        checked,
                        seq,
                        f"record {seq} does not match its hash (altered), or the log was hashed under another "
                        "audit key",
                    )
                if row["prev_hash"] != prev_hash:
                    return fail(
                        checked,
                        seq,
                        f"record {seq} does not chain to record {seq - 1} (one of them was altered and rehashed)",
                    )
                for checkpoint in wanted.get(seq, ()):
                    if checkpoint.hash != row["hash"]:
                        return fail(
                            checked,
                            seq,
                            f"record {seq} is not the record checkpoint line {checkpoint.line} ({checkpoint.time}) "
                            "signed (the chain was rewritten from there on, or the checkpoints are another log's)",
                            checkpoint.line,
                        )
                if seq == head_seq:
                    hash_at_head = row["hash"]
                prev_hash, expected_seq, checked = row["hash"], expected_seq + 1, checked + 1
        last = expected_seq - 1
        if head is None:
            return fail(checked, last + 1, "the chain head row is missing (altered)")
        if head.seq > last:
            return fail(checked, last + 1, f"records {last + 1} to {head.seq} are missing (deleted from the end)")
        if head.hash != hash_at_head:
            return fail(checked, head.seq, f"the chain head does not match record {head.seq} (altered)")
        beyond = [c for seq, found in wanted.items() if seq > last for c in found]
        if beyond:
            top = max(beyond, key=lambda c: (c.seq, -c.line))
            return fail(
                checked,
                last + 1,
                f"the chain ends at record {last} but checkpoint line {top.line} ({top.time}) vouches for "
                f"{top.seq} records: records {last + 1} to {top.seq} were cut off and the head moved back",
                top.line,
            )
        if first_unsigned is not None:
            return fail(
                checked,
                None,
                f"checkpoint line {first_unsigned.line} of {cp_file.path if cp_file else ''} is unreadable or not "
                "signed with the audit key (forged or altered)",
                first_unsigned.line,
            )
        # Looked at again: the first commit may have been read above with its checkpoint line still being written.
        if file_missing and last > 0 and cp_file is not None and not cp_file.exists():
            return fail(
                checked,
                None,
                f"no checkpoint file at {cp_file.path if cp_file else ''}: nothing shows that the chain's end is "
                "intact (deleted, or another path than the writers use)",
            )
        return VerifyResult(True, checked, head_hash=prev_hash, checkpoints=lines, anchored=max(wanted, default=0))

    def query(
        self,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        model: str | None = None,
        role: str | None = None,
        outcome: str | None = None,
        token_name: str | None = None,
        page: int = 1,
        page_size: int = 50,
    ) -> LogPage:
        """One page of records matching every given filter, newest first.

        Args:
            start: earliest time, inclusive (naive means UTC).
            end: latest time, exclusive.
            model: registered model name.
            role: token role.
            outcome: outcome code (``0``) or name (``success``).
            token_name: token name.
            page: 1-based page number.
            page_size: records per page (1-1000).

        Raises:
            ValueError: bad page, page size or outcome.
        """
        if page < 1 or not 1 <= page_size <= 1000:
            raise ValueError("page must be >= 1 and page_size 1-1000")
        c = events_table.c
        conditions = []
        if start is not None:
            conditions.append(c.recorded >= format_time(start))
        if end is not None:
            conditions.append(c.recorded < format_time(end))
        if model:
            conditions.append(c.model_name == model)
        if role:
            conditions.append(c.role == role)
        if outcome:
            conditions.append(c.outcome == parse_outcome(outcome).value)
        if token_name:
            conditions.append(c.token_name == token_name)
        with self._engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(events_table).where(*conditions)).scalar_one()
            rows = conn.execute(
                select(events_table)
                .where(*conditions)
                .order_by(c.seq.desc())
                .limit(page_size)
                .offset((page - 1) * page_size)
            ).mappings()
            items = [LogEntry(**dict(r)) for r in rows]
        return LogPage(items, int(total), page, page_size)

    def iter_all(self) -> Iterator[LogEntry]:
        """Every record in chain order (for exports)."""
        with self._engine.connect() as conn:
            rows = conn.execution_options(yield_per=2000).execute(select(events_table).order_by(events_table.c.seq))
            for row in rows.mappings():
                yield LogEntry(**dict(row))

    def to_fhir(self, record: LogEntry) -> dict[str, Any]:
        """The record as a FHIR R4 AuditEvent (see :func:`pipelines.predictionlog.fhir.audit_event_to_fhir`)."""
        return audit_event_to_fhir(record, self.observer)
