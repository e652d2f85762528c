"""The ``shipa`` command tree: every command's help, one spelling per option meaning, deprecated aliases."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
import typer
from typer.testing import CliRunner

from pipelines.cli import app

runner = CliRunner()

# Words that name the same thing in an option: two of them visible in the CLI would be two spellings of one
# meaning. The test walks the whole command tree, so a new command or option needs no change here.
SYNONYMS = {
    "output": "out",
    "output_dir": "out",
    "out_dir": "out",
    "dest": "out",
    "input_dir": "input",
    "in": "input",
    "src": "input",
    "source": "input",
    "config": "params",
    "params_file": "params",
    "db": "database_url",
    "database": "database_url",
    "db_url": "database_url",
    "mlflow_uri": "tracking_uri",
    "mlflow_tracking_uri": "tracking_uri",
    "tracking": "tracking_uri",
    "project": "root",
    "project_root": "root",
    "as_json": "json",
    "json_output": "json",
    "progress_bar": "progress",
    "model_dir": "models",
    "models_dir": "models",
}


def _commands(tree: typer.Typer = app) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every leaf command of the tree as (path, click command), walked from typer's click group."""

    def walk(cmd: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
        subs = getattr(cmd, "commands", None)
        if subs is None:
            yield path, cmd
            return
        for name, sub in sorted(subs.items()):
            yield from walk(sub, (*path, name))

    yield from walk(typer.main.get_command(tree), ())


def _options(tree: typer.Typer = app) -> Iterator[tuple[tuple[str, ...], Any]]:
    for path, cmd in _commands(tree):
        for param in cmd.params:
            if param.param_type_name == "option" and param.name != "help":
                yield path, param


def _meaning(spelling: str) -> str:
    word = spelling.lstrip("-").removeprefix("no-").replace("-", "_")
    return SYNONYMS.get(word, word)


COMMANDS = [path for path, _ in _commands()]


def test_the_tree_has_every_stage_and_group() -> None:
    names = {" ".join(p) for p in COMMANDS}
    for expected in ("synthesize", "ingest", "features", "train", "evaluate", "register", "serve", "fraud worklist",
                     "audit verify", "audit report", "audit trace", "tokens add", "promote", "reproduce"):  # fmt: skip
        assert expected in names
    assert len(COMMANDS) == len(names), "one definition per command"


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) for p in COMMANDS])
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert f"Usage: shipa {' '.join(path)} [OPTIONS]" in result.output


def _doubles(tree: typer.Typer) -> dict[str, dict[str, list[str]]]:
    """Meanings with more than one visible spelling in ``tree``: meaning -> spelling -> commands using it."""
    spellings: dict[str, set[str]] = defaultdict(set)
    where: dict[str, set[str]] = defaultdict(set)
    for path, param in _options(tree):
        if param.hidden:
            continue
        for spelling in (*param.opts, *param.secondary_opts):
            if spelling.startswith("--no-"):
                continue
            spellings[_meaning(spelling)].add(spelling)
            where[spelling].add(" ".join(path))
    return {m: {s: sorted(where[s]) for s in sorted(v)} for m, v in spellings.items() if len(v) > 1}


def test_one_visible_spelling_per_meaning_across_the_cli() -> None:
    doubles = _doubles(app)
    assert not doubles, f"one meaning, several spellings: {doubles}"


def test_a_second_visible_spelling_is_reported_and_a_hidden_one_is_not() -> None:
    tree = typer.Typer()

    @tree.command("make")
    def make(
        out: Annotated[Path, typer.Option("--out")] = Path("a"),
        output: Annotated[Path | None, typer.Option("--output", hidden=True)] = None,
    ) -> None: ...

    @tree.command("write")
    def write(output_dir: Annotated[Path, typer.Option("--output-dir")] = Path("b")) -> None: ...

    assert _doubles(tree) == {"out": {"--out": ["make"], "--output-dir": ["write"]}}


def test_hidden_options_are_deprecated_aliases_of_a_visible_one() -> None:
    hidden = [(path, p) for path, p in _options() if p.hidden]
    assert hidden, "ingest keeps --output for one release"
    for path, param in hidden:
        cmd = dict(_commands())[path]
        visible = {_meaning(s) for q in cmd.params if not getattr(q, "hidden", False) for s in q.opts}
        assert _meaning(param.opts[0]) in visible, f"{' '.join(path)} {param.opts[0]} aliases nothing visible"
        assert "deprecated" in (param.help or "")


def test_the_deprecated_output_alias_still_works_and_says_so(tiny_cohort: Path, tmp_path: Path) -> None:
    raw, out = tiny_cohort / "data" / "raw", tmp_path / "interim"
    result = runner.invoke(
        app, ["ingest", "--input", str(raw), "--output", str(out), "--workers", "1", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert (out / "ingest_report.json").is_file()
    warnings = [line for line in result.stderr.splitlines() if "deprecated" in line]
    assert warnings == ["shipa: warning: --output is deprecated and goes in the next release; use --out"]


def test_giving_both_spellings_is_a_usage_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["ingest", "--input", str(tmp_path), "--out", "a", "--output", "b"])
    assert result.exit_code == 2
    text = " ".join(re.sub("[│╭╮╰╯─]", " ", result.stderr).split())  # typer draws the error in a wrapped box
    assert "give --out only (--output is its deprecated spelling)" in text
