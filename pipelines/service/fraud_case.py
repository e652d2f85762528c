"""One fraud scoring request as claim feature records, the same records the training feature code builds.

The submitted Claims and the resources they need (Patient, Encounters, Observations, Procedures, Conditions,
Organizations, PractitionerRoles, ServiceRequests ...) are checked, de-identified and flattened like ingest
(:mod:`pipelines.service.fhir_in`) and turned into records by
:func:`pipelines.features.fraud_request.request_claim_features`: plain Python over the request's few rows that
gives exactly what :func:`pipelines.features.fraud.claim_features` (the features stage's polars code) gives on
``normalise(table_frames(rows))``, in a few milliseconds instead of 50-120 ms of polars per-query overhead
(``tests/features/test_fraud_request.py`` checks the equivalence).

Limitation: features that summarise history see only the submitted resources, not the national claims store.
Peer medians (``amount_ratio_dx``, ``service_level_excess``, ``price_ratio_max``, ``quantity_ratio_max``) need
``peer_min_count`` earlier peer claims in the request and are neutral (1.0 / 0) otherwise; duplicates
(``dup_*``), provider volume (``provider_day_*``, ``services_per_staff``, ``volume_vs_baseline``), unbundling
across claims and the provider network (``patient_providers_90d``, ``referral_*``, ``pair_shared_*``) count
only what the request holds; staff counts need the provider's PractitionerRoles in the request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipelines.codes import DEFAULT_IIN_SYSTEMS
from pipelines.fhir.deid import Pseudonyms
from pipelines.fhir.pseudonym import Pseudonymizer
from pipelines.service.errors import FhirHTTPError
from pipelines.service.fhir_in import check_resources, deidentify_and_flatten, submitted_resources
from pipelines.service.fhir_out import PatientRef

if TYPE_CHECKING:
    import polars as pl

    from pipelines.features.fraud import FraudFeatureOptions


@dataclass(frozen=True)
class ClaimRecords:
    """The claim feature records of a request and how to name each claim and patient in the answer.

    Attributes:
        records: one row per submitted claim (the training feature columns), in request order.
        basis: claim pseudonym -> how the request referred to the Claim (``Claim/<id>`` or its fullUrl).
        patients: claim pseudonym -> the claim's pseudonymous patient.
    """

    records: pl.DataFrame
    basis: dict[str, str]
    patients: dict[str, PatientRef]


def build_claim_records(
    body: Any,
    *,
    pseudonymizer: Pseudonymizer,
    options: FraudFeatureOptions,
    max_claims: int,
    iin_systems: frozenset[str] = DEFAULT_IIN_SYSTEMS,
) -> ClaimRecords:
    """Claim feature records of a Claim or a Bundle of Claims with their referenced resources.

    Raises:
        FhirHTTPError: 422 when the body holds no Claim, more than ``max_claims``, or an invalid resource (the
            field named).
        pydantic.ValidationError: an invalid Bundle envelope.
    """
    from pipelines.features.fraud_request import request_claim_features

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
    records = request_claim_features(flat.rows, options, order=order)
    basis = {flat.pseudonyms[i]: submitted.references[i] for i, _ in claims}
    iin_of = {row["patient_id"]: row.get("patient_pseudo_id") for row in flat.rows.get("patients", [])}
    patients = {
        row["claim_id"]: PatientRef(iin_of.get(row.get("patient_id")), row.get("patient_id"))
        for row in flat.rows.get("claims", [])
    }
    return ClaimRecords(records=records, basis=basis, patients=patients)
