"""Typed configuration: one frozen pydantic model per ``params.yaml`` section, and settings from the environment.

Only ``stages/``, ``cli.py`` and ``service/`` import this module; library code takes plain arguments.
A mistyped or unknown key stops the stage with a :class:`ConfigError` naming the key and the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipelines import codes

DEFAULT_PARAMS = Path("params.yaml")

# The demo pseudonymisation key: documented in the README and accepted only for the built-in cohort.
DEMO_PSEUDONYM_KEY = "shipa-demo-key-not-for-real-data"


# Field markers read by pipelines/stage_deps.py when it lists each DVC stage's params key by key: a speed-only field
# changes how fast a stage runs, never its output, so DVC must not rerun the stage for it; an ``only`` field of a
# section shared by the per-model stages is read by that model's stage alone.
SPEED: dict[str, Any] = {"speed_only": True}
DIAGNOSIS_ONLY: dict[str, Any] = {"only": "diagnosis"}
FRAUD_ONLY: dict[str, Any] = {"only": "fraud"}


class ConfigError(ValueError):
    """A params file or environment setting that cannot be used; the message names the key and the file."""


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FraudRates(_Section):
    """Share of all claims injected with each fraud pattern (see docs/cohort.md)."""

    phantom_billing: float = Field(0.006, ge=0, le=0.2)
    upcoding: float = Field(0.006, ge=0, le=0.2)
    unbundling: float = Field(0.005, ge=0, le=0.2)
    duplicate_claim: float = Field(0.005, ge=0, le=0.2)
    services_after_death: float = Field(0.003, ge=0, le=0.2)
    excessive_volume: float = Field(0.005, ge=0, le=0.2)
    collusion_ring: float = Field(0.004, ge=0, le=0.2)

    def total(self) -> float:
        """Sum of all pattern rates."""
        return float(sum(self.model_dump().values()))


class LabelledShares(_Section):
    """Share of each pattern's fraudulent claims that the Fund's audits find where they look (docs/cohort.md).

    Registry checks (duplicate_claim, services_after_death) look at every provider; record reviews (the other
    patterns) only at the audited providers (``synthesize.audited_provider_share``).
    """

    phantom_billing: float = Field(0.3, ge=0, le=1)
    upcoding: float = Field(0.6, ge=0, le=1)
    unbundling: float = Field(0.6, ge=0, le=1)
    duplicate_claim: float = Field(0.85, ge=0, le=1)
    services_after_death: float = Field(0.9, ge=0, le=1)
    excessive_volume: float = Field(0.1, ge=0, le=1)
    collusion_ring: float = Field(0.1, ge=0, le=1)

    @model_validator(mode="before")
    @classmethod
    def _one_number(cls, data: Any) -> Any:
        # One number gives every pattern the same share (unbiased audits).
        if isinstance(data, int | float) and not isinstance(data, bool):
            return dict.fromkeys(cls.model_fields, float(data))
        return data


class DirtyRates(_Section):
    """Share of records (of the kind each defect applies to) injected with each data-quality defect."""

    missing_required_field: float = Field(0.002, ge=0, le=0.2)
    invalid_code: float = Field(0.002, ge=0, le=0.2)
    invalid_date: float = Field(0.001, ge=0, le=0.2)
    implausible_date: float = Field(0.001, ge=0, le=0.2)
    iin_checksum: float = Field(0.003, ge=0, le=0.2)
    iin_mismatch: float = Field(0.003, ge=0, le=0.2)
    dangling_reference: float = Field(0.001, ge=0, le=0.2)
    duplicate: float = Field(0.002, ge=0, le=0.2)
    invalid_json: float = Field(0.0005, ge=0, le=0.2)
    dicom_unreadable: float = Field(0.005, ge=0, le=0.2)
    dicom_not_dicom: float = Field(0.002, ge=0, le=0.2)
    dicom_no_pixels: float = Field(0.003, ge=0, le=0.2)


class SynthesizeParams(_Section):
    """Parameters of the ``synthesize`` stage (the built-in synthetic national cohort)."""

    seed: int = 20250101
    n_patients: int = Field(4000, ge=1, le=10_000_000)
    format: Literal["ndjson", "bundle"] = "ndjson"
    gzip: bool = False
    start_date: str = "2023-01-01"
    months: int = Field(24, ge=1, le=240)
    n_organizations: int = Field(40, ge=3)
    practitioners_per_organization: int = Field(8, ge=1)
    imaging_rate: float = Field(0.4, ge=0, le=1, description="share of patients with a chest radiograph study")
    pneumonia_rate: float = Field(0.35, ge=0, le=1, description="pneumonia prevalence among imaged patients")
    image_size: int = Field(256, ge=32, le=4096, description="side of the generated radiographs in pixels")
    deceased_rate: float = Field(0.03, ge=0, le=1)
    fraud_provider_share: float = Field(0.15, gt=0, le=1, description="share of organizations that commit fraud")
    labelled_share: LabelledShares = Field(
        LabelledShares(), description="per pattern, share of fraudulent claims audits find where they look"
    )
    audited_provider_share: float = Field(
        0.6, ge=0, le=1, description="share of providers whose records audits review (registry checks: all)"
    )
    fraud: FraudRates = FraudRates()
    dirty: DirtyRates = DirtyRates()

    @model_validator(mode="after")
    def _fraud_total(self) -> SynthesizeParams:
        if self.fraud.total() > 0.25:
            raise ValueError(f"fraud rates sum to {self.fraud.total():.3f}; keep them under 0.25")
        return self


# Findings that ``ingest.strict`` may raise to errors (docs/raw-data.md classifies every check).
StrictFinding = Literal["dangling_reference", "implausible_date", "unmapped_code", "missing_table_field", "content_id"]


class IngestParams(_Section):
    """Parameters of the ``ingest`` stage."""

    workers: int = Field(0, ge=0, description="processes for validation; 0 means one per core", json_schema_extra=SPEED)
    chunk_size: int = Field(2000, ge=1, description="resources per work unit sent to a worker", json_schema_extra=SPEED)
    image_size: int = Field(128, ge=16, le=2048, description="side of the stored, resampled image arrays")
    max_queue: int = Field(4, ge=1, description="chunks in flight per worker (bounds memory)", json_schema_extra=SPEED)
    iin_systems: tuple[str, ...] = Field(
        (codes.IIN_SYSTEM,),
        min_length=1,
        description="identifier systems whose values are IINs (checked, and pseudonymised as the DICOM PatientID is)",
    )
    strict: tuple[StrictFinding, ...] = Field(
        (), description="data-quality findings raised to errors: the resource is quarantined instead of kept"
    )

    @model_validator(mode="after")
    def _distinct(self) -> IngestParams:
        for name in ("iin_systems", "strict"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ValueError(f"ingest.{name} lists a value twice")
        return self


DEFAULT_OBSERVATIONS: dict[str, str] = {
    "temperature": "8310-5",
    "heart_rate": "8867-4",
    "respiratory_rate": "9279-1",
    "spo2": "59408-5",
    "wbc": "6690-2",
    "crp": "1988-5",
    "glucose": "2345-7",
    "hba1c": "4548-4",
}


class DiagnosisFeaturesParams(_Section):
    """The diagnosis task (a second task on the same data needs only another section like this)."""

    task: str = Field("pneumonia", pattern=r"^[a-z0-9][a-z0-9-]*$")
    icd10_prefixes: tuple[str, ...] = ("J12", "J13", "J14", "J15", "J16", "J17", "J18")
    label_source: Literal["condition", "report", "either"] = "condition"
    modalities: tuple[str, ...] = ("CR", "DX")
    lookback_hours: float = Field(72.0, gt=0)
    observations: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_OBSERVATIONS))
    val_share: float = Field(0.15, gt=0, lt=0.5)
    test_share: float = Field(0.2, gt=0, lt=0.5)
    split_file: str | None = Field(None, description="CSV patient_id,split honoured exactly instead of a split")
    split_ids: Literal["pseudonym", "source_id", "iin"] = Field(
        "pseudonym",
        description=(
            "what split_file's patient_id holds: the tables' pseudonym, the export's own Patient.id, or the IIN "
            "(both pseudonymised with the ingest key)"
        ),
    )
    seed: int = 42


class FraudSplitParams(_Section):
    """How claims are split: by time (train on earlier months) or by provider."""

    kind: Literal["temporal", "provider"] = "temporal"
    test_months: int = Field(8, ge=1)
    val_months: int = Field(2, ge=1)
    gap_days: int = Field(30, ge=0)
    seed: int = 0


class FraudFeaturesParams(_Section):
    """Windows and thresholds of the claim features (see pipelines/features/fraud.py)."""

    duplicate_days: int = Field(7, ge=0)
    trace_days: int = Field(1, ge=0)
    peer_min_count: int = Field(5, ge=1)
    peer_window_days: int | None = Field(365, ge=1)
    graph_window_days: int = Field(365, ge=1)
    near_days: int = Field(90, ge=1)
    cycle_days: int = Field(180, ge=1)
    min_shared: int = Field(3, ge=1)
    timezone: str = Field("+05:00", pattern=r"^[+-][0-9]{2}:[0-9]{2}$")
    split: FraudSplitParams = FraudSplitParams()


class FeaturesParams(_Section):
    """Parameters of the ``features`` stage, one subsection per model."""

    diagnosis: DiagnosisFeaturesParams = DiagnosisFeaturesParams()
    fraud: FraudFeaturesParams = FraudFeaturesParams()


class DiagnosisTrainParams(_Section):
    """Training of the diagnosis models (see pipelines/modeling/options.py for each option's meaning)."""

    seed: int = 42
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$")
    modes: tuple[Literal["fused", "image", "ehr"], ...] = ("fused", "image", "ehr")
    network: str = "densenet-tiny"
    image_size: int = Field(64, ge=16, le=1024)
    embed_dim: int = Field(32, ge=1)
    ehr_hidden: int = Field(32, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    epochs: int = Field(12, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    scheduler: Literal["cosine", "onecycle", "none"] = "cosine"
    patience: int = Field(4, ge=1)
    augment: bool = True
    cache: bool = Field(True, description="keep decoded images in memory", json_schema_extra=SPEED)
    num_workers: int = Field(0, ge=0, json_schema_extra=SPEED)
    num_threads: int = Field(0, ge=0, description="torch threads on CPU; 0 = one per core", json_schema_extra=SPEED)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    compile: bool = False


class GbmParams(_Section):
    """The gradient-boosted trees baseline (scikit-learn HistGradientBoosting)."""

    max_iter: int = Field(300, ge=1)
    learning_rate: float = Field(0.05, gt=0)
    max_leaf_nodes: int = Field(31, ge=2)
    l2_regularization: float = Field(1.0, ge=0)
    min_category_count: int = Field(5, ge=1)


class FraudTrainParams(_Section):
    """The fraud model (embeddings + monotone MLP, combined with an isolation-forest anomaly score)."""

    seed: int = 0
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$")
    hidden: tuple[int, ...] = (64, 32)
    embedding_dim: int = Field(4, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(512, ge=1)
    lr: float = Field(0.003, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    pos_weight: float | None = Field(None, gt=0, description="null = sqrt(negatives / positives)")
    focal_gamma: float = Field(0.0, ge=0)
    patience: int = Field(0, ge=0, description="0 = no early stopping (audit labels are positive-unlabelled)")
    iforest_trees: int = Field(200, ge=1)
    iforest_max_samples: int = Field(2048, ge=2)
    anomaly_weight: float = Field(0.5, ge=0)
    anomaly_margin: float = 2.0
    unlabelled_discount: float = Field(
        3.0, ge=0, description="weight of an unlabelled training claim: exp(-d * max(0, anomaly_z - margin))"
    )
    min_category_count: int = Field(5, ge=1)
    monotone: bool = True
    gbm: GbmParams = GbmParams()


class TrainParams(_Section):
    """Parameters of the ``train`` stage, one subsection per model."""

    diagnosis: DiagnosisTrainParams = DiagnosisTrainParams()
    fraud: FraudTrainParams = FraudTrainParams()


class EvaluateParams(_Section):
    """Parameters of the ``evaluate`` stage (shared by every model)."""

    seed: int = 42
    n_boot: int = Field(1000, ge=0)
    ci_level: float = Field(0.95, gt=0.5, lt=1)
    calibration_bins: int = Field(10, ge=2)
    min_group_size: int = Field(30, ge=1, json_schema_extra=DIAGNOSIS_ONLY)
    threshold_rule: Literal["youden", "target_sensitivity"] = Field("youden", json_schema_extra=DIAGNOSIS_ONLY)
    target_sensitivity: float = Field(0.9, gt=0, lt=1, json_schema_extra=DIAGNOSIS_ONLY)
    subgroups: tuple[str, ...] = Field(("sex", "age_band", "region", "facility_id"), json_schema_extra=DIAGNOSIS_ONLY)
    fraud_k: int = Field(
        150, ge=1, description="fraud review-queue size for precision/recall/money@k", json_schema_extra=FRAUD_ONLY
    )
    ood_max_false_refusal: float = Field(
        0.01,
        gt=0,
        lt=1,
        description="image OOD score: share of in-domain studies it may refuse (its threshold targets half)",
        json_schema_extra=DIAGNOSIS_ONLY,
    )
    ood_min_catch: float = Field(
        0.95,
        gt=0,
        le=1,
        description="image OOD score: share of other-modality calibration images it should refuse",
        json_schema_extra=DIAGNOSIS_ONLY,
    )


class GateParams(_Section):
    """Promotion-gate rules of one model (see pipelines/tracking/gate.py); null skips an optional check."""

    primary_metric: str = Field("auroc", description="key of the report's metrics: auroc, auprc, precision_at_<k>")
    min_primary_low: float = Field(0.75, ge=0, le=1, description="minimum lower CI bound of the primary metric")
    max_ece: float | None = Field(0.1, ge=0, description="maximum expected calibration error")
    max_subgroup_gap: float | None = Field(0.2, ge=0, description="maximum gap of gap_metric between subgroups")
    gap_metric: str | None = Field(None, description="metric whose subgroup gap is checked; null = primary")
    champion_tolerance: float = Field(0.02, ge=0, description="how far below the champion a candidate may score")


class DiagnosisRegisterParams(_Section):
    """Registration of the diagnosis model (the mode that ``evaluate`` reported in metrics.json)."""

    gate: GateParams = GateParams()


class RiskBandsParams(_Section):
    """Score cut-offs of the qualitative fraud risk the service shows: low < moderate <= moderate-risk < high."""

    moderate: float = Field(0.1, gt=0, lt=1)
    high: float = Field(0.5, gt=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> RiskBandsParams:
        if not self.moderate < self.high:
            raise ValueError("moderate must be below high")
        return self


class FraudRegisterParams(_Section):
    """Registration of the fraud model (its report has no subgroups, so no gap check by default)."""

    gate: GateParams = GateParams(primary_metric="auprc", min_primary_low=0.5, max_ece=0.05, max_subgroup_gap=None)
    risk_bands: RiskBandsParams = RiskBandsParams()


class RegisterParams(_Section):
    """Parameters of the ``register`` stage, one subsection per model."""

    diagnosis: DiagnosisRegisterParams = DiagnosisRegisterParams()
    fraud: FraudRegisterParams = FraudRegisterParams()


_SECTIONS: dict[str, type[_Section]] = {
    "synthesize": SynthesizeParams,
    "ingest": IngestParams,
    "features": FeaturesParams,
    "train": TrainParams,
    "evaluate": EvaluateParams,
    "register": RegisterParams,
}

S = TypeVar("S", bound=_Section)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"{path}: params file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of stage sections")
    return data


def _format_error(path: Path, section: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in (section, *err["loc"]))
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown key '{key}'")
        else:
            parts.append(f"key '{key}': {err['msg']}")
    return f"{path}: " + "; ".join(parts)


def load_section(model: type[S], section: str, path: Path | None = DEFAULT_PARAMS) -> S:
    """Load and validate one section of a params file.

    Args:
        model: the pydantic model of that section.
        section: the section's key in the file (the stage name).
        path: the params file; None means no file: the section's built-in defaults.

    Raises:
        ConfigError: the file is missing or malformed, or a key is unknown or of the wrong type.
    """
    if path is None:
        return model()
    data = _read_yaml(path)
    unknown = sorted(set(data) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown section '{unknown[0]}' (known: {', '.join(_SECTIONS)})")
    raw = data.get(section) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: section '{section}' must be a mapping")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_error(path, section, exc)) from None


def validate_all(path: Path | None = DEFAULT_PARAMS) -> dict[str, _Section]:
    """Validate every known section of a params file (used by ``shipa check-params``); None: the built-in defaults."""
    return {name: load_section(model, name, path) for name, model in _SECTIONS.items()}


class Settings(BaseSettings):
    """Deployment settings and secrets, read from the environment (prefix ``SHIPA_``), never from params.yaml."""

    model_config = SettingsConfigDict(env_prefix="SHIPA_", extra="ignore", frozen=True)

    pseudonym_key: str | None = Field(
        None, description="HMAC key for pseudonyms; unset means the demo key (built-in cohort only)"
    )
    log_level: str = "INFO"
    pipeline_run_id: str | None = Field(
        None, description="groups the MLflow runs of one pipeline run (make run sets one per invocation)"
    )
    mlflow_experiment: str = "shipa"


def get_settings() -> Settings:
    """Read settings from the environment now (never at import time)."""
    return Settings()


def mlflow_tracking_uri(root: Path | None = None) -> str:
    """The MLflow tracking URI: ``MLFLOW_TRACKING_URI`` or an sqlite file at the repository root."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    base = (root or Path.cwd()).resolve()
    return f"sqlite:///{base / 'mlflow.db'}"


@dataclass(frozen=True)
class FieldMeta:
    """What ``pipelines/stage_deps.py`` needs to know of a params field (see :data:`SPEED`)."""

    speed_only: bool
    only: str | None


def section_fields(path: str) -> dict[str, FieldMeta]:
    """The first-level fields of a params section (``"train.fraud"``, ``"evaluate"``), in declaration order.

    Raises:
        KeyError: no such section or subsection.
    """
    head, *rest = path.split(".")
    model: type[BaseModel] = _SECTIONS[head]
    for name in rest:
        annotation = model.model_fields[name].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            raise KeyError(path)
        model = annotation
    out: dict[str, FieldMeta] = {}
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        only = extra.get("only")
        out[name] = FieldMeta(speed_only=bool(extra.get("speed_only")), only=str(only) if only else None)
    return out
