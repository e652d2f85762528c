"""The roles a token can hold, what each may do, and the purpose of use recorded in the audit log."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """A token's role. ``admin`` passes every role check."""

    clinician = "clinician"  # diagnosis
    investigator = "investigator"  # fraud scoring
    auditor = "auditor"  # audit log read and verify
    admin = "admin"  # everything, including model reload


# HL7 v3 ActReason (PurposeOfUse) codes recorded in AuditEvent.purposeOfEvent.
PURPOSE_OF_USE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
PURPOSE_OF_USE: dict[Role, str] = {
    Role.clinician: "TREAT",
    Role.investigator: "FRAUD",
    Role.auditor: "HOPERAT",
    Role.admin: "HSYSADMIN",
}


def parse_role(value: str) -> Role:
    """The role named ``value``.

    Raises:
        ValueError: not one of the known roles (the message lists them).
    """
    try:
        return Role(value.strip().lower())
    except ValueError:
        raise ValueError(f"unknown role {value!r}; use one of: {', '.join(r.value for r in Role)}") from None


def role_allows(held: Role, required: tuple[Role, ...]) -> bool:
    """Whether a token holding ``held`` may call an endpoint that requires any of ``required``."""
    return held is Role.admin or held in required
