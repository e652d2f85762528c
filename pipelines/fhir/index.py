"""The dataset-wide index the second pass checks references against, kept as sorted numpy arrays.

About 8 bytes per accepted resource (its id key), 40 per identifier (conditional-reference target) and 12 per
patient (birth date, for "before birth" checks and ages); all keys come from keyed pseudonyms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pipelines.fhir.worker import ChunkResult

FOUND, NOT_FOUND, AMBIGUOUS, TARGET_REJECTED = 0, 1, 2, 3


@dataclass(frozen=True)
class Duplicate:
    """A copy of a resource id that is not kept: ``merged`` when its content equals the kept version's or an
    earlier copy's, else a superseded version (kept in the history).

    Attributes:
        seq, ord: where the copy is (unit, ordinal in the unit).
        merged: an identical copy (counted), not another version.
        kept_seq, kept_ord: where the kept (latest) version is.
    """

    seq: int
    ord: int
    merged: bool
    kept_seq: int
    kept_ord: int


def _hex_keys(pids: np.ndarray) -> np.ndarray:
    """Id keys (first 16 hex digits) of an array of 32-character pseudonyms (bytes)."""
    if len(pids) == 0:
        return np.empty(0, np.uint64)
    return np.array([int(p[:16], 16) for p in pids], dtype=np.uint64)


class DatasetIndex:
    """Ids, identifiers and birth dates of every accepted resource, filled chunk by chunk, then built once."""

    def __init__(self) -> None:
        self._parts: dict[str, list[np.ndarray]] = {
            k: []
            for k in ("ids", "hashes", "vers", "upd", "seqs", "ords", "rejected", "ikeys", "ipids", "pkeys", "pbirth")
        }
        self.ids = np.empty(0, np.uint64)
        self.rejected = np.empty(0, np.uint64)
        self.alias_keys = np.empty(0, np.uint64)
        self.alias_pids = np.empty(0, "S32")
        self.alias_ambiguous = np.empty(0, np.bool_)
        self.patient_keys = np.empty(0, np.uint64)
        self.patient_births = np.empty(0, np.int32)

    def add(self, result: ChunkResult) -> None:
        """Add one chunk's part of the index."""
        p = self._parts
        p["ids"].append(result.ids)
        p["hashes"].append(result.hashes)
        p["vers"].append(result.versions)
        p["upd"].append(result.updated)
        p["seqs"].append(np.full(len(result.ids), result.seq, np.int32))
        p["ords"].append(result.ords)
        p["rejected"].append(result.rejected_ids)
        p["ikeys"].append(result.ident_keys)
        p["ipids"].append(result.ident_pids)
        p["pkeys"].append(result.patient_keys)
        p["pbirth"].append(result.patient_births)

    def _cat(self, name: str, dtype: npt.DTypeLike) -> np.ndarray:
        parts = self._parts[name]
        return np.concatenate(parts) if parts else np.empty(0, dtype)

    def build(self) -> list[Duplicate]:
        """Sort everything, pick the kept version of each repeated id, and return the other copies.

        The kept version is the latest: highest ``meta.versionId`` (a whole number), then latest
        ``meta.lastUpdated``, then last in input order (files sorted by path, then line or entry). Every other
        copy is merged when its content equals the kept one's or an earlier copy's, else superseded.
        """
        ids, hashes = self._cat("ids", np.uint64), self._cat("hashes", np.uint64)
        vers, upd = self._cat("vers", np.int64), self._cat("upd", np.int64)
        seqs, ords = self._cat("seqs", np.int32), self._cat("ords", np.int32)
        order = np.lexsort((ords, seqs, upd, vers, ids))
        ids, hashes, seqs, ords = ids[order], hashes[order], seqs[order], ords[order]
        last = np.ones(len(ids), np.bool_)
        last[:-1] = ids[:-1] != ids[1:]
        ends = np.flatnonzero(last)
        starts = np.append(0, ends[:-1] + 1) if len(ends) else ends
        duplicates: list[Duplicate] = []
        for start, end in zip(starts[ends > starts].tolist(), ends[ends > starts].tolist(), strict=True):
            # In input order, so that of identical copies the first is the one kept in the history.
            copies = sorted(range(start, end), key=lambda i: (seqs[i], ords[i]))
            seen = {int(hashes[end])}
            for i in copies:
                merged = int(hashes[i]) in seen
                seen.add(int(hashes[i]))
                duplicates.append(Duplicate(int(seqs[i]), int(ords[i]), merged, int(seqs[end]), int(ords[end])))
        self.ids = ids[last]
        self.rejected = np.unique(self._cat("rejected", np.uint64))

        ikeys, ipids = self._cat("ikeys", np.uint64), self._cat("ipids", "S32")
        order = np.lexsort((ipids, ikeys))
        ikeys, ipids = ikeys[order], ipids[order]
        distinct = np.ones(len(ikeys), np.bool_)
        distinct[1:] = (ikeys[1:] != ikeys[:-1]) | (ipids[1:] != ipids[:-1])
        ikeys, ipids = ikeys[distinct], ipids[distinct]
        key_first = np.ones(len(ikeys), np.bool_)
        key_first[1:] = ikeys[1:] != ikeys[:-1]
        counts = np.diff(np.append(np.flatnonzero(key_first), len(ikeys)))
        self.alias_keys, self.alias_pids = ikeys[key_first], ipids[key_first]
        self.alias_ambiguous = counts > 1

        pkeys, pbirth = self._cat("pkeys", np.uint64), self._cat("pbirth", np.int32)
        self.patient_keys, idx = np.unique(pkeys, return_index=True)
        self.patient_births = pbirth[idx]
        self._parts = {k: [] for k in self._parts}
        return duplicates

    @staticmethod
    def _member(sorted_keys: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pos = np.searchsorted(sorted_keys, keys)
        pos_c = np.minimum(pos, max(len(sorted_keys) - 1, 0))
        found = (
            (pos < len(sorted_keys)) & (sorted_keys[pos_c] == keys) if len(sorted_keys) else np.zeros(len(keys), bool)
        )
        return found, pos_c

    def has(self, keys: np.ndarray) -> np.ndarray:
        """Whether each id key belongs to an accepted resource."""
        return self._member(self.ids, keys)[0]

    def was_rejected(self, keys: np.ndarray) -> np.ndarray:
        """Whether each id key belongs to a resource rejected in the first pass."""
        return self._member(self.rejected, keys)[0]

    def remove(self, keys: np.ndarray) -> None:
        """Take rejected resources out of the accepted ids (second-pass rejections)."""
        if len(keys):
            self.ids = self.ids[~self._member(np.unique(keys), self.ids)[0]]

    def resolve(self, cond_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Targets of conditional references: (pseudonyms as S32, status FOUND/NOT_FOUND/AMBIGUOUS/TARGET_REJECTED)."""
        found, pos = self._member(self.alias_keys, cond_keys)
        status = np.full(len(cond_keys), NOT_FOUND, np.int8)
        pids = np.full(len(cond_keys), b"", "S32")
        if len(self.alias_keys):
            pids = np.where(found, self.alias_pids[pos], pids)
            status[found] = FOUND
            status[found & self.alias_ambiguous[pos]] = AMBIGUOUS
        ok = status == FOUND
        if ok.any():
            alive = self.has(_hex_keys(pids[ok]))
            idx = np.flatnonzero(ok)
            status[idx[~alive]] = TARGET_REJECTED
        return pids, status

    def births(self, keys: np.ndarray) -> np.ndarray:
        """Birth date (YYYYMMDD, 0 when unknown) of each patient key."""
        found, pos = self._member(self.patient_keys, keys)
        if not len(self.patient_keys):
            return np.zeros(len(keys), np.int32)
        return np.where(found, self.patient_births[pos], 0).astype(np.int32)


def pid_keys(pids: np.ndarray) -> np.ndarray:
    """Public form of the id-key computation for arrays of pseudonyms (bytes or str)."""
    return _hex_keys(pids)
