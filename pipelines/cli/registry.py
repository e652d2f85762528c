"""Registry commands: ``shipa promote`` (a recorded gate override) and ``shipa reproduce``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from pipelines.cli.common import TrackingUriOpt, guard, print_summary, tracking_uri_of


def promote(
    name: Annotated[str, typer.Argument(help="registered model, e.g. shipa-fraud")],
    version: Annotated[str, typer.Argument(help="the version to make champion")],
    person: Annotated[str, typer.Option("--person", help="who takes responsibility (recorded)")],
    reason: Annotated[str, typer.Option("--reason", help="why the gate is overridden (recorded)")],
    tracking_uri: TrackingUriOpt = None,
) -> None:
    """Make VERSION the champion regardless of the gate, recorded as an override by a named person.

    The person, reason and time go to the version's tags and description and to a gate report artifact.
    """

    def go() -> dict[str, Any]:
        from pipelines.tracking.promotion import override

        return override(name, version, tracking_uri=tracking_uri_of(tracking_uri), person=person, reason=reason)

    print_summary(guard(go))


def reproduce(
    uri: Annotated[str, typer.Argument(help="models:/<name>/<version> or models:/<name>@<alias>")],
    run: Annotated[bool, typer.Option("--run", help="rebuild it now in a scratch git worktree")] = False,
    workdir: Annotated[Path, typer.Option("--workdir", help="where --run puts the worktree")] = Path("reproductions"),
    tracking_uri: TrackingUriOpt = None,
) -> None:
    """Print the git and DVC commands that rebuild a registered model version (with --run, execute them).

    The commit, data hashes and stage come from the version's MLflow lineage tags; --run checks the rebuilt data
    hashes against them and prints the reproduced metrics file.
    """

    def go() -> dict[str, Any]:
        from pipelines.tracking.reproduce import reproduction_plan, run_reproduction

        store = tracking_uri_of(tracking_uri)
        if not run:
            plan = reproduction_plan(uri, tracking_uri=store)
            return {"commands": plan.commands, "commit": plan.commit, "data": plan.data, "notes": plan.notes}
        done = run_reproduction(uri, workdir=workdir, tracking_uri=store)
        return {
            "commands": done.plan.commands,
            "worktree": str(done.worktree),
            "metrics": [str(p) for p in done.metrics_paths],
            "data_mismatches": done.data_mismatches,
            "log": str(done.log_file),
        }

    print_summary(guard(go))


def mount(app: typer.Typer) -> None:
    """Add ``promote`` and ``reproduce`` to ``app``."""
    app.command()(promote)
    app.command()(reproduce)
