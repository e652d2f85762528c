"""Shipa's cached element checks validate exactly like the stock fhir.resources, on valid and broken resources.

The stock library runs in a fresh interpreter that never imports ``pipelines.fhir.validate`` (which installs the
checks);
both sides validate the same corpus, and every outcome (valid, or the full list of pydantic errors with their
type, location, message and input) must be identical.
"""

from __future__ import annotations

import copy
import json
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from fhir_core.fhirabstractmodel import FHIRAbstractModel
from fhir_core.types import FhirBase

from pipelines.fhir import fastcheck, validate  # noqa: F401  (importing validate installs the checks)

# Validates every resource of a JSON-lines corpus and prints one outcome per line; used by both sides.
OUTCOMES = r"""
import sys, json
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError
for line in open(sys.argv[1], "rb"):
    obj = json.loads(line)
    try:
        get_fhir_model_class(obj["resourceType"]).model_validate(obj)
        out = "ok"
    except ValidationError as exc:
        out = "invalid " + repr(exc.errors(include_url=False))
    except Exception as exc:
        out = type(exc).__name__ + " " + str(exc)
    print(json.dumps(out))
"""

_MUTATIONS = (
    lambda v: None,
    lambda v: [None],
    lambda v: [v, None],
    lambda v: 123,
    lambda v: True,
    lambda v: "not a code",
    lambda v: "2023-13-45",
    lambda v: {"bogus": 1},
    lambda v: {},
    lambda v: [],
    lambda v: [v],
    lambda v: v[0] if isinstance(v, list) and v else {},
)
_CHOICE_PREFIXES = ("value", "effective", "onset", "deceased", "serviced", "medication", "multipleBirth")


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


def _mutants(resource: dict[str, Any], rng: random.Random, n: int) -> Iterator[dict[str, Any]]:
    """``n`` copies of ``resource``, each broken at one random place (or made to carry two choice values)."""
    paths = list(_paths(resource))
    for _ in range(n if paths else 0):
        copied = copy.deepcopy(resource)
        path = rng.choice(paths)
        parent = copied
        for step in path[:-1]:
            parent = parent[step]
        roll = rng.random()
        if roll < 0.1 and isinstance(parent, dict):
            del parent[path[-1]]  # a required element may go missing
        elif roll < 0.15 and isinstance(parent, dict):
            parent["unknownElement"] = 1
        elif roll < 0.25 and isinstance(parent, dict) and any(k.startswith(_CHOICE_PREFIXES) for k in parent):
            parent["valueString"], parent["valueBoolean"] = "a", True  # two types of one choice element
        else:
            parent[path[-1]] = rng.choice(_MUTATIONS)(parent[path[-1]])
        yield copied


def _nulls_everywhere(resource: dict[str, Any]) -> dict[str, Any]:
    """Every list of the resource gets a null, keys in reverse order: several errors, reported in field order."""
    out = {"resourceType": resource["resourceType"]}
    for key in reversed(resource):
        if key != "resourceType":
            value = resource[key]
            out[key] = [*value, None] if isinstance(value, list) else value
    return out


def _corpus(raw_fhir: Path, synthea: Path, out: Path) -> int:
    rng = random.Random(11)
    resources: list[dict[str, Any]] = []
    for path in sorted(raw_fhir.glob("*.ndjson")):
        with path.open("rb") as fh:
            for line in list(fh)[:40]:
                try:
                    resources.append(orjson.loads(line))
                except orjson.JSONDecodeError:
                    continue
    for path in sorted(synthea.glob("*.json"))[:2]:
        resources += [e["resource"] for e in orjson.loads(path.read_bytes())["entry"][:150]]
    n = 0
    with out.open("wb") as fh:
        for resource in resources:
            for one in (resource, *_mutants(resource, rng, 4), _nulls_everywhere(resource)):
                fh.write(orjson.dumps(one) + b"\n")
                n += 1
    return n


def _patched_outcomes(corpus: Path) -> list[str]:
    scope: dict[str, Any] = {}
    outcomes: list[str] = []
    code = OUTCOMES.replace("print(json.dumps(out))", "outcomes.append(out)")
    scope["outcomes"] = outcomes
    argv = sys.argv
    try:
        sys.argv = ["outcomes", str(corpus)]
        exec(compile(code, "<outcomes>", "exec"), scope)  # the same script as the stock side, in this process
    finally:
        sys.argv = argv
    return outcomes


def test_patched_validation_equals_stock(tiny_cohort: Path, synthea_dir: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.ndjson"
    n = _corpus(tiny_cohort / "data" / "raw" / "fhir", synthea_dir, corpus)
    stock = subprocess.run(
        [sys.executable, "-c", OUTCOMES, str(corpus)], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    expected = [json.loads(line) for line in stock.stdout.splitlines()]
    # This process imported pipelines.fhir.validate, so the checks are installed here.
    assert FHIRAbstractModel._validate_one_of_many is fastcheck.validate_one_of_many
    got = _patched_outcomes(corpus)
    assert len(expected) == len(got) == n
    invalid = sum(o != "ok" for o in expected)
    assert invalid > n // 3, f"the corpus should be mostly broken, {invalid} of {n} invalid"
    assert any("None is not allowed as an element" in o for o in expected)
    assert any("is required" in o for o in expected)
    assert any("but got multiple" in o for o in expected)
    mismatches = [(i, e, g) for i, (e, g) in enumerate(zip(expected, got, strict=True)) if e != g]
    assert not mismatches, f"{len(mismatches)} outcomes differ; first: {str(mismatches[0])[:800]}"


def test_stock_side_does_not_install_the_checks(tmp_path: Path) -> None:
    """The comparison means something only if the stock interpreter really runs the library's own hooks."""
    probe = (
        "import fhir.resources.R4B, fhir_core.fhirabstractmodel as m, sys; "
        "print(m.FHIRAbstractModel._validate_one_of_many.__module__, 'pipelines.fhir.validate' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert done.stdout.split() == ["fhir_core.fhirabstractmodel", "False"]


def test_install_is_idempotent() -> None:
    fastcheck.install()
    fastcheck.install()
    assert FHIRAbstractModel.validate_after_model_construction is fastcheck.validate_after_model_construction
    assert FhirBase.fhir_model_validator.__func__ is fastcheck.fhir_model_validator  # type: ignore[attr-defined]
