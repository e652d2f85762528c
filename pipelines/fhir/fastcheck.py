"""Faster, equivalent versions of the per-element hooks of fhir.resources' base model (fhir_core).

Profiling R4B validation of the cohort (140 µs a resource on one core) showed that most of the time is not
pydantic-core but three Python hooks that ``fhir_core.fhirabstractmodel.FHIRAbstractModel`` runs on *every*
element (each Coding, Reference, Period ...), twice per element because of its custom ``__init__``:

- ``reject_null_complex_elements`` (a ``before`` model validator): re-derives, from ``model_fields``, which fields
  are lists of complex types on every call (30 % of validation time);
- ``validate_after_model_construction``, through ``_validate_required_primitive_elements`` and
  ``_validate_one_of_many``: call
  ``get_required_fields()`` / ``get_one_of_many_fields()``, which build a fresh list or dict each time, and then
  look aliases up through ``model_fields`` (25 %), although most element types have neither;
- ``FhirBase.fhir_model_validator``, through which every nested element passes: for a dict it calls
  ``model_validate``, which (the model having a custom ``__init__``) runs one more validator pass that only calls
  ``__init__``; here a dict goes to the constructor directly.

The versions here compute those per-class facts once (a dict per class) and then do exactly the same checks,
raising the same errors with the same locations and messages: ``tests/fhir/test_fastcheck.py`` compares the stock
and the patched library, in separate interpreters, on valid resources and thousands of mutated ones. Validation
stays the library's: same models, same schema, same rules; on the cohort it runs about 1.8x faster.

Within :func:`validate_parsed` (which ``validate.SchemaValidator`` uses; it never returns the models) the
nested-element hook also remembers the elements that validated: an element equal to one seen before (same model
class, same JSON text) gets the model built then instead of being validated again. Synthea and real exports repeat
the same codings, references and periods thousands of times, so this roughly halves validation time. Only
successes are kept: an invalid element is validated every time, so its errors keep their exact locations and
messages. The key is the element's JSON text, so this is for parsed JSON only; a datetime, a subclass of str or
dict, or a NaN (which prints as ``null``) is validated uncached.

Nothing is patched on import. :func:`install` is called explicitly, by the ingest stage and by the service at
start-up, and patches only the exact fhir_core version these copies were written and tested against
(:data:`FHIR_CORE_VERSION`): with any other version it leaves the stock library in place and logs one warning,
because the copies mirror private code that a new release may change. It must run before the R4B model classes are
built, because pydantic binds model validators when it builds each class; classes built earlier keep the stock
before-validator (same results, slower). :func:`uninstall` puts the stock hooks back (for tests).
"""

from __future__ import annotations

import importlib.metadata
import logging
import typing
from contextvars import ContextVar
from typing import Any

import orjson
from fhir_core.fhirabstractmodel import FHIRAbstractModel
from fhir_core.types import FhirBase
from fhir_core.utils import is_list_type, is_primitive_type
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

log = logging.getLogger(__name__)

# The fhir_core release these copies were written for and compared against (constraints.txt pins it). Another
# release may change the private hooks they replace, so install() patches this exact version only.
FHIR_CORE_VERSION = "1.1.12"

_MISSING = object()
# class -> data key -> (position, shadowing alias) of its lists of complex types (None: keys not unique)
_COMPLEX_LISTS: dict[type, dict[str, tuple[int, str | None]] | None] = {}
# class -> whether it has required primitives or choice elements to check after construction
_AFTER: dict[type, bool] = {}
_stock_reject_null = FHIRAbstractModel.reject_null_complex_elements.__func__
# class -> ((field name, alias, extension field), ...) of its required primitive elements
_REQUIRED: dict[type, tuple[tuple[str, str | None, str | None], ...]] = {}
# class -> ((field names), required) of its choice elements (value[x] ...)
_CHOICES: dict[type, tuple[tuple[tuple[str, ...], bool], ...]] = {}
_installed = False
_warned = False
# (model class, JSON text of a dict) -> the model validated from it; used only within validate_parsed().
_ELEMENTS: dict[tuple[type, bytes], Any] = {}
# At most this many elements are kept (then the cache starts over): a few tens of MB, reached early in a large
# ingest, so memory does not grow with the input.
ELEMENT_CACHE_SIZE = 4_000
# Hashes of the element texts seen once (an element is kept when it comes a second time).
_SEEN_ONCE: set[int] = set()
SEEN_ONCE_SIZE = 50_000
_CACHING: ContextVar[bool] = ContextVar("fastcheck_element_cache", default=False)
# Values that JSON text does not tell apart from others (datetime and its string, a str subclass and a str ...)
# fail to serialise with these options, so their elements are validated uncached.
_KEY_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATACLASS
# The stock hooks as the classes hold them (class __dict__ entries), for uninstall().
_STOCK_FHIR_ABSTRACT_MODEL = {
    name: FHIRAbstractModel.__dict__[name]
    for name in (
        "reject_null_complex_elements",
        "validate_after_model_construction",
        "_validate_required_primitive_elements",
        "_validate_one_of_many",
    )
}
_STOCK_FHIR_BASE = {"fhir_model_validator": FhirBase.__dict__["fhir_model_validator"]}


def _complex_lists(cls: type[FHIRAbstractModel]) -> dict[str, tuple[int, str | None]] | None:
    """Data key -> (field position, the alias that shadows it) of the class's lists of complex types.

    The stock check reads, for each such field, its alias when the data has it and else its name; so an alias is
    read whenever present and a name only when its alias is absent. None when two fields share a key (then the
    stock field-by-field loop runs).
    """
    if cls in _COMPLEX_LISTS:
        return _COMPLEX_LISTS[cls]
    keys: dict[str, tuple[int, str | None]] = {}
    unique = True
    fields = [
        (name, field.alias)
        for name, field in cls.model_fields.items()
        if is_list_type(field) and not is_primitive_type(field) and not name.endswith("__ext")
    ]
    for pos, (name, alias) in enumerate(fields):
        entries: list[tuple[str, tuple[int, str | None]]] = [(alias, (pos, None))] if alias else []
        if name != alias:
            entries.append((name, (pos, alias or None)))
        for key, spec in entries:
            unique = unique and key not in keys
            keys[key] = spec
    found = keys if unique else None
    _COMPLEX_LISTS[cls] = found
    return found


def reject_null_complex_elements(cls: type[FHIRAbstractModel], data: Any) -> Any:
    """``FHIRAbstractModel.reject_null_complex_elements``, looking only at the few keys the data has."""
    if not isinstance(data, dict):
        return data
    keys = _complex_lists(cls)
    if keys is None:
        return _stock_reject_null(cls, data)
    hits: list[tuple[int, str, list[Any]]] = []
    for key, value in data.items():
        if isinstance(value, list) and key in keys and any(item is None for item in value):
            pos, shadow = keys[key]
            if shadow is None or shadow not in data:
                hits.append((pos, key, value))
    if not hits:
        return data
    errors: list[InitErrorDetails] = [
        {
            "type": PydanticCustomError("list_type", "None is not allowed as an element of {field}", {"field": key}),
            "loc": (key,),
            "input": value,
        }
        for _, key, value in sorted(hits, key=lambda hit: hit[0])  # the stock check reports in field order
    ]
    raise ValidationError.from_exception_data(cls.__name__, errors)


def _required(model: FHIRAbstractModel) -> tuple[tuple[str, str | None, str | None], ...]:
    cls = type(model)
    found = _REQUIRED.get(cls)
    if found is None:
        fields = model.get_required_fields()
        if fields:
            aliases = cls.get_alias_mapping()
            rows = []
            for name, ext in fields:
                key = aliases[name]
                rows.append((key, cls.model_fields[key].alias, ext))
            found = tuple(rows)
        else:
            found = ()
        _REQUIRED[cls] = found
    return found


def validate_required_primitive_elements(self: FHIRAbstractModel) -> None:
    """``FHIRAbstractModel._validate_required_primitive_elements`` with the class's required fields cached."""
    required = _required(self)
    if not required:
        return
    errors: list[InitErrorDetails] = []
    for key, alias, ext in required:
        value = getattr(self, key, _MISSING)
        if value not in (_MISSING, None):
            continue
        # Any element value (a model, a dict, or a list on malformed input), read as the stock check reads it.
        ext_value: Any = getattr(self, ext, _MISSING) if ext is not None else None
        missing_ext = True
        if ext_value not in (_MISSING, None):
            if isinstance(ext_value, dict):
                missing_ext = len(ext_value.get("extension", [])) == 0
            elif ext_value.extension:
                # Attribute access as in the stock check, which raises AttributeError for a value without one (a
                # list: ``"_fhirVersion": [{"extension": ...}]`` on ImplementationGuide, whose fhirVersion is
                # required); validate.SchemaValidator turns that into a quarantine reason on both sides.
                missing_ext = False
        if missing_ext:
            errors.append(
                {
                    "type": PydanticCustomError(
                        "model_field_validation.missing",
                        "Value for the field '{field_name}' is required.",
                        {"field_name": alias},
                    ),
                    "loc": (alias,),  # type: ignore[typeddict-item]
                    "input": value,
                }
            )
    if errors:
        raise ValidationError.from_exception_data(type(self).__name__, errors)


def _choices(model: FHIRAbstractModel) -> tuple[tuple[tuple[str, ...], bool], ...]:
    cls = type(model)
    found = _CHOICES.get(cls)
    if found is None:
        groups = model.get_one_of_many_fields()
        rows = []
        for prefix, fields in groups.items():
            extra = typing.cast(dict[str, Any], cls.model_fields[fields[0]].json_schema_extra)
            if extra["one_of_many"] != prefix:  # the library asserts this on every call
                raise AssertionError(f"{cls.__name__}.{fields[0]} is not a choice of {prefix}")
            rows.append((tuple(fields), extra["one_of_many_required"] is True))
        found = tuple(rows)
        _CHOICES[cls] = found
    return found


def validate_one_of_many(self: FHIRAbstractModel) -> None:
    """``FHIRAbstractModel._validate_one_of_many`` with the class's choice groups cached."""
    for fields, required in _choices(self):
        found = False
        for field in fields:
            if getattr(self, field, None) is not None:
                if found:
                    raise ValueError(
                        f"Any of one field value is expected from this list {list(fields)}, but got multiple!"
                    )
                found = True
        if required and not found:
            raise ValueError(f"Expect any of field value from this list {list(fields)}.")


def validate_after_model_construction(self: FHIRAbstractModel) -> FHIRAbstractModel:
    """``FHIRAbstractModel.validate_after_model_construction``: the two checks above, skipped where a class has
    neither required primitives nor choice elements (most element types)."""
    checks = _AFTER.get(type(self))
    if checks is None:
        checks = _AFTER[type(self)] = bool(_required(self) or _choices(self))
    if checks:
        validate_required_primitive_elements(self)
        validate_one_of_many(self)
    return self


_stock_model_validator = FhirBase.fhir_model_validator.__func__  # type: ignore[attr-defined]


def fhir_model_validator(cls: type[FhirBase], value: Any, model_klass: type[FHIRAbstractModel]) -> Any:
    """``FhirBase.fhir_model_validator`` (every nested element goes through it) with the dict case direct, and
    within :func:`validate_parsed` elements that validated before taken from the cache."""
    if type(value) is not dict:
        return _stock_model_validator(cls, value, model_klass)
    if not _CACHING.get() or "resourceType" in value:  # resources (contained, Bundle entries) are not kept
        return model_klass(**value)
    try:
        key = (model_klass, orjson.dumps(value, option=_KEY_OPTIONS))
    except TypeError:  # orjson.JSONEncodeError: not plain JSON values
        return model_klass(**value)
    model = _ELEMENTS.get(key)
    if model is not None:
        return model
    model = model_klass(**value)  # raises for an invalid element: failures are never kept
    # Kept at its second sighting: most elements (a timestamp, a unique id) never come again, and their models
    # would cost memory for nothing; a hash of each text seen once is cheap. NaN and infinity print as null, so an
    # element with a null is never kept (and no such text ever matches).
    seen = hash(key)
    if seen not in _SEEN_ONCE:
        if len(_SEEN_ONCE) >= SEEN_ONCE_SIZE:
            _SEEN_ONCE.clear()
        _SEEN_ONCE.add(seen)
    elif b"null" not in key[1]:
        if len(_ELEMENTS) >= ELEMENT_CACHE_SIZE:
            _ELEMENTS.clear()
        _ELEMENTS[key] = model
    return model


def validate_parsed(model_class: type[FHIRAbstractModel], data: Any) -> None:
    """``model_class.model_validate(data)`` with the element cache, the model thrown away (raises as it does).

    Only for parsed JSON (what ``orjson.loads`` makes): cache keys are JSON text, and tuples, enums or UUIDs would
    print like lists and strings. The model is not returned because it may share element instances with the models
    of earlier and later calls (a caller that changed one would change the others). The cache is on for this call
    only, in this thread or task; a plain ``model_validate`` elsewhere never uses it.
    """
    token = _CACHING.set(True)
    try:
        model_class.model_validate(data)
    finally:
        _CACHING.reset(token)


def clear_element_cache() -> None:
    """Forget the cached elements."""
    _ELEMENTS.clear()
    _SEEN_ONCE.clear()


def installed_version() -> str:
    """The installed fhir_core's version ("unknown" when its package metadata is missing)."""
    try:
        return importlib.metadata.version("fhir-core")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def is_installed() -> bool:
    """Whether the cached checks are in place in this process."""
    return _installed


def install(expected_version: str = FHIR_CORE_VERSION) -> bool:
    """Put the cached checks on ``FHIRAbstractModel`` when fhir_core is ``expected_version``; idempotent.

    R4B classes built after this use them. With any other fhir_core version the stock hooks stay (and are put back
    if an earlier call installed the checks), and one warning per process names both versions.

    Args:
        expected_version: the fhir_core version the checks are known to match (tests pass another to simulate an
            upgrade).

    Returns:
        Whether the cached checks are installed.
    """
    global _installed, _warned
    found = installed_version()
    if found != expected_version:
        _restore_stock()
        if not _warned:
            log.warning(
                "fhir-core %s is installed but pipelines.fhir.fastcheck was written and tested for fhir-core %s: "
                "validating with the stock library (same results, about 1.8x slower)",
                found,
                expected_version,
            )
            _warned = True
        return False
    if _installed:
        return True
    # pydantic finds the before-validator by name on each class it builds (get_attribute_from_bases).
    FHIRAbstractModel.reject_null_complex_elements = classmethod(reject_null_complex_elements)  # type: ignore[method-assign,assignment]
    FHIRAbstractModel.validate_after_model_construction = validate_after_model_construction  # type: ignore[method-assign,assignment]
    # The stock after-validator calls these two by name on the instance: classes built before install() use them.
    FHIRAbstractModel._validate_required_primitive_elements = validate_required_primitive_elements  # type: ignore[method-assign]
    FHIRAbstractModel._validate_one_of_many = validate_one_of_many  # type: ignore[method-assign]
    FhirBase.fhir_model_validator = classmethod(fhir_model_validator)  # type: ignore[method-assign,assignment]
    _installed = True
    return True


def uninstall() -> None:
    """Put the stock hooks back on the base classes (for tests) and forget the one-warning state.

    Model classes built while the checks were installed keep the validators pydantic bound then (they give the same
    results); classes built afterwards use the stock ones.
    """
    global _warned
    _restore_stock()
    _warned = False


def _restore_stock() -> None:
    global _installed
    clear_element_cache()
    for name, value in _STOCK_FHIR_ABSTRACT_MODEL.items():
        setattr(FHIRAbstractModel, name, value)
    for name, value in _STOCK_FHIR_BASE.items():
        setattr(FhirBase, name, value)
    _installed = False
