"""The way back from a claim pseudonym to the Fund's claim, for an authorised investigator.

Pseudonyms are keyed one-way hashes (:class:`pipelines.fhir.pseudonym.Pseudonymizer`), so nothing can decode one.
Instead the Fund's raw export is read again and every Claim's id is pseudonymised with the ingest's key, the way
ingest did it (``Pseudonymizer.id("Claim", id)``; the id is the resource's ``id``, else the id its Bundle
``fullUrl`` gives, else ingest's content-derived id), until the wanted pseudonyms are matched.

The files are streamed with the ingest's readers (:mod:`pipelines.fhir.read`): NDJSON line by line (gzip too), one
JSON document (Bundle or single resource) at a time; only lines that mention ``"Claim"`` are parsed. This module
returns what it found and logs nothing about it: the caller prints it (stdout only) and audits the request.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from pipelines import codes
from pipelines.errors import InputError
from pipelines.fhir.pseudonym import Pseudonymizer
from pipelines.fhir.read import FailedPart, SourceFile, discover, read_lines
from pipelines.fhir.refs import id_from_fullurl
from pipelines.fhir.worker import CONTENT_ID_PREFIX

CLAIM = "Claim"
_CLAIM_TOKEN = b'"Claim"'


@dataclass(frozen=True)
class RevealedClaim:
    """Where a pseudonymous claim came from in the raw export.

    Attributes:
        pseudonym: the claim id as the worklist shows it.
        claim_id: the Claim resource id in the Fund's export (what ingest pseudonymised).
        claim_numbers: the Fund's claim numbers (``Claim.identifier`` values under the Fund's claim system).
        source: the file, relative to the raw folder.
        location: ``line N`` in NDJSON, ``entry N`` in a Bundle (0-based), ``document`` for a single resource.
    """

    pseudonym: str
    claim_id: str
    claim_numbers: tuple[str, ...]
    source: str
    location: str


def _claim_numbers(resource: dict[str, Any]) -> tuple[str, ...]:
    found = []
    for ident in resource.get("identifier") or ():
        if isinstance(ident, dict) and ident.get("system") == codes.CLAIM_ID_SYSTEM:
            value = ident.get("value")
            if isinstance(value, str) and value:
                found.append(value)
    return tuple(found)


def _source_id(resource: dict[str, Any], full_url: object = None) -> str:
    """The id ingest gave the resource (see :mod:`pipelines.fhir.worker`, "Identity")."""
    rid = resource.get("id")
    if isinstance(rid, str) and rid:
        return rid
    from_url = id_from_fullurl(full_url, CLAIM) if full_url is not None else None
    if from_url:
        return from_url
    canonical = orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)
    return CONTENT_ID_PREFIX + hashlib.blake2b(canonical, digest_size=16).hexdigest()


def _claims_in_lines(source: SourceFile) -> Iterator[tuple[dict[str, Any], str]]:
    for item in read_lines(source):
        if isinstance(item, FailedPart):
            return  # ingest quarantined the rest of this file: no claim of it reached the tables
        number, line = item
        if _CLAIM_TOKEN not in line:
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(obj, dict) and obj.get("resourceType") == CLAIM:
            yield obj, f"line {number}"


def _claims_in_document(source: SourceFile) -> Iterator[tuple[dict[str, Any], object, str]]:
    try:
        data = source.path.read_bytes()
        if source.gz:
            data = gzip.decompress(data)
        if _CLAIM_TOKEN not in data:
            return
        doc = orjson.loads(data)
    except (OSError, EOFError, zlib.error, orjson.JSONDecodeError):
        return  # unreadable: ingest quarantined it whole
    if not isinstance(doc, dict):
        return
    if doc.get("resourceType") == CLAIM:
        yield doc, None, "document"
        return
    if doc.get("resourceType") != "Bundle" or not isinstance(doc.get("entry"), list):
        return
    for index, entry in enumerate(doc["entry"]):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType") == CLAIM:
            yield resource, entry.get("fullUrl"), f"entry {index}"


def reveal_claims(raw: Path, pseudonyms: Iterable[str], pseudonymizer: Pseudonymizer) -> dict[str, list[RevealedClaim]]:
    """Find the raw Claims whose pseudonym is one of ``pseudonyms``.

    Every file is read (a claim may appear in several, e.g. as an update or a duplicate copy), one at a time.

    Args:
        raw: the raw export (``<raw>/fhir`` when present, else ``raw`` itself, as ingest reads it).
        pseudonyms: claim pseudonyms (32 lowercase hex digits).
        pseudonymizer: keyed with the key ingest used.

    Returns:
        Each wanted pseudonym with its matches in file order (an empty list: not found).

    Raises:
        InputError: the raw folder is missing or holds no FHIR file.
    """
    raw = Path(raw)
    wanted = list(dict.fromkeys(pseudonyms))
    found: dict[str, list[RevealedClaim]] = {p: [] for p in wanted}
    if not raw.is_dir():
        raise InputError(f"{raw}: raw export folder not found")
    files = discover(raw)
    if not files:
        raise InputError(f"{raw}: no FHIR files (.ndjson, .jsonl or .json, optionally .gz) found")
    for source in files:
        claims: Iterable[tuple[dict[str, Any], object, str]]
        if source.fmt == "ndjson":
            claims = ((obj, None, where) for obj, where in _claims_in_lines(source))
        else:
            claims = _claims_in_document(source)
        for resource, full_url, where in claims:
            rid = _source_id(resource, full_url)
            pid = pseudonymizer.id(CLAIM, rid)
            if pid in found:
                found[pid].append(RevealedClaim(pid, rid, _claim_numbers(resource), source.rel, where))
    return found
