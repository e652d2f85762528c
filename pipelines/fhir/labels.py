"""The Fund's audit findings (``labels/audit_findings.csv``) with their ids replaced by the tables' pseudonyms.

A finding names a claim and a provider as the Fund knows them: a Claim resource id or Claim identifier value, and an
Organization resource id or provider registry number. Each is looked up both ways in the dataset index, so the
labels join ``claims.claim_id`` and ``organizations.organization_id``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipelines import codes
from pipelines.fhir import dates
from pipelines.fhir.deid import Pseudonyms
from pipelines.fhir.index import FOUND, DatasetIndex
from pipelines.fhir.keys import cond_key, id_key
from pipelines.fhir.schema import FUND_FINDINGS


def _resolve(
    value: str, rtype: str, system: str, index: DatasetIndex, pseudonyms: Pseudonyms
) -> tuple[str | None, bool]:
    if not value:
        return None, False
    pid = pseudonyms.resource(rtype, value)
    if index.has(np.asarray([id_key(pid)], np.uint64))[0]:
        return pid, True
    ck = cond_key(rtype, system, pseudonyms.identifier(system, value))
    pids, status = index.resolve(np.asarray([ck], np.uint64))
    if status[0] == FOUND:
        return pids[0].decode(), True
    return None, False


def fund_findings_table(path: Path, index: DatasetIndex, pseudonyms: Pseudonyms) -> pa.Table:
    """Read the findings CSV (claim_id, provider_id, pattern, finding_date) into the ``audit_findings`` table."""
    rows = []
    with path.open(encoding="utf-8", newline="") as fh:
        for rec in csv.DictReader(fh):
            claim, claim_ok = _resolve(rec.get("claim_id") or "", "Claim", codes.CLAIM_ID_SYSTEM, index, pseudonyms)
            org, org_ok = _resolve(rec.get("provider_id") or "", "Organization", codes.ORG_ID_SYSTEM, index, pseudonyms)
            rows.append(
                {
                    "claim_id": claim,
                    "provider_id": org,
                    "pattern": rec.get("pattern") or None,
                    "finding_date": dates.to_date(rec.get("finding_date")),
                    "claim_resolved": claim_ok,
                    "provider_resolved": org_ok,
                }
            )
    return pa.Table.from_pylist(rows, schema=FUND_FINDINGS.schema)
