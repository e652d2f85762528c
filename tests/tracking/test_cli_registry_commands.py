"""``shipa promote`` and ``shipa reproduce`` report expected errors in one line, naming the model."""

from __future__ import annotations

from typer.testing import CliRunner

from pipelines.cli import app


def test_reproduce_an_unknown_version_is_named() -> None:
    result = CliRunner().invoke(app, ["reproduce", "models:/shipa-nothing/7"])
    assert result.exit_code == 2
    assert "shipa-nothing" in result.output
    assert "Traceback" not in result.output


def test_promote_needs_a_reason() -> None:
    result = CliRunner().invoke(app, ["promote", "shipa-fraud", "1", "--person", "A. Auditor", "--reason", " "])
    assert result.exit_code == 2
    assert "needs a reason" in result.output
