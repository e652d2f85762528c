"""A model's intended input: what a DICOM header must say for the model to be used on the image.

:class:`InputDomain` records the SOP classes, modalities, body parts, view positions, photometric interpretations,
samples per pixel, frames, minimum size, pixel spacing and patient age of the images a model was trained on.
:meth:`InputDomain.fit` derives it from the training images' headers; :meth:`InputDomain.check` compares a new
header with it, reading header attributes only (never the pixel data, so nothing is decoded before the refusal).

Fitting rules (every field can be overridden):

- categorical fields (SOP class, modality, body part, view position, photometric interpretation, samples per
  pixel) accept the set of values seen in training, compared case-insensitively after stripping;
- ``max_frames`` is the largest NumberOfFrames seen (1 for radiographs); ``min_rows`` / ``min_columns`` are the
  smallest seen, lowered by ``margin`` (a fraction, 10 % by default);
- ``pixel_spacing_mm`` (PixelSpacing, else ImagerPixelSpacing, both values) and ``age_years`` are the observed
  range widened by ``margin`` times the observed span (at least ``margin`` times the bound itself, so a
  constant is widened too) at each end, never below 0.

Missing attributes: an attribute the domain constrains that a header lacks (or holds empty) is refused, unless
some training headers lacked it too (it is then listed in ``missing_allowed``). A value that cannot be read (a
text where a number belongs) is refused. Age is taken from every source the header has: PatientAge (``041Y``,
``006M``, ``002W``, ``010D``) and the years between PatientBirthDate and StudyDate (else SeriesDate,
ContentDate); each must lie within the range, so an edited PatientAge cannot hide behind a birth date.

Messages name the DICOM keyword, the value and what the model accepts, and all say "outside this model's intended
use", e.g. ``Modality 'CT' is outside this model's intended use (accepted: CR, DX)`` or ``ViewPosition is
missing: the image is outside this model's intended use (accepted: AP, PA)``. Only the listed, non-identifying
attributes are ever quoted; values are cut to 64 printable characters, and ages and dates are never quoted (only
whether the age is below or above the accepted range).
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID

from pipelines.errors import InputError
from pipelines.imaging.dicom import parse_da

SCHEMA_VERSION = 1
# The file a domain is stored in beside a processed dataset and among a registered model's artifacts.
INPUT_DOMAIN_FILE = "input_domain.json"
DEFAULT_MARGIN = 0.1
_MAX_QUOTED = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9 ._:^/+\-]")
_AGE_UNIT_DAYS = {"D": 1.0, "W": 7.0, "M": 365.25 / 12, "Y": 365.25}

# The header attributes the domain reads, by field; the order of the checks.
_CATEGORICAL = (
    ("sop_class_uids", "SOPClassUID"),
    ("modalities", "Modality"),
    ("samples_per_pixel", "SamplesPerPixel"),
    ("photometric_interpretations", "PhotometricInterpretation"),
    ("body_parts", "BodyPartExamined"),
    ("view_positions", "ViewPosition"),
)
SPACING = "PixelSpacing"
AGE = "PatientAge"
KEYWORDS = (
    *(k for _, k in _CATEGORICAL),
    "NumberOfFrames",
    "Rows",
    "Columns",
    SPACING,
    AGE,
)


class InputDomainError(InputError):
    """An input domain that cannot be used (malformed JSON, a field of the wrong kind)."""


class OutOfDomainError(InputError):
    """A DICOM header outside a model's intended use; ``violation`` says which attribute and why."""

    def __init__(self, violation: DomainViolation) -> None:
        super().__init__(violation.message)
        self.violation = violation


@dataclass(frozen=True)
class DomainViolation:
    """Why a header is outside the domain.

    Attributes:
        attribute: the DICOM keyword at fault (``Modality``, ``ViewPosition`` ...).
        value: the value as quoted in the message (cut and cleaned), or None when missing or not quoted.
        accepted: what the model accepts, in words (``CR, DX``; ``1.2 to 1.8 mm``).
        message: one sentence for the caller: attribute, value and accepted values.
    """

    attribute: str
    value: str | None
    accepted: str
    message: str


def _norm(value: Any) -> str:
    return str(value).strip().upper()


def _quote(value: Any) -> str:
    """A header value safe to show: printable, without quotes or control characters, at most 64 characters."""
    text = _UNSAFE.sub("?", str(value).strip())
    return text if len(text) <= _MAX_QUOTED else text[: _MAX_QUOTED - 3] + "..."


def _uid_name(uid: str) -> str:
    name = UID(uid).name
    return f" ({name})" if name and name != uid else ""


def _uid_label(uid: str) -> str:
    name = UID(uid).name
    return name if name and name != uid else uid


def _fmt(x: float) -> str:
    return f"{x:.4g}"


class InputDomain(BaseModel):
    """The DICOM headers a model may be used on (None in a field: not constrained).

    Attributes:
        schema_version: version of this record's layout.
        sop_class_uids: accepted SOPClassUID values.
        modalities: accepted Modality values.
        body_parts: accepted BodyPartExamined values.
        view_positions: accepted ViewPosition values.
        photometric_interpretations: accepted PhotometricInterpretation values.
        samples_per_pixel: accepted SamplesPerPixel values.
        max_frames: the largest NumberOfFrames accepted (absent NumberOfFrames counts as 1).
        min_rows: the smallest Rows accepted.
        min_columns: the smallest Columns accepted.
        pixel_spacing_mm: ``(low, high)`` of both PixelSpacing (else ImagerPixelSpacing) values, in mm.
        age_years: ``(low, high)`` of the patient's age at the study, in years.
        missing_allowed: keywords whose absence is accepted (training images lacked them too).
        margin: the margin the numeric ranges were widened by when fitted (a record, not used by the check).
        n_images: how many training headers the domain was fitted on (0 when written by hand).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = SCHEMA_VERSION
    sop_class_uids: tuple[str, ...] | None = None
    modalities: tuple[str, ...] | None = None
    body_parts: tuple[str, ...] | None = None
    view_positions: tuple[str, ...] | None = None
    photometric_interpretations: tuple[str, ...] | None = None
    samples_per_pixel: tuple[int, ...] | None = None
    max_frames: int | None = Field(None, ge=1)
    min_rows: int | None = Field(None, ge=1)
    min_columns: int | None = Field(None, ge=1)
    pixel_spacing_mm: tuple[float, float] | None = None
    age_years: tuple[float, float] | None = None
    missing_allowed: tuple[str, ...] = ()
    margin: float = Field(DEFAULT_MARGIN, ge=0)
    n_images: int = Field(0, ge=0)

    @field_validator("sop_class_uids")
    @classmethod
    def _uid_set(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        cleaned = tuple(sorted({v.strip() for v in value}))
        if not cleaned or any(not v for v in cleaned):
            raise ValueError("an accepted set must hold at least one non-empty value (None: not constrained)")
        return cleaned

    @field_validator("modalities", "body_parts", "view_positions", "photometric_interpretations")
    @classmethod
    def _text_set(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        cleaned = tuple(sorted({_norm(v) for v in value}))
        if not cleaned or any(not v for v in cleaned):
            raise ValueError("an accepted set must hold at least one non-empty value (None: not constrained)")
        return cleaned

    @field_validator("samples_per_pixel")
    @classmethod
    def _int_set(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is not None and not value:
            raise ValueError("an accepted set must hold at least one value (None: not constrained)")
        return None if value is None else tuple(sorted(set(value)))

    @field_validator("pixel_spacing_mm", "age_years")
    @classmethod
    def _range(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is None:
            return None
        low, high = value
        if not (math.isfinite(low) and math.isfinite(high)) or low < 0 or low > high:
            raise ValueError("a range must be finite, non-negative and low <= high")
        return (float(low), float(high))

    @field_validator("missing_allowed")
    @classmethod
    def _keywords(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - set(KEYWORDS))
        if unknown:
            raise ValueError(f"missing_allowed names unknown attributes: {', '.join(unknown)}")
        return tuple(sorted(set(value)))

    @model_validator(mode="after")
    def _version(self) -> InputDomain:
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(f"schema_version {self.schema_version} is not {SCHEMA_VERSION}")
        return self

    # --- serialisation ------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready fields."""
        return self.model_dump(mode="json")

    def to_json(self) -> str:
        """Canonical JSON text (sorted keys, two-space indent, trailing newline)."""
        return json.dumps(self.to_dict(), sort_keys=True, indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputDomain:
        """Validate a dict (as :meth:`to_dict` writes it).

        Raises:
            InputDomainError: a field is missing its kind, unknown, or out of range.
        """
        if not isinstance(data, Mapping):
            raise InputDomainError("an input domain must be a JSON object")
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors())
            raise InputDomainError(f"invalid input domain: {problems}") from None

    @classmethod
    def from_json(cls, text: str | bytes) -> InputDomain:
        """Parse :meth:`to_json` output.

        Raises:
            InputDomainError: not JSON, or not a valid domain.
        """
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise InputDomainError("the input domain is not JSON") from None
        return cls.from_dict(data)

    # --- fitting ------------------------------------------------------------------------------------------------

    @classmethod
    def fit(
        cls, headers: Iterable[Dataset], *, margin: float = DEFAULT_MARGIN, overrides: Mapping[str, Any] | None = None
    ) -> InputDomain:
        """The domain of the training images' headers (see the module docstring for the rules).

        Args:
            headers: the training images' DICOM headers (pixel data not needed).
            margin: the fraction numeric ranges and minimum sizes are widened by.
            overrides: field -> value replacing the fitted one (e.g. ``{"age_years": (1.0, 110.0)}``); a
                field set to None is left unconstrained.

        Raises:
            InputDomainError: no headers, a negative margin, or an override that is not a valid field value.
        """
        if margin < 0 or not math.isfinite(margin):
            raise InputDomainError("the input domain margin must be a finite number >= 0")
        seen: dict[str, set[Any]] = {name: set() for name, _ in _CATEGORICAL}
        missing: set[str] = set()
        frames: list[int] = []
        rows: list[int] = []
        columns: list[int] = []
        spacings: list[float] = []
        ages: list[float] = []
        n = 0
        for ds in headers:
            n += 1
            for name, keyword in _CATEGORICAL:
                value = _present(ds, keyword)
                if value is None:
                    missing.add(keyword)
                else:
                    seen[name].add(int(value) if name == "samples_per_pixel" else str(value).strip())
            frames.append(_int_or(ds, "NumberOfFrames", 1) or 1)
            for keyword, out in (("Rows", rows), ("Columns", columns)):
                value = _int_or(ds, keyword, None)
                if value is None:
                    missing.add(keyword)
                else:
                    out.append(value)
            spacing = _spacing(ds)
            if spacing is None:
                missing.add(SPACING)
            else:
                spacings.extend(spacing)
            found = _ages(ds)
            if not found:
                missing.add(AGE)
            ages.extend(found)
        if n == 0:
            raise InputDomainError("an input domain needs at least one training header")
        fitted: dict[str, Any] = {name: tuple(values) if values else None for name, values in seen.items()}
        fitted["max_frames"] = max(frames)
        fitted["min_rows"] = max(1, math.floor(min(rows) * (1 - margin))) if rows else None
        fitted["min_columns"] = max(1, math.floor(min(columns) * (1 - margin))) if columns else None
        fitted["pixel_spacing_mm"] = _widen(spacings, margin)
        fitted["age_years"] = _widen(ages, margin)
        # Only a constrained attribute's absence needs accepting: one never seen is not constrained at all.
        constrained = {k for name, k in _CATEGORICAL if fitted[name] is not None}
        constrained |= {k for k, out in (("Rows", rows), ("Columns", columns)) if out}
        constrained |= {k for k, out in ((SPACING, spacings), (AGE, ages)) if out}
        fitted["missing_allowed"] = tuple(missing & constrained)
        fitted["margin"] = margin
        fitted["n_images"] = n
        if overrides:
            unknown = sorted(set(overrides) - set(cls.model_fields))
            if unknown:
                raise InputDomainError(f"unknown input domain field(s) to override: {', '.join(unknown)}")
            fitted.update(overrides)
        return cls.from_dict(fitted)

    # --- checking -----------------------------------------------------------------------------------------------

    def check(self, ds: Dataset) -> DomainViolation | None:
        """The first way ``ds``'s header is outside this domain, or None when it is inside.

        Reads header attributes only: the pixel data is never read or decoded. Never raises for a hostile header:
        an attribute whose value pydicom cannot even convert is refused as unreadable.
        """
        steps: list[tuple[str, Callable[[], DomainViolation | None]]] = [
            (keyword, functools.partial(self._check_categorical, ds, keyword, getattr(self, name)))
            for name, keyword in _CATEGORICAL
            if getattr(self, name) is not None
        ]
        steps += [
            ("NumberOfFrames", functools.partial(self._check_frames, ds)),
            ("Rows", functools.partial(self._check_min, ds, "Rows", self.min_rows)),
            ("Columns", functools.partial(self._check_min, ds, "Columns", self.min_columns)),
            (SPACING, functools.partial(self._check_spacing, ds)),
            (AGE, functools.partial(self._check_age, ds)),
        ]
        for keyword, step in steps:
            try:
                problem = step()
            except Exception:  # e.g. pydicom's BytesLengthException on a value of the wrong length
                problem = _outside(keyword, None, self._accepted(keyword), unreadable=True)
            if problem is not None:
                return problem
        return None

    def _accepted(self, keyword: str) -> str:
        """What the domain accepts for ``keyword``, in words (as :meth:`describe` says it)."""
        described = self.describe()
        return next((v for k, v in described.items() if k.split(" ")[0] == keyword), "a readable value")

    def require(self, ds: Dataset) -> None:
        """Raise when ``ds``'s header is outside this domain.

        Raises:
            OutOfDomainError: with the :class:`DomainViolation`.
        """
        violation = self.check(ds)
        if violation is not None:
            raise OutOfDomainError(violation)

    def _missing(self, keyword: str, accepted: str) -> DomainViolation | None:
        if keyword in self.missing_allowed:
            return None
        return DomainViolation(
            keyword,
            None,
            accepted,
            f"{keyword} is missing: the image is outside this model's intended use (accepted: {accepted})",
        )

    def _check_categorical(self, ds: Dataset, keyword: str, accepted: tuple[Any, ...]) -> DomainViolation | None:
        shown = ", ".join(str(a) for a in accepted)
        try:
            value = _present(ds, keyword)
        except Exception:  # a garbled element: pydicom raises on conversion
            return _outside(keyword, None, shown, unreadable=True)
        if value is None:
            return self._missing(keyword, shown)
        if keyword == "SamplesPerPixel":
            try:
                ok = int(value) in accepted
            except (TypeError, ValueError):
                return _outside(keyword, None, shown, unreadable=True)
        elif keyword == "SOPClassUID":
            ok = str(value).strip() in accepted
        else:
            ok = _norm(value) in accepted
        if ok:
            return None
        if keyword == "SOPClassUID":
            # The UID's standard name says what the object is; the accepted classes are named, not numbered.
            shown = ", ".join(_uid_label(a) for a in accepted)
            return _outside(keyword, _quote(value), shown, note=_uid_name(str(value).strip()))
        return _outside(keyword, _quote(value), shown)

    def _check_frames(self, ds: Dataset) -> DomainViolation | None:
        if self.max_frames is None:
            return None
        accepted = f"at most {self.max_frames}"
        try:
            frames = _int_or(ds, "NumberOfFrames", 1)
        except (TypeError, ValueError):
            return _outside("NumberOfFrames", None, accepted, unreadable=True)
        if frames is not None and frames > self.max_frames:
            return _outside("NumberOfFrames", str(frames), accepted)
        return None

    def _check_min(self, ds: Dataset, keyword: str, minimum: int | None) -> DomainViolation | None:
        if minimum is None:
            return None
        accepted = f"at least {minimum}"
        try:
            value = _int_or(ds, keyword, None)
        except (TypeError, ValueError):
            return _outside(keyword, None, accepted, unreadable=True)
        if value is None:
            return self._missing(keyword, accepted)
        if value < minimum:
            return _outside(keyword, str(value), accepted)
        return None

    def _check_spacing(self, ds: Dataset) -> DomainViolation | None:
        if self.pixel_spacing_mm is None:
            return None
        low, high = self.pixel_spacing_mm
        accepted = f"{_fmt(low)} to {_fmt(high)} mm"
        try:
            spacing = _spacing(ds)
        except (TypeError, ValueError):
            return _outside(SPACING, None, accepted, unreadable=True)
        if spacing is None:
            return self._missing(SPACING, accepted)
        for value in spacing:
            if not low <= value <= high:
                shown = " x ".join(_fmt(v) for v in spacing) + " mm"
                return _outside(SPACING, shown, accepted)
        return None

    def _check_age(self, ds: Dataset) -> DomainViolation | None:
        if self.age_years is None:
            return None
        low, high = self.age_years
        accepted = f"{_fmt(low)} to {_fmt(high)} years"
        try:
            ages = _ages(ds)
        except (TypeError, ValueError):
            return _outside(AGE, None, accepted, unreadable=True)
        if not ages:
            return self._missing(AGE, accepted)
        for age in ages:
            if age < low or age > high:
                # The age itself is not quoted: ages above 89 count as identifying (HIPAA Safe Harbor).
                side = "below" if age < low else "above"
                return DomainViolation(
                    AGE,
                    None,
                    accepted,
                    f"{AGE} is outside this model's intended use: the patient's age is {side} the accepted range "
                    f"(accepted: {accepted})",
                )
        return None

    # --- description --------------------------------------------------------------------------------------------

    def describe(self) -> dict[str, str]:
        """One line per constrained attribute, in words (the model card's "Intended input" section)."""
        out: dict[str, str] = {}
        for name, keyword in _CATEGORICAL:
            accepted = getattr(self, name)
            if accepted is not None:
                if keyword == "SOPClassUID":
                    out[keyword] = ", ".join(f"{a}{_uid_name(a)}" for a in accepted)
                else:
                    out[keyword] = ", ".join(str(a) for a in accepted)
        if self.max_frames is not None:
            out["NumberOfFrames"] = f"at most {self.max_frames}"
        if self.min_rows is not None:
            out["Rows"] = f"at least {self.min_rows}"
        if self.min_columns is not None:
            out["Columns"] = f"at least {self.min_columns}"
        if self.pixel_spacing_mm is not None:
            low, high = self.pixel_spacing_mm
            out[f"{SPACING} (or ImagerPixelSpacing)"] = f"{_fmt(low)} to {_fmt(high)} mm"
        if self.age_years is not None:
            low, high = self.age_years
            out[f"{AGE} (or PatientBirthDate at StudyDate)"] = f"{_fmt(low)} to {_fmt(high)} years"
        out["missing attributes accepted"] = ", ".join(self.missing_allowed) or "none"
        out["fitted on"] = f"{self.n_images} training image headers, ranges widened by {self.margin:g} of their span"
        return out


def _outside(
    keyword: str, value: str | None, accepted: str, *, unreadable: bool = False, note: str = ""
) -> DomainViolation:
    if unreadable:
        message = f"{keyword} cannot be read: the image is outside this model's intended use (accepted: {accepted})"
    else:
        message = f"{keyword} '{value}'{note} is outside this model's intended use (accepted: {accepted})"
    return DomainViolation(keyword, value, accepted, message)


def _present(ds: Dataset, keyword: str) -> Any:
    """The attribute's value, or None when absent or empty."""
    value = ds.get(keyword)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return value


def _int_or(ds: Dataset, keyword: str, default: int | None) -> int | None:
    value = _present(ds, keyword)
    return default if value is None else int(value)


def _spacing(ds: Dataset) -> tuple[float, float] | None:
    """(row, column) spacing in mm from PixelSpacing, else ImagerPixelSpacing; None when neither is there.

    Raises:
        ValueError: a spacing that is not two positive finite numbers.
    """
    for keyword in (SPACING, "ImagerPixelSpacing"):
        value = _present(ds, keyword)
        if value is None:
            continue
        values = [float(v) for v in value] if isinstance(value, MultiValue | list | tuple) else [float(value)]
        if len(values) != 2 or not all(math.isfinite(v) and v > 0 for v in values):
            raise ValueError(f"{keyword} is not two positive numbers")
        return values[0], values[1]
    return None


def age_from_as(text: str) -> float | None:
    """A DICOM AS value (``041Y``, ``006M``, ``002W``, ``010D``) in years, or None when malformed."""
    text = text.strip().upper()
    if len(text) != 4 or not text[:3].isdigit() or text[3] not in _AGE_UNIT_DAYS:
        return None
    return int(text[:3]) * _AGE_UNIT_DAYS[text[3]] / 365.25


def _ages(ds: Dataset) -> list[float]:
    """Every age at the study the header states, in years: PatientAge, and birth date to study date."""
    ages = []
    stated = _present(ds, "PatientAge")
    if stated is not None:
        age = age_from_as(str(stated))
        if age is None:
            raise ValueError("PatientAge is not a DICOM age string")
        ages.append(age)
    born = parse_da(ds.get("PatientBirthDate"))
    on = parse_da(ds.get("StudyDate")) or parse_da(ds.get("SeriesDate")) or parse_da(ds.get("ContentDate"))
    if born is not None and on is not None:
        # A birth date after the study is a contradiction: it counts as an age below any range.
        ages.append((on - born).days / 365.25 if born <= on else -1.0)
    return ages


def _widen(values: list[float], margin: float) -> tuple[float, float] | None:
    if not values:
        return None
    low, high = min(values), max(values)
    pad_low = margin * max(high - low, low)
    pad_high = margin * max(high - low, high)
    return (round(max(0.0, low - pad_low), 6), round(high + pad_high, 6))
