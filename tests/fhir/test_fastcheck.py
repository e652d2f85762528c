"""Shipa's cached element checks validate exactly like the stock fhir.resources, on valid and broken resources.

The corpus is built here: resources of a small synthetic cohort (``pipelines.synth``) and hand-written resources of
many types, each with deliberate mutations (missing required fields, wrong types, bad dates and codes, unknown
elements, ``_field`` primitive extensions, nulls and wrongly typed items in lists). Two fresh interpreters validate it,
one with the stock library and one with :func:`pipelines.fhir.fastcheck.install` run first, and every outcome must be
identical: valid, or the full list of pydantic errors (type, location, message, input), or the same other exception
with the same message; and the issues :class:`pipelines.fhir.validate.SchemaValidator` makes of it (an unexpected
exception becomes an ``invalid_resource`` issue on both sides).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import random
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fhir_core.fhirabstractmodel import FHIRAbstractModel
from fhir_core.types import FhirBase
from pydantic import ValidationError

from pipelines.config import SynthesizeParams
from pipelines.fhir import fastcheck
from pipelines.fhir.defects import INVALID_RESOURCE
from pipelines.fhir.read import LinesPart, WorkUnit
from pipelines.fhir.validate import SchemaValidator
from pipelines.fhir.worker import ChunkProcessor
from pipelines.stages import synthesize
from pipelines.synth.writers import read_resources

REPO = Path(__file__).resolve().parents[2]

# Validates every resource of a JSON-lines corpus and prints one outcome per line, stock or patched (argv[2]).
OUTCOMES = r"""
import json, sys
if sys.argv[2] == "patched":
    from pipelines.fhir import fastcheck
    assert fastcheck.install(), "fastcheck did not install"
import fhir_core.fhirabstractmodel as m
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError
from pipelines.fhir.validate import SchemaValidator
print(json.dumps(m.FHIRAbstractModel._validate_one_of_many.__module__))
validator = SchemaValidator()
corpus = [json.loads(line) for line in open(sys.argv[1], "rb")]
rows = []
for obj in corpus:
    try:
        get_fhir_model_class(obj["resourceType"]).model_validate(obj)
        out = "ok"
    except ValidationError as exc:
        out = "invalid " + repr(exc.errors(include_url=False))
    except Exception as exc:
        out = type(exc).__name__ + " " + str(exc)
    rows.append([out, [[i.defect, i.expression, i.diagnostics] for i in validator.validate(obj)]])
# Again in reverse order: with the element cache, every element now comes after the valid and invalid parents it
# was seen in the first time, and half the cache is of the other half of the corpus.
for row, obj in zip(reversed(rows), reversed(corpus)):
    row.append([[i.defect, i.expression, i.diagnostics] for i in validator.validate(obj)])
for row in rows:
    print(json.dumps(row))
print(json.dumps(len(fastcheck._ELEMENTS) if sys.argv[2] == "patched" else 0))
"""

EXT = {"url": "http://example.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown"}
IG_BROKEN = {
    "resourceType": "ImplementationGuide",
    "id": "ig-broken",
    "url": "http://example.org/ig",
    "name": "ExampleIG",
    "status": "draft",
    "packageId": "example.ig",
    "_fhirVersion": [{"extension": [EXT]}],
}
_STOCK_MODULES = {"fhir_core.fhirabstractmodel", "fhir_core.types"}

# Hand-written resources of types the cohort does not have, with nested elements, choices and primitive lists.
HAND_WRITTEN: list[dict[str, Any]] = [
    {
        "resourceType": "ImplementationGuide",
        "id": "ig1",
        "url": "http://example.org/ig",
        "name": "ExampleIG",
        "status": "active",
        "packageId": "example.ig",
        "fhirVersion": ["4.3.0"],
        "_fhirVersion": [{"extension": [EXT]}],
        "dependsOn": [{"uri": "http://hl7.org/fhir/uv/ips", "packageId": "hl7.fhir.uv.ips", "version": "1.1.0"}],
        "definition": {
            "resource": [{"reference": {"reference": "StructureDefinition/x"}, "exampleBoolean": False}],
            "page": {"nameUrl": "index.html", "title": "Home", "generation": "html"},
        },
    },
    {
        "resourceType": "Questionnaire",
        "id": "q1",
        "status": "active",
        "date": "2024-02-29",
        "item": [
            {
                "linkId": "1",
                "text": "Smoker?",
                "type": "boolean",
                "enableWhen": [{"question": "0", "operator": "exists", "answerBoolean": True}],
                "item": [{"linkId": "1.1", "type": "integer", "initial": [{"valueInteger": 3}]}],
            },
            {"linkId": "2", "type": "choice", "answerOption": [{"valueCoding": {"code": "a"}}, {"valueString": "b"}]},
        ],
    },
    {
        "resourceType": "AllergyIntolerance",
        "id": "a1",
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergy", "code": "active"}]},
        "patient": {"reference": "Patient/p1"},
        "onsetAge": {"value": 4, "unit": "a", "system": "http://unitsofmeasure.org", "code": "a"},
        "reaction": [{"manifestation": [{"text": "rash"}], "severity": "mild", "onset": "2020-01-01T10:00:00Z"}],
        "category": ["food", "medication"],
    },
    {
        "resourceType": "Immunization",
        "id": "i1",
        "status": "completed",
        "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140"}]},
        "patient": {"reference": "Patient/p1"},
        "occurrenceDateTime": "2023-10-01T09:30:00+05:00",
        "protocolApplied": [{"doseNumberPositiveInt": 1, "seriesDosesString": "two"}],
    },
    {
        "resourceType": "ImagingStudy",
        "id": "s1",
        "status": "available",
        "subject": {"reference": "Patient/p1"},
        "started": "2023-05-02T11:00:00+05:00",
        "numberOfSeries": 1,
        "series": [
            {
                "uid": "1.2.3.4",
                "number": 1,
                "modality": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "DX"},
                "instance": [{"uid": "1.2.3.4.5", "sopClass": {"code": "1.2.840.10008.5.1.4.1.1.1"}, "number": 1}],
            }
        ],
    },
    {
        "resourceType": "DiagnosticReport",
        "id": "r1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "36643-5"}]},
        "effectivePeriod": {"start": "2023-05-02", "end": "2023-05-03"},
        "conclusionCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "J18.9"}]}],
        "presentedForm": [{"contentType": "text/plain", "data": "aGVsbG8="}],
    },
    {
        "resourceType": "Procedure",
        "id": "pr1",
        "status": "completed",
        "subject": {"reference": "Patient/p1"},
        "performedPeriod": {"start": "2023-01-01T08:00:00Z"},
        "performer": [{"actor": {"reference": "Practitioner/d1"}}],
        "note": [{"text": "ok", "time": "2023-01-01T09:00:00Z"}],
    },
    {
        "resourceType": "Location",
        "id": "l1",
        "status": "active",
        "name": "Ward 3",
        "alias": ["W3", "Third"],
        "position": {"longitude": 71.45, "latitude": 51.17},
        "hoursOfOperation": [{"daysOfWeek": ["mon", "tue"], "allDay": False, "openingTime": "08:00:00"}],
    },
    {
        "resourceType": "CarePlan",
        "id": "cp1",
        "status": "active",
        "intent": "plan",
        "subject": {"reference": "Patient/p1"},
        "activity": [{"detail": {"status": "scheduled", "scheduledString": "weekly", "dailyAmount": {"value": 2}}}],
    },
    {
        "resourceType": "Bundle",
        "id": "b1",
        "type": "transaction",
        "timestamp": "2023-01-01T00:00:00Z",
        "entry": [
            {
                "fullUrl": "urn:uuid:5c3f0a6e-0a4a-4c2a-9a52-0c3a1b7d9e01",
                "resource": {"resourceType": "Patient", "id": "p9", "gender": "female", "birthDate": "1990"},
                "request": {"method": "POST", "url": "Patient"},
            }
        ],
    },
    {
        "resourceType": "Patient",
        "id": "p1",
        "active": True,
        "name": [{"family": "Akhmetova", "given": ["Aigerim", None], "_given": [None, {"extension": [EXT]}]}],
        "_gender": {"extension": [EXT]},
        "birthDate": "1985-07-14",
        "multipleBirthInteger": 2,
        "contact": [{"name": {"text": "A"}, "telecom": [{"system": "phone", "value": "+7 701"}]}],
    },
    {
        "resourceType": "Observation",
        "id": "o1",
        "_status": {"extension": [EXT]},
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "valueQuantity": {"value": 72, "unit": "/min"},
        "component": [
            {"code": {"text": "x"}, "valueSampledData": {"origin": {"value": 0}, "period": 1, "dimensions": 1}}
        ],
        "referenceRange": [{"low": {"value": 60}, "high": {"value": 100}}],
    },
    {
        "resourceType": "MedicationRequest",
        "id": "m1",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": "http://www.whocc.no/atc", "code": "J01CA04"}]},
        "subject": {"reference": "Patient/p1"},
        "dosageInstruction": [
            {
                "timing": {"repeat": {"frequency": 3, "period": 1, "periodUnit": "d", "when": ["MORN", "EVE"]}},
                "doseAndRate": [{"doseQuantity": {"value": 500, "unit": "mg"}}],
            }
        ],
    },
    {
        "resourceType": "ExplanationOfBenefit",
        "id": "e1",
        "status": "active",
        "type": {"text": "professional"},
        "use": "claim",
        "patient": {"reference": "Patient/p1"},
        "created": "2023-02-01",
        "insurer": {"reference": "Organization/o1"},
        "provider": {"reference": "Organization/o2"},
        "outcome": "complete",
        "insurance": [{"focal": True, "coverage": {"reference": "Coverage/c1"}}],
        "item": [{"sequence": 1, "productOrService": {"text": "visit"}, "servicedDate": "2023-01-31"}],
    },
    {
        "resourceType": "Provenance",
        "id": "pv1",
        "target": [{"reference": "Patient/p1"}],
        "recorded": "2023-01-01T00:00:00.000+05:00",
        "policy": ["http://example.org/policy"],
        "agent": [{"who": {"reference": "Practitioner/d1"}}],
    },
    IG_BROKEN,
]

_MUTATIONS: tuple[Callable[[Any], Any], ...] = (
    lambda v: None,
    lambda v: [None],
    lambda v: [v, None],
    lambda v: [None, v],
    lambda v: 123,
    lambda v: 1.5,
    lambda v: True,
    lambda v: "not a code",
    lambda v: "2023-13-45",
    lambda v: "2023-02-30T25:61:00Z",
    lambda v: {"bogus": 1},
    lambda v: {},
    lambda v: [],
    lambda v: [v],
    lambda v: [v, 7],
    lambda v: v[0] if isinstance(v, list) and v else {},
)
_CHOICE_PREFIXES = ("value", "effective", "onset", "deceased", "serviced", "medication", "multipleBirth", "occurrence")


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key != "resourceType":
                yield (*prefix, key)
                yield from _paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield (*prefix, i)
            yield from _paths(value, (*prefix, i))


def _parent(resource: dict[str, Any], path: tuple[Any, ...]) -> Any:
    parent: Any = resource
    for step in path[:-1]:
        parent = parent[step]
    return parent


def _mutants(resource: dict[str, Any], rng: random.Random, n: int) -> Iterator[dict[str, Any]]:
    """``n`` copies of ``resource``, each broken at one random place (or made to carry two choice values)."""
    paths = list(_paths(resource))
    for _ in range(n if paths else 0):
        copied = copy.deepcopy(resource)
        path = rng.choice(paths)
        parent = _parent(copied, path)
        roll = rng.random()
        if roll < 0.12 and isinstance(parent, dict):
            del parent[path[-1]]  # a required element may go missing
        elif roll < 0.17 and isinstance(parent, dict):
            parent["unknownElement"] = 1
        elif roll < 0.27 and isinstance(parent, dict) and any(k.startswith(_CHOICE_PREFIXES) for k in parent):
            parent["valueString"], parent["valueBoolean"] = "a", True  # two types of one choice element
        else:
            parent[path[-1]] = rng.choice(_MUTATIONS)(parent[path[-1]])
        yield copied


def _primitive_keys(resource: dict[str, Any]) -> list[tuple[tuple[Any, ...], bool]]:
    """(path, is a list) of every primitive element and primitive list in ``resource`` (not ``_field`` ones)."""
    found = []
    for path in _paths(resource):
        key = path[-1]
        if not isinstance(key, str) or key.startswith("_"):
            continue
        value = _parent(resource, path)[key]
        if isinstance(value, str | bool | int | float):
            found.append((path, False))
        elif isinstance(value, list) and value and all(isinstance(v, str | bool | int | float) for v in value):
            found.append((path, True))
    return found


# Changes around one primitive element ``key`` of dict ``d``: its ``_key`` extension sibling, with or without the
# value (a required primitive may be replaced by an extension), well or badly formed.
_SCALAR_EXTENSIONS: tuple[Callable[[dict[str, Any], str], None], ...] = (
    lambda d, k: d.update({f"_{k}": {"extension": [EXT]}}),
    lambda d, k: d.update({f"_{k}": {"extension": [EXT]}, k: None}),
    lambda d, k: (d.update({f"_{k}": {"extension": [EXT]}}), d.pop(k)),
    lambda d, k: (d.update({f"_{k}": {"id": "x"}}), d.pop(k)),
    lambda d, k: (d.update({f"_{k}": {"extension": []}}), d.pop(k)),
    lambda d, k: (d.update({f"_{k}": [{"extension": [EXT]}]}), d.pop(k)),  # a list where one element is expected
    lambda d, k: d.update({f"_{k}": [{"extension": [EXT]}]}),
    lambda d, k: d.update({f"_{k}": "text"}),
    lambda d, k: d.update({f"_{k}": None}),
    lambda d, k: d.update({f"_{k}": {"extension": [{"url": 1}]}}),
    lambda d, k: d.update({f"_{k}": {"extension": [EXT], "bogus": 1}}),
    lambda d, k: d.update({f"_{k}": {"extension": [None]}}),
    lambda d, k: d.update({f"_{k}": {"extension": EXT}}),
)
# The same for a primitive list ``key`` (given, line, alias, category ...), whose nulls line values up with their
# extensions.
_LIST_EXTENSIONS: tuple[Callable[[dict[str, Any], str], None], ...] = (
    lambda d, k: d.update({k: [None, *d[k]], f"_{k}": [{"extension": [EXT]}] + [None] * len(d[k])}),
    lambda d, k: d.update({f"_{k}": [None, {"extension": [EXT]}]}),
    lambda d, k: d.update({f"_{k}": [{"extension": [EXT]}]}),
    lambda d, k: d.update({f"_{k}": {"extension": [EXT]}}),  # one extension where a list is expected
    lambda d, k: d.update({f"_{k}": [None] * (len(d[k]) + 3)}),
    lambda d, k: d.update({f"_{k}": [None, 5]}),
    lambda d, k: d.update({k: [None], f"_{k}": [{"extension": [EXT]}]}),
    lambda d, k: d.update({k: [None]}),
    lambda d, k: d.update({k: [*d[k], None]}),
    lambda d, k: d.update({k: [1, {"a": 1}]}),
    lambda d, k: d.update({k: [True, 2.5]}),
    lambda d, k: d.update({k: [[d[k][0]]]}),
    lambda d, k: d.update({k: d[k][0]}),
)


def _extension_mutants(resource: dict[str, Any], rng: random.Random, n: int) -> Iterator[dict[str, Any]]:
    """``n`` copies of ``resource``, each with one ``_field`` extension or primitive-list change."""
    keys = _primitive_keys(resource)
    for _ in range(n if keys else 0):
        copied = copy.deepcopy(resource)
        path, is_list = rng.choice(keys)
        rng.choice(_LIST_EXTENSIONS if is_list else _SCALAR_EXTENSIONS)(_parent(copied, path), path[-1])
        yield copied


def _nulls_everywhere(resource: dict[str, Any]) -> dict[str, Any]:
    """Every list of the resource gets a null, keys in reverse order: several errors, reported in field order."""
    out = {"resourceType": resource["resourceType"]}
    for key in reversed(resource):
        if key != "resourceType":
            value = resource[key]
            out[key] = [*value, None] if isinstance(value, list) else value
    return out


def _has_extension_sibling(obj: Any) -> bool:
    if isinstance(obj, dict):
        return any(k.startswith("_") or _has_extension_sibling(v) for k, v in obj.items())
    return isinstance(obj, list) and any(_has_extension_sibling(v) for v in obj)


def _cohort_resources(raw: Path, per_type: int) -> list[dict[str, Any]]:
    synthesize.run(
        SynthesizeParams(
            n_patients=30, imaging_rate=0.0, n_organizations=3, practitioners_per_organization=2, months=6, seed=13
        ),
        raw,
        progress=False,
    )
    resources: list[dict[str, Any]] = []
    for path in sorted((raw / "fhir").glob("*.ndjson")):
        # The cohort's own defective records too (bad codes, dates, missing fields), not only the clean ones.
        resources += read_resources(raw, path.stem, without_defects=False)[:per_type]
    return resources


def _write_corpus(resources: list[dict[str, Any]], out: Path, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    corpus = []
    for resource in resources:
        corpus += [resource, *_mutants(resource, rng, 5), *_extension_mutants(resource, rng, 6)]
        corpus.append(_nulls_everywhere(resource))
    with out.open("wb") as fh:
        for one in corpus:
            fh.write(orjson.dumps(one) + b"\n")
    return corpus


def _outcomes(corpus: Path, side: str, cwd: Path) -> tuple[str, list[Any], int]:
    """(module of the hooks, [model_validate outcome, issues, issues again] of each resource, elements cached)."""
    done = subprocess.run(
        [sys.executable, "-c", OUTCOMES, str(corpus), side], capture_output=True, text=True, cwd=cwd, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    return json.loads(lines[0]), [json.loads(line) for line in lines[1:-1]], json.loads(lines[-1])


def test_patched_validation_equals_stock(tmp_path: Path) -> None:
    resources = _cohort_resources(tmp_path / "raw", per_type=25) + HAND_WRITTEN
    assert len({r["resourceType"] for r in resources}) >= 20
    corpus_path = tmp_path / "corpus.ndjson"
    corpus = _write_corpus(resources, corpus_path, seed=11)
    n = len(corpus)

    stock_module, stock, _ = _outcomes(corpus_path, "stock", tmp_path)
    patched_module, patched, cached = _outcomes(corpus_path, "patched", tmp_path)
    # Each side really ran the hooks it claims to, the patched one with the element cache.
    assert stock_module == "fhir_core.fhirabstractmodel"
    assert patched_module == "pipelines.fhir.fastcheck"
    assert len(stock) == len(patched) == n
    assert cached > 500
    assert all(issues == again for _, issues, again in stock)

    outcomes = [o for o, *_ in stock]
    invalid = sum(o != "ok" for o in outcomes)
    assert n // 3 < invalid < n - n // 10, f"{invalid} of {n} invalid: the corpus should be mostly, not all, broken"
    for text in ("None is not allowed as an element", "is required", "but got multiple", "Extra inputs"):
        assert any(text in o for o in outcomes), text
    assert sum(o.startswith("AttributeError") for o in outcomes) >= 1
    with_extensions = [i for i, r in enumerate(corpus) if _has_extension_sibling(r)]
    assert len(with_extensions) > n // 3
    assert any(outcomes[i] == "ok" for i in with_extensions)  # a required primitive replaced by its extension
    assert any(outcomes[i] != "ok" for i in with_extensions)

    mismatches = [(i, corpus[i], s, p) for i, (s, p) in enumerate(zip(stock, patched, strict=True)) if s != p]
    assert not mismatches, f"{len(mismatches)} of {n} outcomes differ; first: {str(mismatches[0])[:1500]}"

    # The reproduced divergence: the stock library raises AttributeError here; so must the patched one, and
    # validate.py makes the same quarantine reason of it on both sides.
    ig = corpus.index(IG_BROKEN)
    assert stock[ig] == patched[ig]
    assert stock[ig][0] == "AttributeError 'list' object has no attribute 'extension'"
    assert stock[ig][1] == [
        [INVALID_RESOURCE, "ImplementationGuide", "ImplementationGuide could not be validated (AttributeError)"]
    ]


def test_schema_validator_rejects_what_breaks_the_library(caplog: pytest.LogCaptureFixture) -> None:
    """In this process too (whatever the hooks): an unexpected exception is an issue, not a crash."""
    with caplog.at_level(logging.WARNING, logger="pipelines.fhir.validate"):
        issues = SchemaValidator().validate(copy.deepcopy(IG_BROKEN))
    assert [(i.defect, i.expression, i.diagnostics) for i in issues] == [
        (INVALID_RESOURCE, "ImplementationGuide", "ImplementationGuide could not be validated (AttributeError)")
    ]
    assert "unexpected AttributeError while validating a ImplementationGuide resource" in caplog.text


def test_first_pass_quarantines_what_breaks_the_library(tmp_path: Path) -> None:
    """The ingest worker relies on SchemaValidator for this: one quarantined resource, the rest of the unit goes on."""
    patient = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1990-01-01"}
    lines = [orjson.dumps(IG_BROKEN), orjson.dumps(patient)]
    unit = WorkUnit(0, [LinesPart("in.ndjson", [1, 2], lines)])
    result = ChunkProcessor("k" * 16, tmp_path).process(unit)
    assert result.read == {"ImplementationGuide": 1, "Patient": 1}
    assert result.quarantined == {"ImplementationGuide": 1}
    assert result.reasons == {(INVALID_RESOURCE, "ImplementationGuide", "ImplementationGuide"): 1}
    [record] = [orjson.loads(r) for r in result.quarantine]
    assert (record["resource_id"], record["defect"]) == ("ig-broken", INVALID_RESOURCE)
    assert [i["diagnostics"] for i in record["outcome"]["issue"]] == [
        "ImplementationGuide could not be validated (AttributeError)"
    ]


@pytest.fixture
def hooks_restored() -> Iterator[None]:
    """Leave fastcheck as the test found it (another test's ingest may have installed it in this process)."""
    was = fastcheck.is_installed()
    yield
    fastcheck.uninstall()
    if was:
        fastcheck.install()


def _hook_modules() -> set[str]:
    return {
        FHIRAbstractModel.reject_null_complex_elements.__func__.__module__,  # type: ignore[attr-defined]
        FHIRAbstractModel.validate_after_model_construction.__module__,
        FHIRAbstractModel._validate_required_primitive_elements.__module__,
        FHIRAbstractModel._validate_one_of_many.__module__,
        FhirBase.fhir_model_validator.__func__.__module__,  # type: ignore[attr-defined]
    }


def test_install_is_idempotent_and_uninstall_restores_the_stock_hooks(hooks_restored: None) -> None:
    fastcheck.uninstall()
    assert _hook_modules() <= _STOCK_MODULES
    assert fastcheck.install() is True
    assert fastcheck.install() is True
    assert fastcheck.is_installed()
    assert _hook_modules() == {"pipelines.fhir.fastcheck"}
    fastcheck.uninstall()
    assert not fastcheck.is_installed()
    assert _hook_modules() <= _STOCK_MODULES


def test_other_fhir_core_version_keeps_the_stock_hooks_with_one_warning(
    hooks_restored: None, caplog: pytest.LogCaptureFixture
) -> None:
    fastcheck.uninstall()
    assert fastcheck.install() is True  # installed for the pinned version ...
    with caplog.at_level(logging.WARNING, logger="pipelines.fhir.fastcheck"):
        assert fastcheck.install(expected_version="0.9.9") is False  # ... and taken out for any other
        assert fastcheck.install(expected_version="0.9.9") is False
    assert not fastcheck.is_installed()
    assert _hook_modules() <= _STOCK_MODULES
    warnings = [r.getMessage() for r in caplog.records if r.name == "pipelines.fhir.fastcheck"]
    assert len(warnings) == 1, warnings
    assert f"fhir-core {fastcheck.installed_version()} is installed" in warnings[0]
    assert "tested for fhir-core 0.9.9" in warnings[0]


def test_pinned_version_is_the_locked_one() -> None:
    """The tests above exercise the patched hooks only if the locked fhir_core is the one fastcheck is pinned to."""
    locked = re.search(r"^fhir[_-]core==(\S+)$", (REPO / "constraints.txt").read_text(), re.MULTILINE)
    assert locked is not None
    assert fastcheck.FHIR_CORE_VERSION == locked.group(1) == fastcheck.installed_version()


def test_imports_leave_the_hooks_alone_and_the_ingest_stage_installs(tmp_path: Path) -> None:
    """Importing validate (or the ingest modules) patches nothing; running the ingest stage installs the checks."""
    (tmp_path / "in").mkdir()
    patient = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1990-01-01"}
    (tmp_path / "in" / "Patient.ndjson").write_bytes(orjson.dumps(patient) + b"\n")
    probe = f"""
import sys
import pipelines.fhir.validate, pipelines.fhir.worker, pipelines.fhir.pipeline, pipelines.stages.ingest
import fhir.resources.R4B.patient
import fhir_core.fhirabstractmodel as m
from pipelines.fhir import fastcheck
print(m.FHIRAbstractModel._validate_one_of_many.__module__, fastcheck.is_installed())
from pipelines.config import IngestParams
from pipelines.stages import ingest
ingest.run(IngestParams(workers=1), {str(tmp_path / "in")!r}, {str(tmp_path / "out")!r}, key="k" * 16, progress=False)
print(m.FHIRAbstractModel._validate_one_of_many.__module__, fastcheck.is_installed())
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["fhir_core.fhirabstractmodel", "False", "pipelines.fhir.fastcheck", "True"]


OBSERVATION = {
    "resourceType": "Observation",
    "id": "o-cache",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
    "subject": {"reference": "Patient/p1"},
    "effectivePeriod": {"start": "2023-05-02T10:00:00Z", "end": "2023-05-02T10:05:00Z"},
    "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
}


def _issues(resource: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(i.defect, i.expression, i.diagnostics) for i in SchemaValidator().validate(resource)]


def test_element_cache_keeps_valid_elements_and_never_changes_an_outcome(hooks_restored: None) -> None:
    """Elements seen valid, then in invalid parents, then invalid themselves: the issues are those of a cold cache."""
    assert fastcheck.install()
    broken_parent = {k: v for k, v in copy.deepcopy(OBSERVATION).items() if k != "status"}  # same elements, invalid
    broken_element = copy.deepcopy(OBSERVATION)
    broken_element["code"]["coding"][0]["code"] = 8867  # the cached coding, one value changed: not a hit
    reordered = {k: OBSERVATION[k] for k in reversed(OBSERVATION)}  # other key order: other text, same outcome
    corpus = [OBSERVATION, broken_parent, broken_element, reordered, OBSERVATION, broken_parent, broken_element]
    cold = []
    for resource in corpus:
        fastcheck.clear_element_cache()
        cold.append(_issues(resource))
    fastcheck.clear_element_cache()
    warm = [_issues(resource) for resource in corpus]
    assert warm == cold
    assert cold[0] == cold[3] == [] and cold[1] and cold[2]
    assert cold[1] == [("missing_required_field", "Observation.status", "Observation.status is required but missing")]
    assert cold[2] == [
        (
            INVALID_RESOURCE,
            "Observation.code.coding[0].code",
            "Observation.code.coding[0].code: Input should be a valid string",
        )
    ]
    # The valid elements were kept, the invalid one never was.
    texts = {(cls.__name__, text) for cls, text in fastcheck._ELEMENTS}
    assert ("Reference", b'{"reference":"Patient/p1"}') in texts
    assert any(name == "Coding" and b'"code":"8867-4"' in text for name, text in texts)
    assert not any(b'"code":8867' in text for _, text in texts)


def test_element_cache_is_used_only_by_validate_parsed(hooks_restored: None) -> None:
    """A plain model_validate neither fills nor reads it: the models a caller keeps never share element instances."""
    from fhir.resources.R4B.observation import Observation

    assert fastcheck.install()
    fastcheck.clear_element_cache()
    first = Observation.model_validate(OBSERVATION)
    assert not fastcheck._ELEMENTS
    fastcheck.validate_parsed(Observation, OBSERVATION)
    assert not fastcheck._ELEMENTS  # an element is kept when it comes again
    fastcheck.validate_parsed(Observation, OBSERVATION)
    assert len(fastcheck._ELEMENTS) >= 5
    second = Observation.model_validate(OBSERVATION)
    assert second.subject is not first.subject
    assert all(second.subject is not model for model in fastcheck._ELEMENTS.values())


def test_element_cache_keys_only_json_text_that_names_one_value(hooks_restored: None) -> None:
    """Elements whose text could stand for other values (NaN prints as null, a datetime as its string) are not
    kept; and the cache starts over at its size limit."""
    import datetime

    from fhir.resources.R4B.observation import Observation

    assert fastcheck.install()
    fastcheck.clear_element_cache()
    with_nan = {**OBSERVATION, "valueQuantity": {"value": float("nan"), "unit": "/min"}}
    with_null = {**OBSERVATION, "valueQuantity": {"value": None, "unit": "/min"}}
    for resource in (with_nan, with_null, with_nan):
        with contextlib.suppress(ValidationError):  # whatever the library makes of it; what is kept matters here
            fastcheck.validate_parsed(Observation, resource)
    assert not any(b"null" in text for _, text in fastcheck._ELEMENTS)
    period = {"start": datetime.datetime(2023, 5, 2, 10, tzinfo=datetime.UTC), "end": "2023-05-02T10:05:00Z"}
    fastcheck.clear_element_cache()
    fastcheck.validate_parsed(Observation, {**OBSERVATION, "effectivePeriod": period})
    assert not any(cls.__name__ == "Period" for cls, _ in fastcheck._ELEMENTS)
    assert _issues({**OBSERVATION, "effectivePeriod": period}) == []


def test_element_cache_starts_over_at_its_limit(hooks_restored: None, monkeypatch: pytest.MonkeyPatch) -> None:
    assert fastcheck.install()
    fastcheck.clear_element_cache()
    monkeypatch.setattr(fastcheck, "ELEMENT_CACHE_SIZE", 3)
    for i in range(20):
        assert _issues({**OBSERVATION, "subject": {"reference": f"Patient/p{i}"}}) == []
        assert len(fastcheck._ELEMENTS) <= 3
    assert fastcheck._ELEMENTS
