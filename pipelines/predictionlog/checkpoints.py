"""Signed checkpoints of the prediction log's head, kept outside the database.

The chain alone cannot show that its end was cut off: whoever can write the database can delete the last records
and move the head row back to the record before them. So after every commit the writer appends one short line to a
JSON-lines file beside the database: the head's record count and hash, a UTC time, and an HMAC-SHA256 of the three
under the audit key. Verification then checks every line's signature and that the chain still holds the record each
line names, with the hash it names; a chain shorter than a checkpoint, or different at a checkpointed record, fails.

Lines are appended with ``O_APPEND`` in one ``write`` (each a few hundred bytes), so several processes appending to
one file never interleave within a line; their lines may come in a different order than their commits, which
verification does not mind. Each line vouches for every record up to its count, so a line lost to a failed write is
covered by the next one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

CHECKPOINT_VERSION = 1
# Domain separation: a checkpoint signature is never a valid record hash, nor the reverse.
_SIGNED_PREFIX = b"shipa-audit-checkpoint\x00"
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def checkpoint_signature(key: bytes | hmac.HMAC, seq: int, head_hash: str, time: str) -> str:
    """HMAC-SHA256 (hex) over a checkpoint's version, record count, head hash and time.

    Args:
        key: the audit key, or an HMAC keyed with it and fed nothing (copied: no key set-up per line).
        seq: the record count.
        head_hash: the head record's hash.
        time: the time as written in the line.
    """
    keyed = key.copy() if isinstance(key, hmac.HMAC) else hmac.new(key, digestmod=hashlib.sha256)
    keyed.update(_SIGNED_PREFIX + f"{CHECKPOINT_VERSION}\x00{seq}\x00{head_hash}\x00{time}".encode())
    return keyed.hexdigest()


@dataclass(frozen=True)
class Checkpoint:
    """One line of the checkpoint file.

    Attributes:
        line: its 1-based line number in the file.
        seq: the number of records the chain held (the head's sequence number).
        hash: the head record's hash at that count.
        time: when the writer committed (UTC, as written).
        valid: the line parses and its signature matches under the verifier's key.
    """

    line: int
    seq: int
    hash: str
    time: str
    valid: bool


class CheckpointFile:
    """The append-only JSON-lines file of signed head checkpoints.

    Args:
        path: the file (created with mode 0600 on the first write, its folder too).
        key: the audit key the lines are signed with.
    """

    def __init__(self, path: str | Path, key: bytes) -> None:
        if not key:
            raise ValueError("the checkpoint file needs a non-empty audit key")
        self.path = Path(path).expanduser()
        self._key = hmac.new(key, digestmod=hashlib.sha256)

    def line_for(self, seq: int, head_hash: str, moment: datetime | None = None) -> bytes:
        """The signed line for a head at ``seq`` with ``head_hash`` (newline included)."""
        time = (moment.astimezone(UTC) if moment else datetime.now(UTC)).strftime(_TIME_FORMAT)
        sig = checkpoint_signature(self._key, seq, head_hash, time)
        # Written by hand, not json.dumps (3x the cost, on every commit): every value is an int or plain ASCII,
        # hex and digits; a hash that is not gets quoted by json.dumps, so the line still parses as JSON.
        return (
            f'{{"v":{CHECKPOINT_VERSION},"seq":{int(seq)},"hash":{json.dumps(head_hash)},"time":"{time}","sig":"{sig}"}}\n'
        ).encode("ascii")

    def write(self, seq: int, head_hash: str) -> None:
        """Append the checkpoint of a head at ``seq`` with ``head_hash``, in one ``O_APPEND`` write.

        Raises:
            OSError: the file cannot be opened or written.
        """
        data = self.line_for(seq, head_hash)
        # Opened per write, not held: a file moved away (rotated, or its folder recreated) is written afresh.
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except FileNotFoundError:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            written = os.write(fd, data)
        finally:
            os.close(fd)
        if written != len(data):  # a full disk; the half line fails verification as unreadable
            raise OSError(f"short write to {self.path}: {written} of {len(data)} bytes")

    def exists(self) -> bool:
        """Whether the file exists."""
        return self.path.is_file()

    def ensure(self) -> None:
        """Create the file (empty, 0600) if it is missing.

        Called before a log's first commit: the records are committed before their checkpoint line is written, so
        without it a verify running in between would find records and no file, the sign of a deleted file.
        """
        if self.exists():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600))

    def read(self) -> Iterator[Checkpoint]:
        """Every line, in file order, with whether it parses and its signature matches under this key."""
        with self.path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                yield self._parse(number, raw)

    def _parse(self, number: int, raw: bytes) -> Checkpoint:
        try:
            record = json.loads(raw)
            seq, head_hash, time, sig = record["seq"], record["hash"], record["time"], record["sig"]
            if record.get("v") != CHECKPOINT_VERSION or not isinstance(seq, int) or isinstance(seq, bool):
                raise ValueError("unknown version or count")
            if not all(isinstance(v, str) for v in (head_hash, time, sig)):
                raise ValueError("not text")
        except (ValueError, KeyError, TypeError):
            return Checkpoint(number, -1, "", "", False)
        valid = seq >= 0 and hmac.compare_digest(sig, checkpoint_signature(self._key, seq, head_hash, time))
        return Checkpoint(number, seq, head_hash, time, valid)
