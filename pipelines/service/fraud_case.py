"""One fraud scoring request as claim feature records, the same records the batch worklist gives those claims.

The submitted Claims and the resources they bring (Patient, Encounters, Observations, Procedures, Conditions,
Organizations, PractitionerRoles, ServiceRequests ...) are checked, de-identified and flattened like ingest
(:mod:`pipelines.service.fhir_in`), then scored against the Fund's history by
:meth:`pipelines.features.fraud_engine.FraudHistory.request_features`, the one implementation of the claim
features that the features stage runs too. A submitted resource replaces the history's copy of itself for this
request only; the history never grows, so a claim sent twice is not its own duplicate. A Claim sent alone that the
history already holds (the same pseudonym) gets exactly its batch record; a new Claim gets its peers' medians, the
patient's earlier claims and clinical trace, the provider's day and the provider network from the history.
Without a history (no ingest tables configured) the request is its own history.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipelines.codes import DEFAULT_IIN_SYSTEMS
from pipelines.fhir.deid import Pseudonyms
from pipelines.fhir.pseudonym import Pseudonymizer
from pipelines.iin import iin_shaped
from pipelines.service.errors import FhirHTTPError
from pipelines.service.fhir_in import Submitted, check_resources, deidentify_and_flatten, submitted_resources
from pipelines.service.fhir_out import PatientRef

if TYPE_CHECKING:
    import polars as pl

    from pipelines.features.fraud_engine import FraudHistory


@dataclass(frozen=True)
class ClaimRecords:
    """The claim feature records of a request and how to name each claim and patient in the answer.

    Attributes:
        records: one row per submitted claim (the training feature columns), in request order.
        basis: claim pseudonym -> how the request referred to the Claim (``Claim/<id>`` or its fullUrl), or
            ``Claim/<pseudonym>`` when that reference holds a number shaped like an IIN (:func:`iin_shaped`).
        patients: claim pseudonym -> the claim's pseudonymous patient.
        warnings: (expression, diagnostics) of each reference replaced by its pseudonym, for the answer.
    """

    records: pl.DataFrame
    basis: dict[str, str]
    patients: dict[str, PatientRef]
    warnings: list[tuple[str, str]] = field(default_factory=list)


def _claim_basis(submitted: Submitted, position: int, pseudonym: str) -> tuple[str, tuple[str, str] | None]:
    """How the answer names a claim: as the request referred to it, unless that reference looks like an IIN."""
    reference = submitted.references[position]
    if not iin_shaped(reference):
        return reference, None
    where, resource = submitted.resources[position]
    at = f"{where}.id" if reference == f"Claim/{resource.get('id')}" else f"{where.removesuffix('.resource')}.fullUrl"
    named = f"Claim/{pseudonym}"
    text = f"{at} looks like an IIN (a national identifier) and is not repeated: the answer names this claim {named}"
    return named, (at, text)


def build_claim_records(
    body: Any,
    *,
    pseudonymizer: Pseudonymizer,
    history: FraudHistory,
    max_claims: int,
    iin_systems: frozenset[str] = DEFAULT_IIN_SYSTEMS,
) -> ClaimRecords:
    """Claim feature records of a Claim or a Bundle of Claims with their referenced resources, against ``history``.

    Raises:
        FhirHTTPError: 422 when the body holds no Claim, more than ``max_claims``, or an invalid resource (the
            field named).
        pydantic.ValidationError: an invalid Bundle envelope.
    """
    submitted = submitted_resources(body, allowed=("Claim",))
    claims = submitted.of_type("Claim")
    if not claims:
        raise FhirHTTPError(422, "required", "the request holds no Claim to score", ["Bundle.entry"])
    if len(claims) > max_claims:
        raise FhirHTTPError(
            422,
            "too-costly",
            f"at most {max_claims} claims per request; send the rest separately",
            ["Bundle.entry"],
        )
    check_resources(submitted, iin_systems=iin_systems)
    flat = deidentify_and_flatten(submitted, Pseudonyms(pseudonymizer, iin_systems=iin_systems))
    # One record per submitted claim, in request order (a claim the features drop, e.g. without a created date,
    # has no record).
    order = list(dict.fromkeys(flat.pseudonyms[i] for i, _ in claims))
    records = history.request_features(flat.rows, order=order)
    basis: dict[str, str] = {}
    warnings: list[tuple[str, str]] = []
    for i, _ in claims:
        basis[flat.pseudonyms[i]], warning = _claim_basis(submitted, i, flat.pseudonyms[i])
        if warning is not None:
            warnings.append(warning)
    iin_of = {row["patient_id"]: row.get("patient_pseudo_id") for row in flat.rows.get("patients", [])}
    patients = {
        row["claim_id"]: PatientRef(iin_of.get(row.get("patient_id")), row.get("patient_id"))
        for row in flat.rows.get("claims", [])
    }
    return ClaimRecords(records=records, basis=basis, patients=patients, warnings=warnings)
