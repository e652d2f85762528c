"""Reference data shared by the cohort, ingest and features: code systems, regions, LOINC and the tariff list.

Kept in one place so that the generator and the validator cannot disagree about what a valid code is.
"""

from __future__ import annotations

from dataclasses import dataclass

# --- code and identifier systems -------------------------------------------------------------------------------
ICD10 = "http://hl7.org/fhir/sid/icd-10"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
SNOMED = "http://snomed.info/sct"
TARIFF = "https://shipa.kz/fhir/CodeSystem/tariff"
ATC = "http://www.whocc.no/atc"
DICOM_DCM = "http://dicom.nema.org/resources/ontology/DCM"
ENCOUNTER_CLASS = "http://terminology.hl7.org/CodeSystem/v3-ActCode"

IIN_SYSTEM = "https://shipa.kz/fhir/sid/iin"
# The IIN systems when none are configured (ingest.iin_systems lists a hospital's own).
DEFAULT_IIN_SYSTEMS: frozenset[str] = frozenset({IIN_SYSTEM})
ORG_ID_SYSTEM = "https://shipa.kz/fhir/sid/org"  # the Fund's provider registry number
PRACTITIONER_ID_SYSTEM = "https://shipa.kz/fhir/sid/practitioner"
CLAIM_ID_SYSTEM = "https://shipa.kz/fhir/sid/claim"
FSMS_ORG_IDENTIFIER = "FSMS"  # identifier value of the Social Health Insurance Fund (payor / insurer)
REGION_EXTENSION = "https://shipa.kz/fhir/StructureDefinition/region"
ORG_TYPE_EXTENSION = "https://shipa.kz/fhir/StructureDefinition/organization-kind"

# Systems a resource type's main code must come from (checked at ingest).
EXPECTED_CODE_SYSTEMS: dict[str, tuple[str, ...]] = {
    "Condition": (ICD10,),
    "Observation": (LOINC,),
    "DiagnosticReport": (LOINC,),
    "Procedure": (TARIFF, SNOMED),
    "MedicationRequest": (ATC,),
}

# --- regions ----------------------------------------------------------------------------------------------------
# code -> (English, Kazakh, Russian). 17 regions and 3 cities of republican significance.
REGIONS: dict[str, tuple[str, str, str]] = {
    "AST": ("Astana", "Астана", "Астана"),
    "ALA": ("Almaty", "Алматы", "Алматы"),
    "SHY": ("Shymkent", "Шымкент", "Шымкент"),
    "ABA": ("Abai", "Абай облысы", "Абайская область"),
    "AKM": ("Akmola", "Ақмола облысы", "Акмолинская область"),
    "AKT": ("Aktobe", "Ақтөбе облысы", "Актюбинская область"),
    "ALM": ("Almaty region", "Алматы облысы", "Алматинская область"),
    "ATY": ("Atyrau", "Атырау облысы", "Атырауская область"),
    "VOS": ("East Kazakhstan", "Шығыс Қазақстан облысы", "Восточно-Казахстанская область"),
    "ZHA": ("Jambyl", "Жамбыл облысы", "Жамбылская область"),
    "ZHT": ("Jetisu", "Жетісу облысы", "Область Жетісу"),
    "KAR": ("Karaganda", "Қарағанды облысы", "Карагандинская область"),
    "KUS": ("Kostanay", "Қостанай облысы", "Костанайская область"),
    "KZY": ("Kyzylorda", "Қызылорда облысы", "Кызылординская область"),
    "MAN": ("Mangystau", "Маңғыстау облысы", "Мангистауская область"),
    "SEV": ("North Kazakhstan", "Солтүстік Қазақстан облысы", "Северо-Казахстанская область"),
    "PAV": ("Pavlodar", "Павлодар облысы", "Павлодарская область"),
    "YUZ": ("Turkistan", "Түркістан облысы", "Туркестанская область"),
    "ULY": ("Ulytau", "Ұлытау облысы", "Область Улытау"),
    "ZAP": ("West Kazakhstan", "Батыс Қазақстан облысы", "Западно-Казахстанская область"),
}

# --- LOINC observations -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Loinc:
    """An observation Shipa uses: LOINC code, display, UCUM unit and a plausible range (for ingest checks)."""

    code: str
    display: str
    unit: str
    low: float
    high: float


LOINC_CODES: dict[str, Loinc] = {
    o.code: o
    for o in (
        Loinc("8310-5", "Body temperature", "Cel", 30.0, 44.0),
        Loinc("8867-4", "Heart rate", "/min", 20.0, 250.0),
        Loinc("9279-1", "Respiratory rate", "/min", 4.0, 80.0),
        Loinc("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "%", 50.0, 100.0),
        Loinc("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*3/uL", 0.5, 80.0),
        Loinc("1988-5", "C reactive protein [Mass/volume] in Serum or Plasma", "mg/L", 0.0, 500.0),
        Loinc("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL", 20.0, 1000.0),
        Loinc("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", 3.0, 20.0),
        Loinc("8480-6", "Systolic blood pressure", "mm[Hg]", 50.0, 260.0),
        Loinc("8462-4", "Diastolic blood pressure", "mm[Hg]", 30.0, 160.0),
        Loinc("36643-5", "XR Chest 2 Views", "", 0.0, 0.0),
    )
}
RADIOLOGY_REPORT_LOINC = "36643-5"

# --- the tariff list of the synthetic cohort (codes and prices in KZT) --------------------------------------------


@dataclass(frozen=True)
class Tariff:
    """A billable service: code, English name, price in KZT, kind and, for packages, their components."""

    code: str
    name: str
    price_kzt: int
    kind: str  # visit | lab | imaging | inpatient | package | procedure
    components: tuple[str, ...] = ()


TARIFFS: dict[str, Tariff] = {
    t.code: t
    for t in (
        Tariff("A01", "General practitioner consultation", 4_500, "visit"),
        Tariff("A02", "Specialist consultation", 7_800, "visit"),
        Tariff("A03", "Complex specialist consultation", 14_500, "visit"),
        Tariff("A04", "Emergency department visit", 12_000, "visit"),
        Tariff("L01", "Complete blood count", 2_100, "lab"),
        Tariff("L02", "C-reactive protein", 2_900, "lab"),
        Tariff("L03", "Blood glucose", 1_200, "lab"),
        Tariff("L04", "Glycated haemoglobin (HbA1c)", 4_300, "lab"),
        Tariff("I01", "Chest radiograph, two views", 6_500, "imaging"),
        Tariff("H01", "Inpatient bed-day, general ward", 28_000, "inpatient"),
        Tariff("H02", "Inpatient bed-day, intensive care", 95_000, "inpatient"),
        Tariff(
            "P01",
            "Pneumonia work-up package (consultation, CBC, CRP, chest radiograph)",
            15_000,
            "package",
            ("A02", "L01", "L02", "I01"),
        ),
        Tariff(
            "P02", "Diabetes review package (consultation, glucose, HbA1c)", 9_800, "package", ("A02", "L03", "L04")
        ),
        Tariff("R01", "Pulse oximetry and oxygen therapy, per day", 3_400, "procedure"),
        Tariff("R02", "Nebuliser therapy session", 2_600, "procedure"),
    )
}

# Services a documented diagnosis supports; billing outside this set for the claim's diagnosis is an upcoding signal.
# The "upcoded" alternative of each service is the pricier code of the same kind.
UPCODE_TO: dict[str, str] = {"A01": "A02", "A02": "A03", "H01": "H02"}

# --- ICD-10 codes of the cohort ---------------------------------------------------------------------------------
ICD10_CODES: dict[str, str] = {
    "J18.9": "Pneumonia, unspecified organism",
    "J15.9": "Bacterial pneumonia, unspecified",
    "J12.9": "Viral pneumonia, unspecified",
    "J06.9": "Acute upper respiratory infection, unspecified",
    "J20.9": "Acute bronchitis, unspecified",
    "I10": "Essential (primary) hypertension",
    "E11.9": "Type 2 diabetes mellitus without complications",
    "R05": "Cough",
    "Z00.0": "General adult medical examination",
    "J44.9": "Chronic obstructive pulmonary disease, unspecified",
}
PNEUMONIA_PREFIXES = ("J12", "J13", "J14", "J15", "J16", "J17", "J18")

# ICD-10 format check used by ingest: letter, two digits, optional dot and 1-4 characters.
ICD10_PATTERN = r"^[A-TV-Z][0-9][0-9AB](\.[0-9A-Z]{1,4})?$"
LOINC_PATTERN = r"^[0-9]{1,7}-[0-9]$"
