from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.config import ConfigError, IngestParams, SynthesizeParams, load_section, validate_all

REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def test_repository_params_are_valid() -> None:
    sections = validate_all(REPO_PARAMS)
    assert isinstance(sections["synthesize"], SynthesizeParams)
    assert isinstance(sections["ingest"], IngestParams)


def test_sections_are_frozen() -> None:
    cfg = load_section(SynthesizeParams, "synthesize", REPO_PARAMS)
    with pytest.raises(Exception, match="frozen"):
        cfg.seed = 1  # type: ignore[misc]


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    p = tmp_path / "params.yaml"
    p.write_text("synthesize:\n  n_patient: 10\n")
    with pytest.raises(ConfigError) as err:
        load_section(SynthesizeParams, "synthesize", p)
    assert str(err.value) == f"{p}: unknown key 'synthesize.n_patient'"


def test_mistyped_value_names_nested_key(tmp_path: Path) -> None:
    p = tmp_path / "params.yaml"
    p.write_text("synthesize:\n  fraud:\n    upcoding: lots\n")
    with pytest.raises(ConfigError, match=r"key 'synthesize\.fraud\.upcoding': Input should be a valid number"):
        load_section(SynthesizeParams, "synthesize", p)


def test_unknown_section_and_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "params.yaml"
    p.write_text("synthesise:\n  seed: 1\n")
    with pytest.raises(ConfigError, match="unknown section 'synthesise'"):
        load_section(SynthesizeParams, "synthesize", p)
    with pytest.raises(ConfigError, match="params file not found"):
        load_section(SynthesizeParams, "synthesize", tmp_path / "nope.yaml")


def test_cli_reports_bad_key_in_one_line(tmp_path: Path) -> None:
    p = tmp_path / "params.yaml"
    p.write_text("synthesize:\n  n_patients: -3\n")
    result = CliRunner().invoke(app, ["synthesize", "--params", str(p), "--out", str(tmp_path / "raw")])
    assert result.exit_code == 2
    assert "key 'synthesize.n_patients': Input should be greater than or equal to 1" in result.output
    assert "Traceback" not in result.output


def test_cli_help_lists_every_stage() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for stage in ("synthesize", "ingest"):
        assert stage in result.output


def test_strict_lists_findings_of_the_defect_vocabulary() -> None:
    # config may not import pipelines.fhir (layers), so its Literal is checked against the vocabulary here.
    from typing import get_args

    from pipelines.config import StrictFinding
    from pipelines.fhir import defects

    codes = {v for k, v in vars(defects).items() if k.isupper() and isinstance(v, str)}
    assert set(get_args(StrictFinding)) <= codes
    assert {defects.DANGLING_REFERENCE, defects.IMPLAUSIBLE_DATE, defects.UNMAPPED_CODE} <= set(get_args(StrictFinding))
