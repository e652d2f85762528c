"""The served models: the ``champion`` of each registered diagnosis model and of ``shipa-fraud``.

:class:`MlflowModelSource` implements the service's ``ModelSource`` protocol. It loads each champion once
per worker (downloaded to the service's state folder, loaded as the registered pyfunc) into an immutable
:class:`ModelSet`. A reload builds a new set beside the old one and swaps the reference in one assignment: a
request takes one snapshot when it starts and finishes on it, so no request is dropped or sees two versions. A
model whose champion did not move is reused, not reloaded; one that fails to load keeps its previous version.

A diagnosis champion is served only with the input domain recorded at registration (the pyfunc artifact
``input_domain``, else the MLmodel metadata ``input_domain``) and, when it reads the image, with its image
out-of-distribution score (the artifact ``image_ood``): without them it is not loaded, the reason is logged and
listed in ``ready()["problems"]`` (and in ``reason`` when nothing else is served).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
from fastapi import Depends, Request

from pipelines.codes import DEFAULT_IIN_SYSTEMS
from pipelines.fhir.pseudonym import Pseudonymizer
from pipelines.fraud.worklist import RiskBands
from pipelines.imaging.domain import InputDomain, InputDomainError
from pipelines.service.errors import FhirHTTPError
from pipelines.service.fhir_out import ModelRef

if TYPE_CHECKING:
    import pandas as pd
    import polars as pl

    from pipelines.features.fraud import FraudFeatureOptions
    from pipelines.features.fraud_engine import FraudHistory
    from pipelines.modeling.fraud_model import FraudScorer
    from pipelines.service.fraud_history import HistorySource
    from pipelines.service.gradcam import SaliencyExplainer
    from pipelines.tracking.pyfunc_diagnosis import DiagnosisPredictor
    from pipelines.tracking.serving import LoadedVersion

log = logging.getLogger(__name__)

DIAGNOSIS_PREFIX = "shipa-diagnosis-"
FRAUD_MODEL = "shipa-fraud"
CHAMPION = "champion"


class NotServableError(Exception):
    """A diagnosis version without what serving it safely needs (a valid recorded input domain and, for a model
    that reads the pixels, an image out-of-distribution score): the service does not serve it."""


@dataclass(frozen=True)
class DiagnosisModel:
    """A served diagnosis champion.

    Attributes:
        loaded: the registered pyfunc (it answers every prediction).
        predictor: the same artifacts loaded with :func:`~pipelines.tracking.pyfunc_diagnosis.load_predictor`:
            threshold, scaler and network metadata (its network is the Grad-CAM explainer's own copy).
        features: the model's ``features.json`` (task, observations by LOINC, lookback, scaler).
        ingest_image_size: the side ingest resamples images to before the model's own preprocessing.
        input_domain: the DICOM headers the model may be used on (recorded at registration); every uploaded
            header is checked against it before any pixel is decoded
            (:func:`pipelines.service.input_domain.require_in_domain`).
        explainer: Grad-CAM on the image branch (None for an EHR-only model).
    """

    loaded: LoadedVersion
    predictor: DiagnosisPredictor
    features: dict[str, Any]
    ingest_image_size: int
    input_domain: InputDomain
    explainer: SaliencyExplainer | None = None

    @property
    def ref(self) -> ModelRef:
        """Name, version and alias."""
        return ModelRef(self.loaded.name, self.loaded.version, self.loaded.alias)

    @property
    def task(self) -> str:
        """The task (``pneumonia``)."""
        return str(self.features["task"])

    @property
    def observations(self) -> dict[str, str]:
        """EHR feature name -> LOINC code."""
        return {str(k): str(v) for k, v in (self.features.get("observations") or {}).items()}

    @property
    def lookback_hours(self) -> float:
        """How far before the study an observation may be."""
        return float(self.features.get("lookback_hours", 72.0))

    @property
    def icd10_prefixes(self) -> tuple[str, ...]:
        """The ICD-10 codes that define the task."""
        return tuple(str(p) for p in self.features.get("icd10_prefixes") or ())

    @property
    def uses_image(self) -> bool:
        """Whether the model reads the radiograph."""
        return self.predictor.meta.mode != "ehr"

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``probability`` and ``positive`` per row, from the registered pyfunc (columns: see its module)."""
        out: pd.DataFrame = self.loaded.python_model.predict(None, frame)
        return out

    def ehr_inputs(self, raw: Mapping[str, float | None]) -> np.ndarray | None:
        """The network's EHR input row ``(1, n)`` for raw values, as the pyfunc builds it (None if unused)."""
        from pipelines.features.diagnosis import ehr_columns, ehr_matrix

        meta, scaler = self.predictor.meta, self.predictor.scaler
        if not meta.ehr_columns:
            return None
        values, flags = ehr_matrix({f: [raw.get(f)] for f in scaler.features}, scaler)
        value_cols, flag_cols = ehr_columns(scaler.features)
        by_name = dict(zip([*value_cols, *flag_cols], np.concatenate([values, flags], axis=1)[0], strict=True))
        return np.asarray([[by_name[c] for c in meta.ehr_columns]], dtype=np.float32)


@dataclass(frozen=True)
class FraudModel:
    """The served fraud champion.

    Attributes:
        loaded: the registered pyfunc (scores and reasons).
        options: the windows and thresholds the claim features are computed with (as in training).
        bands: cut-offs of the qualitative risk.
        history: the Fund's claims history the claims are scored against, built with ``options``.
    """

    loaded: LoadedVersion
    options: FraudFeatureOptions
    bands: RiskBands
    history: FraudHistory

    @property
    def ref(self) -> ModelRef:
        """Name, version and alias."""
        return ModelRef(self.loaded.name, self.loaded.version, self.loaded.alias)

    @functools.cached_property
    def scorer(self) -> FraudScorer | None:
        """The fraud scorer inside the registered pyfunc (None for a pyfunc of another kind)."""
        from pipelines.tracking.pyfunc_fraud import FraudPyfunc

        wrapper = self.loaded.python_model
        return wrapper.scorer if isinstance(wrapper, FraudPyfunc) else None

    @functools.cached_property
    def input_names(self) -> tuple[str, ...] | None:
        """The columns of the pyfunc's input schema (None without a schema)."""
        schema = self.loaded.pyfunc.metadata.get_input_schema()
        return tuple(schema.input_names()) if schema is not None else None

    @functools.cached_property
    def rows_independent(self) -> bool:
        """Whether each record's score and reasons are independent of the other records scored with it.

        True when the attribution baseline of every feature the reasons occlude was saved with the model (else
        it is the median of the records scored together): only then may claims of different requests share a
        model call.
        """
        from pipelines.features.fraud import FEATURE_GROUPS

        scorer = self.scorer
        if scorer is None:
            return False
        saved = getattr(scorer, "reference", None) or {}
        used = set(scorer.feature_names)
        return all(c in saved for cols in FEATURE_GROUPS.values() for c in cols if c in used)

    def _inputs(self, records: pl.DataFrame) -> pl.DataFrame:
        if self.input_names is None:
            return records
        present = set(records.columns)
        return records.select([c for c in self.input_names if c in present])

    def score(self, records: pl.DataFrame) -> ClaimScores:
        """Probability and reasons of each claim record, as the registered pyfunc computes them.

        A fraud pyfunc's scorer is called directly on the records (what its ``predict`` runs, without MLflow's
        pandas conversion and schema enforcement); another pyfunc goes through ``predict``.
        """
        from pipelines.fraud.rules import evaluate_rules
        from pipelines.tracking.pyfunc_fraud import score_records

        scorer = self.scorer
        if scorer is not None:
            # The scorer reads its features and the context columns its reasons quote, by name: other columns
            # (the claim and patient ids) are ignored, so the records need no narrowing to the input schema.
            scored = score_records(scorer, records)
            return ClaimScores(
                [float(p) for p in scored.probabilities],
                [tuple(r.as_dict() for r in claim) for claim in scored.reasons],
                [tuple(h.as_dict() for h in claim) for claim in scored.rule_hits],
            )
        out: pd.DataFrame = self.loaded.pyfunc.predict(self._inputs(records).to_pandas())
        # Rule hits read the records alone (deterministic evidence, whatever the model), with their sentences.
        hits = [tuple(h.as_dict() for h in claim) for claim in evaluate_rules(records)]
        return ClaimScores([float(p) for p in out["probability"]], [self.reasons(r) for r in out["reasons"]], hits)

    @staticmethod
    def reasons(row_reasons: Any) -> tuple[dict[str, Any], ...]:
        """The reasons of one output row as dicts (the pyfunc returns them as JSON text)."""
        if isinstance(row_reasons, str):
            parsed = json.loads(row_reasons) if row_reasons else []
        else:
            parsed = list(row_reasons or [])
        return tuple(dict(r) for r in parsed if isinstance(r, Mapping))


@dataclass(frozen=True)
class ClaimScores:
    """The fraud model's answer for claim records, in row order.

    Attributes:
        probabilities: the calibrated probability of each record (no rule changes it).
        reasons: per record, its reasons as dicts (``code``, ``group``, ``weight``, ``kk``, ``ru``, ``en``).
        rule_hits: per record, the deterministic rules it hits as dicts (``code``, ``pattern``, ``kk``, ``ru``,
            ``en``), shown next to the probability.
    """

    probabilities: list[float]
    reasons: list[tuple[dict[str, Any], ...]]
    rule_hits: list[tuple[dict[str, Any], ...]]

    def __len__(self) -> int:
        return len(self.probabilities)

    def rows(self, start: int, stop: int) -> ClaimScores:
        """Records ``start`` to ``stop`` (exclusive)."""
        return ClaimScores(self.probabilities[start:stop], self.reasons[start:stop], self.rule_hits[start:stop])


@dataclass(frozen=True)
class ModelSet:
    """One consistent set of served models (never changed after it is built)."""

    diagnosis: Mapping[str, DiagnosisModel] = field(default_factory=dict)
    fraud: FraudModel | None = None
    problems: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        """No model is loaded."""
        return not self.diagnosis and self.fraud is None

    def refs(self) -> list[ModelRef]:
        """The served models, diagnosis tasks first (sorted), then fraud."""
        out = [self.diagnosis[t].ref for t in sorted(self.diagnosis)]
        if self.fraud is not None:
            out.append(self.fraud.ref)
        return out

    def loaded_versions(self) -> list[LoadedVersion]:
        """The loaded pyfuncs, in :meth:`refs` order."""
        out = [self.diagnosis[t].loaded for t in sorted(self.diagnosis)]
        if self.fraud is not None:
            out.append(self.fraud.loaded)
        return out


def _read_json(path: Path) -> dict[str, Any]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{Path(path).name} is not a JSON object")
    return data


def build_diagnosis_model(
    loaded: LoadedVersion, *, ingest_image_size: int | None, device: str = "cpu", explain: bool = True
) -> DiagnosisModel:
    """A :class:`DiagnosisModel` around a loaded diagnosis pyfunc.

    Args:
        loaded: from :func:`pipelines.tracking.serving.load_version`.
        ingest_image_size: the ingest image side when the model metadata has no ``ingest_image_size`` (the
            registered value wins); None falls back on the model's own image size.
        device: where the Grad-CAM copy runs.
        explain: build the Grad-CAM explainer.

    Raises:
        NotServableError: the version has no valid recorded input domain, or reads the image without an image
            OOD score (it must not be served).
    """
    from pipelines.tracking import pyfunc_diagnosis as wrapper

    artifacts = loaded.artifacts
    domain = recorded_input_domain(loaded)
    served = loaded.python_model.predictor if isinstance(loaded.python_model, wrapper.DiagnosisPyfunc) else None
    if served is not None and served.meta.mode != "ehr" and served.image_ood is None:
        raise NotServableError(
            f"{loaded.name} version {loaded.version} reads the image but has no image out-of-distribution score "
            "(a study whose header lies would be scored): not served"
        )
    predictor = wrapper.load_predictor(
        artifacts[wrapper.ARTIFACT_MODEL],
        artifacts[wrapper.ARTIFACT_FEATURES],
        artifacts[wrapper.ARTIFACT_CALIBRATION],
        device=device,
        image_ood_path=artifacts.get(wrapper.ARTIFACT_IMAGE_OOD),
    )
    size = loaded.metadata.get("ingest_image_size") or ingest_image_size or predictor.meta.image_size
    explainer = None
    if explain and predictor.meta.mode != "ehr":
        from pipelines.service.gradcam import SaliencyExplainer

        explainer = SaliencyExplainer(predictor.model, copy_network=False)
    return DiagnosisModel(
        loaded=loaded,
        predictor=predictor,
        features=_read_json(artifacts[wrapper.ARTIFACT_FEATURES]),
        ingest_image_size=int(size),
        input_domain=domain,
        explainer=explainer,
    )


def recorded_input_domain(loaded: LoadedVersion) -> InputDomain:
    """The input domain registered with a diagnosis version: its ``input_domain`` artifact, else its metadata.

    Raises:
        NotServableError: neither is there, or the one there is not a valid domain.
    """
    from pipelines.tracking import pyfunc_diagnosis as wrapper

    where = f"{loaded.name} version {loaded.version}"
    path = loaded.artifacts.get(wrapper.ARTIFACT_INPUT_DOMAIN)
    try:
        if path is not None:
            return InputDomain.from_json(Path(path).read_bytes())
        recorded = loaded.metadata.get(wrapper.METADATA_INPUT_DOMAIN)
        if isinstance(recorded, Mapping):
            return InputDomain.from_dict(recorded)
    except (InputDomainError, OSError) as exc:
        raise NotServableError(f"{where} has an unusable input domain ({type(exc).__name__}): not served") from None
    raise NotServableError(f"{where} has no recorded input domain (what it may be used on is unknown): not served")


def build_fraud_model(
    loaded: LoadedVersion,
    *,
    options: FraudFeatureOptions | None,
    bands: RiskBands | None,
    histories: HistorySource | None = None,
) -> FraudModel:
    """A :class:`FraudModel` around a loaded fraud pyfunc.

    Feature options come from the model's metadata (``feature_options``) when it carries them, else
    ``options``, else the library defaults; bands from the metadata's ``risk_bands``, else ``bands``, else the
    defaults; the history from ``histories`` with those options (none: each request is its own history).
    """
    from pipelines.features.fraud import FraudFeatureOptions
    from pipelines.features.fraud_engine import FraudHistory

    meta = loaded.metadata
    if isinstance(meta.get("feature_options"), Mapping):
        options = FraudFeatureOptions(**meta["feature_options"])
    if isinstance(meta.get("risk_bands"), Mapping):
        bands = RiskBands(**meta["risk_bands"])
    options = options or FraudFeatureOptions()
    history = histories.get(options) if histories is not None else FraudHistory.empty(options)
    return FraudModel(loaded=loaded, options=options, bands=bands or RiskBands(), history=history)


class MlflowModelSource:
    """Loads the champion models from an MLflow registry and serves them to the routes.

    Args:
        tracking_uri: the MLflow store holding the registry.
        cache_dir: where model versions are downloaded (the service's state folder).
        diagnosis_tasks: tasks to serve (``shipa-diagnosis-<task>``); None serves every registered one.
        serve_fraud: serve ``shipa-fraud``.
        alias: the alias to follow.
        device: ``cpu`` or ``cuda[:N]`` for the networks.
        ingest_image_size: the ingest image side (see :func:`build_diagnosis_model`).
        fraud_options: claim feature options when the fraud model does not carry its own.
        risk_bands: fraud risk cut-offs when the fraud model does not carry its own.
        explain: compute Grad-CAM maps for diagnoses.
        histories: the Fund's claims history the fraud model scores against (None: none).
    """

    def __init__(
        self,
        *,
        tracking_uri: str,
        cache_dir: Path,
        diagnosis_tasks: Sequence[str] | None = None,
        serve_fraud: bool = True,
        alias: str = CHAMPION,
        device: str = "cpu",
        ingest_image_size: int | None = None,
        fraud_options: FraudFeatureOptions | None = None,
        risk_bands: RiskBands | None = None,
        explain: bool = True,
        histories: HistorySource | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.cache_dir = Path(cache_dir)
        self.diagnosis_tasks = tuple(diagnosis_tasks) if diagnosis_tasks is not None else None
        self.serve_fraud = serve_fraud
        self.alias = alias
        self.device = device
        self.ingest_image_size = ingest_image_size
        self.fraud_options = fraud_options
        self.risk_bands = risk_bands
        self.explain = explain
        self.histories = histories
        self._models = ModelSet(problems=("models are not loaded yet",))
        self._reload_lock = threading.Lock()

    def snapshot(self) -> ModelSet:
        """The current model set; a request uses one snapshot from start to end."""
        return self._models

    def _diagnosis_names(self) -> list[str]:
        from pipelines.tracking.serving import registered_names

        if self.diagnosis_tasks is not None:
            from pipelines.tracking.registry import diagnosis_model_name

            return [diagnosis_model_name(t) for t in self.diagnosis_tasks]
        return registered_names(DIAGNOSIS_PREFIX, tracking_uri=self.tracking_uri)

    def _load(self, name: str, current: LoadedVersion | None) -> LoadedVersion | None:
        """The champion of ``name``: the current one when the alias did not move; None when there is none."""
        from pipelines.tracking.serving import alias_target, load_version

        version = alias_target(name, self.alias, tracking_uri=self.tracking_uri)
        if version is None:
            return None
        if current is not None and current.version == version:
            return current
        return load_version(
            name,
            tracking_uri=self.tracking_uri,
            cache_dir=self.cache_dir,
            alias=self.alias,
            # The wrappers read "device" from their model config; MLflow warns when given one on CPU.
            model_config={"device": self.device} if self.device != "cpu" else None,
        )

    def _build(self, old: ModelSet) -> ModelSet:
        problems: list[str] = []
        diagnosis: dict[str, DiagnosisModel] = {}
        try:
            names = self._diagnosis_names()
        except Exception as exc:  # a registry that cannot be reached: keep what is served
            log.error("cannot list the registered diagnosis models: %s", type(exc).__name__)
            problems.append("the model registry cannot be reached")
            names = [f"{DIAGNOSIS_PREFIX}{t}" for t in old.diagnosis]
        by_name = {m.loaded.name: m for m in old.diagnosis.values()}
        for name in names:
            previous = by_name.get(name)
            try:
                loaded = self._load(name, previous.loaded if previous else None)
                if loaded is None:
                    problems.append(f"{name} has no {self.alias} version")
                    continue
                model = (
                    previous
                    if previous is not None and previous.loaded is loaded
                    else build_diagnosis_model(
                        loaded,
                        ingest_image_size=self.ingest_image_size,
                        device=self.device,
                        explain=self.explain,
                    )
                )
                diagnosis[model.task] = model
            except NotServableError as exc:
                log.error("%s", exc)
                problems.append(str(exc))
                if previous is not None:
                    diagnosis[previous.task] = previous
            except Exception as exc:
                log.error("loading %s failed: %s", name, type(exc).__name__)
                problems.append(f"{name} could not be loaded")
                if previous is not None:
                    diagnosis[previous.task] = previous
        fraud = None
        if self.serve_fraud:
            previous_fraud = old.fraud
            try:
                loaded = self._load(FRAUD_MODEL, previous_fraud.loaded if previous_fraud else None)
                if loaded is None:
                    problems.append(f"{FRAUD_MODEL} has no {self.alias} version")
                elif previous_fraud is not None and previous_fraud.loaded is loaded:
                    fraud = self._with_current_history(previous_fraud)
                else:
                    fraud = build_fraud_model(
                        loaded, options=self.fraud_options, bands=self.risk_bands, histories=self.histories
                    )
            except Exception as exc:
                log.error("loading %s failed: %s", FRAUD_MODEL, type(exc).__name__)
                problems.append(f"{FRAUD_MODEL} could not be loaded")
                fraud = previous_fraud
        return ModelSet(diagnosis=diagnosis, fraud=fraud, problems=tuple(problems))

    def _with_current_history(self, model: FraudModel) -> FraudModel:
        """The served fraud model with the history of the tables now on disk (itself when they did not change)."""
        if self.histories is None:
            return model
        history = self.histories.get(model.options)
        return model if history is model.history else dataclasses.replace(model, history=history)

    def reload(self) -> dict[str, Any]:
        """Load the current champions and swap them in atomically; returns :meth:`ready`."""
        with self._reload_lock:
            new = self._build(self._models)
            self._models = new  # one reference assignment: requests in flight keep their snapshot
            for ref in new.refs():
                log.info("serving %s version %s (%s)", ref.name, ref.version, ref.alias)
            for problem in new.problems:
                log.warning("model provider: %s", problem)
        return self.ready()

    def ready(self) -> dict[str, Any]:
        """``{"ready", "models": [{name, version, alias, ...}], "reason"?}``; ready when a model is served."""
        models = self.snapshot()
        entries: list[dict[str, Any]] = []
        for task in sorted(models.diagnosis):
            entries.append({**models.diagnosis[task].ref.as_dict(), "task": task, "kind": "diagnosis"})
        if models.fraud is not None:
            entries.append({**models.fraud.ref.as_dict(), "kind": "fraud"})
        state: dict[str, Any] = {"ready": not models.empty, "models": entries}
        if models.problems:
            state["problems"] = list(models.problems)
        if models.empty:
            state["reason"] = "; ".join(models.problems) or "no champion model is registered"
        return state

    def cards(self) -> list[dict[str, Any]]:
        """The logged model card of each served model (a minimal card when none was logged)."""
        out = []
        for loaded in self.snapshot().loaded_versions():
            card = dict(loaded.card) if loaded.card else {"name": loaded.name, "version": loaded.version}
            card.setdefault("name", loaded.name)
            card.setdefault("version", loaded.version)
            card["served_alias"] = loaded.alias
            out.append(card)
        return out


# --- dependencies of the model routes -----------------------------------------------------------------------


async def current_models(request: Request) -> ModelSet:
    """The provider's current model set (one snapshot per request); 503 without a serving provider."""
    provider = request.app.state.provider
    snapshot = getattr(provider, "snapshot", None)
    if provider is None or not callable(snapshot):
        raise FhirHTTPError(503, "transient", "no model provider is configured")
    models = snapshot()
    if not isinstance(models, ModelSet):
        raise FhirHTTPError(503, "transient", "the model provider returned an unusable state")
    return models


async def current_pseudonymizer(request: Request) -> Pseudonymizer:
    """The service's keyed pseudonymizer (the ingest key); 503 when the service was built without one."""
    pseudonymizer = getattr(request.app.state, "pseudonymizer", None)
    if not isinstance(pseudonymizer, Pseudonymizer):
        raise FhirHTTPError(503, "transient", "the service has no pseudonymisation key configured")
    return pseudonymizer


def current_iin_systems(request: Request) -> frozenset[str]:
    """The identifier systems whose values are IINs (ingest's ``iin_systems``, read at start-up)."""
    systems = getattr(request.app.state, "iin_systems", None)
    return systems if isinstance(systems, frozenset) else DEFAULT_IIN_SYSTEMS


ModelsDep = Annotated[ModelSet, Depends(current_models)]
IinSystemsDep = Annotated[frozenset[str], Depends(current_iin_systems)]
PseudonymizerDep = Annotated[Pseudonymizer, Depends(current_pseudonymizer)]
